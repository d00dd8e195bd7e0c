"""The whole analysis of a study, and its Markdown report.

`analyze` runs every fit, interval and correlation on a loaded frame (the benchmark times it); `write_report`
renders an `Analysis` as report.md plus figures; `run` does load + analyze + write for the CLI;
`summarize` is the short table the study command prints (no bootstrap, so it is quick).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import choice as choice_
from analysis import forecast as forecast_
from analysis.allocation import allocation_table, allocation_verdict, flops_to_match, optimal_share, share_comparisons
from analysis.collect import StudyDataError, check_complete, final_records, load_study, one_benchmark
from analysis.correlate import CANDIDATES, interval, rank_metrics, verdict
from analysis.fits import MIN_DISTINCT, FitError, curve_fits, diagnose, fit_ld, fit_loss_vs_compute, fit_table
from analysis.replicates import Replicates, interval_text, replicate_means, setting_names, tuned_comparison
from analysis.resample import one_blas_thread
from analysis.words import column_name
from salt.io import atomic_write_text
from salt.layout import ALL_BENCHMARKS

DEFAULT_TARGET = "probe.linear.time.motion.10"   # the headline on the embedded moving-digits data
EVALUATION_PREFERENCE = ("systematic", "fast")
SELECTION = "teacher_selection"   # a study kind (study.json "study") with its own report: the teacher-selection answer
RANKING_CSV, R2_CSV = "teacher_selection.csv", "within_teacher_r2.csv"   # beside report.md


def study_kind(frame: pd.DataFrame) -> str:
    """The study's kind (its study.json name) when every folder is of one kind, else "" (the full report)."""
    kinds = frame["study"].astype(str).unique() if "study" in frame else []
    return str(kinds[0]) if len(kinds) == 1 else ""


def probe_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("probe.") and "#" not in c)


def choose_target(frame: pd.DataFrame, target: str | None = None) -> str:
    """The accuracy column to analyse: `target` if given, else DEFAULT_TARGET, else the first attentive
    probe column; an error lists the probe columns there are."""
    available = [c for c in probe_columns(frame) if frame[c].notna().any()]
    if target is not None:
        if target not in available:
            raise StudyDataError(f"target column {target!r} has no values; probe columns with values: "
                                 f"{', '.join(available) or 'none'}")
        return target
    if DEFAULT_TARGET in available:
        return DEFAULT_TARGET
    attentive = [c for c in available if c.startswith("probe.attentive.")]
    if attentive:
        return attentive[0]
    raise StudyDataError(f"no {DEFAULT_TARGET} and no probe.attentive.* column; pass a target. Probe columns "
                         f"with values: {', '.join(available) or 'none'}")


def choose_evaluation(frame: pd.DataFrame, evaluation: str | None = None) -> str:
    """`evaluation` if given, else the one that covers the most runs (ties: systematic, fast, then by name)."""
    runs = frame.groupby("evaluation")["run_key"].nunique()
    if evaluation is not None:
        if evaluation not in runs:
            raise StudyDataError(f"no records of evaluation {evaluation!r}; there are: {', '.join(runs.index)}")
        return evaluation
    order = sorted(runs.index, key=lambda e: (-runs[e], EVALUATION_PREFERENCE.index(e)
                                              if e in EVALUATION_PREFERENCE else len(EVALUATION_PREFERENCE), e))
    return order[0]


@dataclass
class Analysis:
    """Everything the report and figures show, computed once."""
    target: str
    evaluation: str
    frame: pd.DataFrame                     # every checkpoint of the chosen evaluation (and benchmark)
    final: pd.DataFrame                     # last checkpoint per run, with compute > 0 and the target
    baselines: pd.DataFrame                 # zero-compute references (random init, raw pixels)
    curves: dict = field(default_factory=dict)        # group -> PowerLawFit | FitError (error vs FLOPs)
    loss_curves: dict = field(default_factory=dict)   # group -> fit of losses.heldout vs FLOPs
    ld: dict = field(default_factory=dict)            # group -> L(N, D) fit where sizes vary
    holdout: pd.DataFrame = field(default_factory=pd.DataFrame)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    shares: pd.DataFrame = field(default_factory=pd.DataFrame)
    match: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_boot: int = 0
    notes: list[str] = field(default_factory=list)
    kind: str = ""                          # study_kind: SELECTION computes and reports the selection only
    replicates: Replicates | None = None    # setting means over seeds with intervals (analysis.replicates)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)   # allocation.share_comparisons
    verdict: list[str] = field(default_factory=list)                  # allocation.allocation_verdict, in words
    diagnostics: dict = field(default_factory=dict)   # group -> FitDiagnostics of its error-vs-FLOPs fit
    benchmark: str = "default"              # the records' benchmark analysed (analysis.collect.one_benchmark)
    forecast: forecast_.Forecast | None = None   # at forecast_budget, both predictors (analysis.forecast)
    forecast_budget: float | int = math.nan
    rollout: pd.DataFrame = field(default_factory=pd.DataFrame)   # forecast_.rollout: largest budget held out
    choices: dict = field(default_factory=dict)   # criterion -> choice_.Choice (checkpoints chosen by a loss)


def _try(fit, *args, **kwargs):
    try:
        return fit(*args, **kwargs)
    except FitError as e:
        return e


def _costs(final: pd.DataFrame) -> pd.DataFrame:
    """Runs, FLOPs and hours spent per curve (each run's own training; NaN where no run reported it)."""
    def total(column):
        return (column, lambda v: v.sum(min_count=1))
    return (final.groupby("group").agg(runs=("run_key", "nunique"), flops=total("flops_run"),
                                       train_hours=total("train_hours"), gpu_hours=total("gpu_hours"),
                                       cpu_hours=total("cpu_hours")).reset_index())


def select(frame: pd.DataFrame, target: str | None = None, evaluation: str | None = None,
           benchmark: str | None = None) -> tuple[str, str, str, pd.DataFrame]:
    """The rows an analysis reads: one benchmark (collect.one_benchmark), one evaluation (choose_evaluation), and
    the target (choose_target). -> (benchmark, evaluation, target, rows)."""
    if frame.empty:
        raise StudyDataError("no records to analyse")
    benchmark, frame = one_benchmark(frame, benchmark)
    evaluation = choose_evaluation(frame, evaluation)
    frame = frame[frame["evaluation"] == evaluation].reset_index(drop=True)
    return benchmark, evaluation, choose_target(frame, target), frame


def analyze(frame: pd.DataFrame, target: str | None = None, *, evaluation: str | None = None,
            n_boot: int = 1000, seed: int = 0, benchmark: str | None = None) -> Analysis:
    """Fits with bootstrap intervals, allocation, FLOPs to match V-JEPA, teacher-selection metrics; for a
    teacher-selection study (study_kind SELECTION) the teacher-selection metrics only."""
    benchmark, evaluation, target, frame = select(frame, target, evaluation, benchmark)
    last = final_records(frame)
    last = last[last[target].notna()]
    final, baselines = last[last["flops_total"] > 0], last[last["flops_total"] <= 0]
    out = Analysis(target, evaluation, frame, final.reset_index(drop=True), baselines.reset_index(drop=True),
                   n_boot=n_boot, kind=study_kind(frame), benchmark=benchmark)
    out.choices = checkpoint_choices(frame, target, n_boot=n_boot, seed=seed)
    if out.kind == SELECTION:   # one question: which metric predicts the student; no compute curves to fit
        with one_blas_thread():
            out.selection = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
        out.costs = _costs(final)
        return out
    with one_blas_thread():
        out.curves = curve_fits(final, target, n_boot=n_boot, seed=seed)
        out.loss_curves = {g: _try(fit_loss_vs_compute, rows, n_boot=n_boot, seed=seed)
                           for g, rows in final.groupby("group")}
        for group, rows in frame[frame["flops_total"] > 0].groupby("group"):
            sizes = rows["params.encoder"].nunique() if "params.encoder" in rows else 0
            out.ld[group] = (_try(fit_ld, rows, target, "params.encoder", "checkpoint_step", n_boot=n_boot, seed=seed)
                             if sizes >= MIN_DISTINCT
                             else FitError(f"{sizes} encoder size(s): L(N, D) needs {MIN_DISTINCT} or more"))
        out.replicates = replicate_means(final, target, n_boot=n_boot, seed=seed)
        out.comparisons = share_comparisons(out.replicates)
        out.verdict = study_verdict(out.kind, out.replicates)
        out.diagnostics = {g: diagnose(out.curves[g], rows, target, curve=g, seed_sd=out.replicates.pooled_sd,
                                       setting_of=dict(zip(rows["run_key"], setting_names(rows))))
                           for g, rows in final.groupby("group")}
        out.holdout = pd.DataFrame([{"group": g, **d.holdout} for g, d in out.diagnostics.items()])
        out.table = allocation_table(frame[frame["flops_total"] > 0], target, out.replicates)
        out.shares = optimal_share(final, target, n_boot=n_boot, seed=seed)
        out.match = flops_to_match(final, target, out.curves)
        out.selection = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
    if len(final):
        boot = min(n_boot, forecast_.REPORT_BOOT)
        out.forecast_budget = forecast_.as_budget(FORECAST_FACTOR * float(final["budget"].max()))
        out.forecast = forecast_.forecast(frame, target, out.forecast_budget, n_boot=boot, seed=seed)
        out.rollout = forecast_.rollout(frame, target, n_boot=boot, seed=seed)
    out.costs = _costs(final)
    return out


FORECAST_FACTOR = 2.0   # the report forecasts every curve at this multiple of the study's largest budget


def checkpoint_choices(frame: pd.DataFrame, target: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Checkpoint choice by each loss of choice_.CRITERIA that the records hold (criterion -> Choice)."""
    return {by: choice_.choose(frame, target, by, n_boot=n_boot, seed=seed)
            for by, column in choice_.CRITERIA.items() if column in frame and frame[column].notna().any()}


# Study kinds (study.json "study") whose question is a tuned comparison of one factor (analysis.replicates):
# kind -> (factor, tuning). Other kinds get the compute-allocation verdict.
TUNED = {"teacher_masks": ("teacher_mask", "teacher_lr")}


def study_verdict(kind: str, rep: Replicates) -> list[str]:
    """The study's answer in words: a tuned comparison for the kinds in TUNED, else the allocation verdict."""
    if kind in TUNED:
        return tuned_comparison(rep, *TUNED[kind])
    return allocation_verdict(rep)


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """allocation_table as budget x curve cells "accuracy [95% interval] @ FLOPs" (curve: group, with share when
    set; the interval over seeds, absent with one seed per setting)."""
    t = table.copy()
    share = pd.to_numeric(t["teacher_share"], errors="coerce") if "teacher_share" in t else pd.Series(np.nan, t.index)
    t["curve"] = np.where(share.notna(), t["group"] + " share=" + share.map("{:.3g}".format), t["group"])
    for key, label in (("teacher_mask", "mask"), ("teacher_lr", "lr")):   # the teacher-mask study's settings
        if key in t and t[key].nunique() > 1:
            t["curve"] = t["curve"] + np.where(t[key].notna(), f" {label}=" + t[key].astype(str), "")
    t["cell"] = [f"{interval_text(a, lo, hi)} @ {f:.3g}" + (" *" if best and s == s else "")
                 for a, lo, hi, f, best, s in zip(t["accuracy"], t["lo"], t["hi"], t["flops_total"], t["best_share"],
                                                  share)]
    pivot = t.pivot_table(index="budget", columns="curve", values="cell", aggfunc="first").fillna("")
    pivot.columns.name = None
    return pivot.reset_index()


def summarize(study_dir, target: str | None = None, *, evaluation: str | None = None,
              allow_partial: bool = False, n_boot: int = 1000, seed: int = 0, benchmark: str | None = None) -> str:
    """The study's summary as printable text. Teacher selection: the verdict and the ranking (Spearman with
    its interval, permutation p, LOTO skill; `n_boot` resamples and permutations). Otherwise: accuracy @ total
    FLOPs per budget and curve (mean over seeds; * marks the best teacher share of a budget), no bootstrap."""
    _, evaluation, target, frame = select(load_study(study_dir, allow_partial=allow_partial), target, evaluation,
                                          benchmark)
    if study_kind(frame) == SELECTION:
        with one_blas_thread():
            result = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
        return "\n\n".join([f"Teacher selection: which label-free metric predicts {target} ({evaluation})?",
                             verdict_text(verdict(result), target, markdown=False),
                             ranking_table(result["ranking"]).to_string(index=False)])
    frame = frame[frame["flops_total"] > 0]
    final = final_records(frame)
    rep = replicate_means(final[final[target].notna()], target, n_boot=n_boot, seed=seed)
    table = summary_table(allocation_table(frame, target, rep))
    kind = study_kind(frame)
    header = (f"{column_name(target)} = {target} ({evaluation}): mean over seeds [95% interval] @ total FLOPs"
              + ("" if kind in TUNED else "; * best teacher share in the budget"))
    return "\n\n".join([header + "\n" + table.to_string(index=False), "\n".join(study_verdict(kind, rep)),
                         "What this study can show:\n" + "\n".join(f"- {line}" for line in scope_lines(final, rep, kind))])


def predict_text(study_dirs, budgets, *, target: str | None = None, evaluation: str | None = None,
                 benchmark: str | None = None, allow_partial: bool = False, n_boot: int = forecast_.N_BOOT,
                 seed: int = 0) -> str:
    """`--predict`: each curve's forecast at each budget (both predictors, prediction intervals), the rollout,
    and the fits' parameters unrounded, as printable text."""
    _, evaluation, target, frame = select(load_study(study_dirs, allow_partial=allow_partial), target, evaluation,
                                          benchmark)
    level = f"{forecast_.LEVEL:.0%}"
    parts = []
    for budget in budgets:
        f = forecast_.forecast(frame, target, budget, n_boot=n_boot, seed=seed)
        columns = [c for c in FORECAST_COLUMNS if c not in ("reason",)]
        parts.append(f"Forecast of one new run's {target} ({evaluation}) at budget {budget:g}: predicted [{level} "
                     "prediction interval], fit_lo/fit_hi: the fit's own interval\n"
                     + _with_extrapolation(f.table)[columns].to_string(index=False))
        notes = f.table[f.table["reason"].astype(str) != ""][["curve", "predictor", "reason"]]
        if len(notes):
            parts.append("Notes:\n" + "\n".join(f"- {r.curve} ({r.predictor}): {r.reason}" for r in notes.itertuples()))
    parts.append("Parameters (unrounded; converged: the optimiser's verdict):\n"
                 + _unrounded(f.params).to_string(index=False) if len(f.params) else "No curve could be fitted.")
    uneven = f.residuals[f.residuals["uneven"]] if len(f.residuals) else f.residuals
    if len(uneven):
        parts.append("Residual spread changes with the budget (Spearman p < "
                     f"{forecast_.RESIDUAL_P:g}): " + "; ".join(f"{r.curve} {r.predictor} {r.stage} (rho "
                                                                f"{r.spread_rho:+.2f})" for r in uneven.itertuples()))
    rollout = forecast_.rollout(frame, target, n_boot=n_boot, seed=seed)
    parts.append("Rollout (each curve refitted without its largest budget, which is then predicted):\n"
                 + "\n".join(rollout_text(rollout))
                 + ("\n" + rollout[[c for c in ROLLOUT_COLUMNS if c != "reason"]].to_string(index=False)
                    if len(rollout) else ""))
    return "\n\n".join(parts)


def choose_text(study_dirs, by: str = "train_loss", *, target: str | None = None, evaluation: str | None = None,
                benchmark: str | None = None, allow_partial: bool = False, n_boot: int = 1000, seed: int = 0) -> str:
    """`--choose-by`: the checkpoint each run's loss picks against the probe's, the run each recipe's loss picks,
    and the verdict, as printable text."""
    _, evaluation, target, frame = select(load_study(study_dirs, allow_partial=allow_partial), target, evaluation,
                                          benchmark)
    c = choice_.choose(frame, target, by, n_boot=n_boot, seed=seed)
    runs = c.runs[["run_id", "n_checkpoints", "chosen_step", "chosen_accuracy", "best_step", "best_accuracy",
                   "last_step", "regret", "regret_last", "agreement"]]
    return "\n\n".join([f"Checkpoint choice by {c.loss} against the probe's ({target}, {evaluation}):",
                         "\n".join(choice_.choice_text(c)),
                         "Per run (chosen_step: lowest loss; best_step: the probe's):\n"
                         + (runs.to_string(index=False) if len(runs) else "(no run with 2+ evaluated checkpoints)"),
                         "Per recipe (final checkpoints of a curve's runs at one budget):\n"
                         + (c.recipes.to_string(index=False) if len(c.recipes) else "(no recipe with 2+ runs)")])


def scope_lines(final: pd.DataFrame, rep: Replicates, kind: str = "") -> list[str]:
    """What a study's data can and cannot show, from its design: seeds per setting, and (allocation studies)
    budgets."""
    seeds = rep.settings["n_seeds"]
    lines = [f"{int(seeds.min())}{'-' + str(int(seeds.max())) if seeds.max() > seeds.min() else ''} seed(s) per "
             f"setting, {len(rep.settings)} settings: " + (
                 f"a run's accuracy moves by sd {rep.pooled_sd:.3f} from seed to seed ({rep.df} degrees of freedom "
                 f"pooled over settings), so differences much below {2 * rep.pooled_sd:.3f} cannot be told apart."
                 if rep.df else "one seed per setting: no intervals, and no difference can be told from seed noise "
                 "(run the study with --seeds 2 or more).")]
    lines += rep.notes
    if kind in TUNED:
        return lines
    budgets = final[final["group"] == "salt"]["budget"].nunique() if "group" in final else 0
    lines.append(f"{budgets} budget(s): " + (
        "accuracy-vs-compute curves can be fitted (report.md: fits with their diagnostics; a fit is drawn only where "
        "they say the data identify it)." if budgets >= MIN_DISTINCT else
        f"an accuracy-vs-compute curve needs {MIN_DISTINCT} or more, so the study compares settings but cannot say "
        "how accuracy scales with compute (SALT's curve pools its shares, so report.md may still fit one across "
        "them; its diagnostics say whether to trust it)."))
    return lines


# ---------------------------------------------------------------------------------------------------------
# Markdown

def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.3e}" if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A DataFrame as a Markdown table (numbers to 4 significant digits, NaN as n/a)."""
    if frame is None or frame.empty:
        return "_(none)_"
    columns = [c for c in (columns or list(frame.columns)) if c in frame]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame[columns].itertuples(index=False)]
    return "\n".join(lines)


def _fits_table(fits: dict) -> str:
    return markdown_table(fit_table(fits), ["curve", "param", "estimate", "lo", "hi", "n_points", "n_boot", "converged",
                                             "reason"])


def _match_text(m: dict) -> str:
    if "reference_accuracy" not in m:
        return f"Not computed: {m.get('reason', '')}."
    lines = [f"- {m['reference']}'s best accuracy: {m['reference_accuracy']:.4f} at {m['reference_flops']:.3e} FLOPs.",
             f"- Raw configurations: {m['candidate']} reaches it with {_cell(m['raw_flops'])} FLOPs "
             f"(savings x{_cell(m['raw_savings'])})."]
    if "fit_flops" in m:
        lines.append(f"- Fitted {m['candidate']} curve: {_cell(m['fit_flops'])} FLOPs (95% CI "
                     f"{_cell(m.get('fit_flops_lo'))} to {_cell(m.get('fit_flops_hi'))}; savings x{_cell(m['fit_savings'])}).")
    if m.get("reason"):
        lines.append(f"- Note: {m['reason']}.")
    return "\n".join(lines)


def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else "[n/a]"


def ranking_table(ranking: pd.DataFrame) -> pd.DataFrame:
    """The compact ranking: metric, n, Spearman [95% CI], permutation p, LOTO skill, and why a number is
    missing (the full table is RANKING_CSV)."""
    rows = []
    for _, r in ranking.iterrows():
        ok = r["status"] == "ok"
        rank = "" if pd.isna(r["rank"]) else str(int(r["rank"]))
        rows.append({"rank": rank, "metric": r["metric"], "n": int(r["n"]),
                     "Spearman [95% CI]": f"{r['spearman']:+.2f} {_ci(*interval(r))}" if ok else "n/a",
                     "permutation p": f"{r['spearman_p']:.2g}" if ok and np.isfinite(r["spearman_p"]) else "n/a",
                     "LOTO skill": f"{r['loto_skill']:+.2f}" if np.isfinite(r["loto_skill"]) else "n/a",
                     "note": r["reason"] if not ok else (r.get("loto_reason") or "")})
    return pd.DataFrame(rows)


def _named(metric: str, markdown: bool) -> str:
    return f"`{metric}`" if markdown else metric


def verdict_text(v: dict, target: str, markdown: bool = True) -> str:
    """The verdict of `analysis.correlate.verdict` in words: which metric ranks first, whether its interval
    excludes zero and the runner-up's, its LOTO skill, and the within-teacher R^2 of the student's loss."""
    name = lambda m: _named(m, markdown)   # noqa: E731
    if v["top"] is None:
        lines = ["No metric could be ranked: none has enough students with both the metric and the target "
                 "(see the notes of the table)."]
    else:
        has_interval = bool(np.isfinite(v["lo"]) and np.isfinite(v["hi"]))
        lines = [f"{name(v['top'])} ranks first of {v['n_ranked']} metric(s): Spearman {v['spearman']:+.2f} "
                 f"{_ci(v['lo'], v['hi'])} with {name(target)} over {v['n']} final students (permutation "
                 f"p = {v['p']:.2g}); " + (
                     "no interval was computed (no bootstrap resamples)." if not has_interval else
                     "the 95% interval excludes zero and the permutation test agrees." if v["significant"] else
                     f"the 95% interval excludes zero but the permutation test does not (p >= 0.05): with "
                     f"{v['n']} students the interval is too narrow to trust, and the study cannot tell whether "
                     "it predicts accuracy." if v["excludes_zero"] else
                     f"the 95% interval includes zero: with {v['n']} students the study cannot tell whether it "
                     "predicts accuracy.")]
        if "runner_up" in v and has_interval:
            runner = f"{name(v['runner_up'])}, {v['runner_spearman']:+.2f} {_ci(v['runner_lo'], v['runner_hi'])}"
            lines.append(f"Its |rho| interval lies above the runner-up's ({runner}): it ranks first beyond the "
                         "resampling noise." if v["separated"] else
                         f"Its interval overlaps the runner-up's ({runner}): the study does not separate the two.")
        lines.append(f"Leave-one-teacher-out skill {v['loto_skill']:+.2f} (> 0: predicting each teacher's students "
                     "from the other teachers beats their mean)." if np.isfinite(v["loto_skill"]) else
                     f"Leave-one-teacher-out: not computed ({v['loto_reason'] or 'no value'}).")
    if v["r2_teachers"]:
        lines.append(f"Within a teacher (the paper's figure), {name(v['r2_metric'])} explains R^2 = "
                     f"{v['r2_median']:.2f} of the accuracy along the student's training (median over "
                     f"{v['r2_teachers']} of {v['r2_of']} teachers; range {v['r2_min']:.2f}-{v['r2_max']:.2f}; "
                     f"lower loss went with higher accuracy for {v['r2_negative']} of them).")
    else:
        lines.append(f"Within-teacher R^2 of {name(v['r2_metric'])}: not computed (fewer than 4 evaluated student "
                     "checkpoints per teacher, or no values).")
    return " ".join(lines)


def _replicates_text(rep: Replicates | None) -> str:
    if rep is None or not rep.df:
        return ("One seed per setting: no intervals, so no two settings can be told apart from seed noise (run the "
                "study with --seeds 2 or more).")
    return (f"Intervals: 95% bootstrap over runs (seeds nested in settings; run deviations pooled over settings, "
            f"{rep.df} degrees of freedom, t-scaled: analysis/replicates.py). Seed-to-seed sd of one run's accuracy: "
            f"{rep.pooled_sd:.4f}. Two settings are distinguishable when the interval of their difference excludes "
            "zero." + "".join(f" Note: {n}." for n in rep.notes))


def _diagnostics_table(diagnostics: dict) -> pd.DataFrame:
    rows = []
    for group, d in diagnostics.items():
        gain, lo, hi = d.gain
        rows.append({"curve": group, "identified": d.identified, "gain [95% CI]": interval_text(gain, lo, hi, signed=True)
                     if np.isfinite(gain) else "n/a", "band half-width": d.band_halfwidth, "seed sd": d.seed_sd,
                     "residual sd": d.residual_sd, "holdout bias": d.holdout.get("bias", math.nan),
                     "max drop-one shift": d.max_shift, "why not identified": d.reason, "notes": "; ".join(d.notes)})
    return pd.DataFrame(rows)


def _influence_table(diagnostics: dict, limit: int = 10) -> pd.DataFrame:
    """Per curve, the settings with the largest drop-one shifts (at most `limit` each)."""
    parts = []
    for group, d in diagnostics.items():
        if len(d.influence):
            top = d.influence.reindex(d.influence["shift"].abs().sort_values(ascending=False).index).head(limit)
            parts.append(top.assign(curve=group)[["curve", "setting", "runs", "shift", "gain_without", "c_without"]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


FORECAST_COLUMNS = ["curve", "predictor", "budget", "flops", "predicted", "lo", "hi", "fit_lo", "fit_hi", "noise_sd",
                    "extrapolation", "loss", "converged", "residuals_uneven", "reason"]
ROLLOUT_COLUMNS = ["curve", "predictor", "budget", "largest_fitted", "n_heldout", "observed", "predicted", "lo", "hi",
                   "error", "relative_error", "coverage", "fit_covers_mean", "converged", "reason"]
FORECAST_CSV, ROLLOUT_CSV, PARAMS_CSV, CHOICE_CSV = ("forecast.csv", "rollout.csv", "forecast_params.csv",
                                                     "checkpoint_choice.csv")   # beside report.md


def _unrounded(frame: pd.DataFrame, column: str = "estimate") -> pd.DataFrame:
    """`column` as the shortest text that reads back to the same float (no rounding)."""
    return frame.assign(**{column: [repr(float(v)) for v in frame[column]]}) if len(frame) else frame


def _with_extrapolation(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(extrapolation=table["budget"] / table["largest_fitted"]) if len(table) else table


def rollout_text(rollout: pd.DataFrame) -> list[str]:
    """Per predictor: how the rollout went, in one sentence."""
    lines = []
    for _, r in forecast_.rollout_summary(rollout).iterrows():
        lines.append(f"{r['predictor']}: over {int(r['curves'])} curve(s), the largest budget predicted from the "
                     f"smaller ones is off by {r['mean_error']:+.4f} on average (mean |error| "
                     f"{r['mean_abs_error']:.4f}); "
                     f"{r['coverage']:.0%} of its runs fell inside the {forecast_.LEVEL:.0%} prediction interval.")
    return lines or ["No curve has the 4+ budgets a rollout needs (3 to fit, 1 to predict)."]


def forecast_sections(a: Analysis) -> list[str]:
    """The forecast at FORECAST_FACTOR x the largest budget, the rollout, unrounded parameters and residuals."""
    if a.forecast is None:
        return []
    f = a.forecast
    level = f"{forecast_.LEVEL:.0%}"
    return [
        f"### Forecast at budget {a.forecast_budget:g} ({FORECAST_FACTOR:g} x the largest)\nOne new run's accuracy per "
        f"curve: `direct` (error = E + k C^-c on the final runs), `two_step` (loss = E + k C^-c, then accuracy = a + b "
        f"loss through every evaluated checkpoint). lo, hi: {level} prediction interval (fit uncertainty plus seed "
        f"noise); fit_lo, fit_hi: the fit's alone; noise_sd: one run's spread around the curve; extrapolation: "
        "budget / the largest fitted. `python -m analysis STUDY --predict BUDGET` forecasts any budget. Full precision: "
        f"`{FORECAST_CSV}`.\n" + markdown_table(_with_extrapolation(f.table), FORECAST_COLUMNS),
        "### Rollout: each curve refitted without its largest budget, which is then predicted\n"
        + "\n".join(f"- {line}" for line in rollout_text(a.rollout)) + "\n\n"
        + "error: predicted - observed mean (signed); coverage: held-out runs inside the prediction interval; "
        f"fit_covers_mean: the observed mean inside the fit's own interval (`{ROLLOUT_CSV}`).\n"
        + markdown_table(a.rollout, ROLLOUT_COLUMNS),
        "### Forecast fits: parameters (unrounded) and convergence\nconverged: L-BFGS-B's own verdict on the full "
        f"data; boot_converged: the fraction of resamples it converged on (`{PARAMS_CSV}`).\n"
        + markdown_table(_unrounded(f.params), ["curve", "predictor", "stage", "param", "estimate", "converged",
                                                 "boot_converged"]),
        "### Forecast fits: residual spread against budget\nspread_rho, spread_p: Spearman of |residual| with the "
        "budget; spread_ratio: rms residual at the upper half of the budgets / the lower half; uneven: p < "
        f"{forecast_.RESIDUAL_P:g} (the interval assumes one spread: read it with care).\n"
        + markdown_table(f.residuals, ["curve", "predictor", "stage", "n", "rms", "spread_rho", "spread_p",
                                       "spread_ratio", "uneven"]),
    ]


def choice_sections(choices: dict) -> list[str]:
    """Checkpoint choice without probes: per criterion, the verdicts and the per-recipe table."""
    if not choices:
        return ["## Checkpoint choice without probes\nNo record holds a training or held-out loss."]
    out = []
    for by, c in choices.items():
        worst = c.runs.sort_values("regret", ascending=False).head(10)
        out.append(f"## Checkpoint choice without probes: by `{c.loss}` (`--choose-by {by}`)\n"
                   + "\n".join(f"- {line}" for line in choice_.choice_text(c)) + "\n\n"
                   f"Runs with the largest regret (all runs: `{CHOICE_CSV}`):\n"
                   + markdown_table(worst, ["run_id", "n_checkpoints", "chosen_step", "chosen_accuracy", "best_step",
                                            "best_accuracy", "last_step", "regret", "regret_last", "agreement"])
                   + "\n\nRuns of one recipe (curve x budget) ranked by their final checkpoints' loss:\n"
                   + markdown_table(c.recipes))
    return out


def _figures_section(figures: list[Path], left_out: dict[str, str]) -> list[str]:
    if not figures and not left_out:
        return []
    lines = [f"![{p.stem}](figures/{p.name})" for p in figures]
    lines += [f"- `{name}` left out: {why}." for name, why in left_out.items()]
    return ["## Figures\n" + "\n".join(lines)]


def render_selection(a: Analysis, study_dirs: list[str], completeness: list[str], figures: list[Path],
                     left_out: dict[str, str] | None = None) -> str:
    """report.md of a teacher-selection study: the verdict, the compact ranking, per-teacher R^2, figures."""
    sel = a.selection
    r2 = sel["r2"]
    v = verdict(sel)
    r2 = r2[r2["metric"] == v["r2_metric"]]
    teachers = sel["selection"].drop_duplicates("teacher")
    sections = [
        "# Teacher selection: which label-free metric predicts the student's accuracy?",
        "**Verdict.** " + verdict_text(v, a.target),
        f"## Ranking\nBy |Spearman| over the final students ({len(final_records(sel['selection']))} students of "
        f"{teachers['teacher_key'].nunique()} teacher runs, {len(teachers)} teacher checkpoints); 95% bootstrap "
        f"intervals (BCa, {a.n_boot} resamples); permutation p-values; LOTO = leave-one-teacher-out linear "
        f"prediction (skill > 0: better than the other teachers' mean). Full table (Kendall, Pearson, both interval "
        f"kinds, LOTO RMSE): `{RANKING_CSV}`; per-teacher R^2 of every metric: `{R2_CSV}`.\n"
        + markdown_table(ranking_table(sel["ranking"])),
        f"## Within-teacher R^2 of `{v['r2_metric']}` vs accuracy\nA least-squares line through every evaluated "
        "checkpoint of one teacher checkpoint's student.\n"
        + markdown_table(r2, ["teacher_name", "n", "r2", "slope", "reason", "teacher"]),
        "## Data\n" + f"Study folder(s): {', '.join(study_dirs)}  \nTarget: `{a.target}` (evaluation "
        f"`{a.evaluation}`). Benchmark: `{a.benchmark}`. Candidates: " + ", ".join(f"`{m}` ({src}'s `{col or 'target'}`)"
                                                      for m, (src, col) in CANDIDATES.items()) + ".",
        "\n".join(f"- {line}" for line in completeness),
        "## Cost per curve\n" + markdown_table(a.costs),
    ]
    sections += choice_sections(a.choices)
    sections += _figures_section(figures, left_out or {})
    return "\n\n".join(sections) + "\n"


def render(a: Analysis, study_dirs: list[str], completeness: list[str], figures: list[Path],
           left_out: dict[str, str] | None = None) -> str:
    """report.md for an Analysis (a teacher-selection study gets its own: render_selection)."""
    if a.kind == SELECTION:
        return render_selection(a, study_dirs, completeness, figures, left_out)
    counts = a.final.groupby(["group", "role"]).size().rename("runs").reset_index()
    sections = [
        f"# Study analysis: {', '.join(sorted(a.frame['study'].astype(str).unique()))}",
        f"Study folder(s): {', '.join(study_dirs)}  \nTarget: `{a.target}` (evaluation `{a.evaluation}`), "
        f"error = 1 - target; benchmark `{a.benchmark}`. Bootstrap: {a.n_boot} resamples of runs; intervals are 95%.",
        "\n".join(f"- {line}" for line in completeness),
        "## Runs analysed\n" + markdown_table(counts),
    ]
    if not a.baselines.empty:
        sections.append("Zero-compute references: " + ", ".join(
            f"{r.run_id} {r[a.target]:.4f}" for _, r in a.baselines.iterrows()))
    sections += [
        f"## Summary: {column_name(a.target)} @ total FLOPs (mean over seeds [95% interval]; * best teacher share)\n"
        + markdown_table(summary_table(a.table)),
        "## Verdict: which settings can be told apart\n" + _replicates_text(a.replicates) + "\n\n"
        + "\n".join(f"- {line}" for line in a.verdict) + "\n\n"
        + markdown_table(a.comparisons),
        "## Accuracy vs compute: error = E + k * C^-c per curve\n" + _fits_table(a.curves),
        "### Fit diagnostics: is each curve identified by its data?\nGain: the fitted accuracy gain over the "
        "observed compute range [95% interval]; band: half-width of the fit's 95% band at the largest compute, next "
        "to the seed spread (sd of one run's accuracy) and the residual sd; holdout: the largest budget predicted "
        "from the others (predicted - observed, 4+ budgets; the extrapolation table below has its interval); drop-one: the largest shift of the prediction at the "
        "largest compute when one setting (all its seeds) is left out. Figures draw identified fits only.\n"
        + markdown_table(_diagnostics_table(a.diagnostics)),
        "Drop-one influence of each setting (shift of the predicted accuracy at the largest compute, the fitted gain "
        "over the compute range and c, refitted without it):\n" + markdown_table(_influence_table(a.diagnostics)),
        "### Extrapolation: fit on the smaller budgets, predict the largest\n"
        + markdown_table(a.holdout, ["group", "heldout_budget", "n_train", "n_heldout", "observed", "predicted",
                                     "predicted_lo", "predicted_hi", "mae", "bias", "tolerance", "reason"]),
        *forecast_sections(a),
        "## Held-out loss vs compute: loss = E + k * C^-c\n" + _fits_table(a.loss_curves),
        "## L(N, D) = E + A/N^alpha + B/D^beta (N = params.encoder, D = checkpoint step)\n" + _fits_table(a.ld),
        "## Pareto frontier (accuracy vs total FLOPs; lo, hi: 95% interval over seeds)\n"
        + markdown_table(a.table[a.table["pareto"]], ["group", "budget", "teacher_share", "flops_total", "accuracy",
                                                      "lo", "hi", "accuracy_sd", "n_seeds"]),
        "## Compute-optimal teacher share per budget\nQuadratic in log(share) over the budget's runs, argmax "
        "within the shares tried; interval: bootstrap (column `interval`).\n" + markdown_table(a.shares),
        "## FLOPs SALT needs to reach V-JEPA's best accuracy\n" + _match_text(a.match),
        "## Teacher selection: which metric predicts the student's accuracy\n"
        "Ranked by |Spearman| over final students; BCa 95% intervals; permutation p-values; "
        "LOTO = leave-one-teacher-out linear prediction (skill > 0: better than the mean).\n"
        + markdown_table(a.selection.get("ranking"), [
            "rank", "metric", "n", "spearman", "spearman_bca_lo", "spearman_bca_hi", "spearman_p", "kendall",
            "kendall_bca_lo", "kendall_bca_hi", "kendall_p", "pearson", "pearson_bca_lo", "pearson_bca_hi",
            "pearson_p", "median_within_teacher_r2", "loto_rmse", "loto_skill", "status", "reason", "loto_reason"]),
        "## Cost per curve\n" + markdown_table(a.costs),
    ]
    sections += choice_sections(a.choices)
    sections += _figures_section(figures, left_out or {})
    return "\n\n".join(sections) + "\n"


def write_report(a: Analysis, out: Path, study_dirs: list[str], completeness: list[str],
                 figures: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    pngs, left_out = [], {}
    if figures:
        from analysis.figures import all_figures   # matplotlib only when figures are drawn
        pngs, left_out = all_figures(a, out / "figures")
    if a.kind == SELECTION:
        atomic_write_text(out / RANKING_CSV, a.selection["ranking"].to_csv(index=False))
        atomic_write_text(out / R2_CSV, a.selection["r2"].to_csv(index=False))
    if a.forecast is not None:
        atomic_write_text(out / FORECAST_CSV, _with_extrapolation(a.forecast.table).to_csv(index=False))
        atomic_write_text(out / PARAMS_CSV, a.forecast.params.to_csv(index=False))
        atomic_write_text(out / ROLLOUT_CSV, a.rollout.to_csv(index=False))
    if a.choices:
        atomic_write_text(out / CHOICE_CSV, pd.concat([c.runs.assign(criterion=by) for by, c in a.choices.items()])
                          .to_csv(index=False))
    path = out / "report.md"
    atomic_write_text(path, render(a, study_dirs, completeness, pngs, left_out))
    return path


def headline(a: Analysis) -> str:
    """An analysis's answer in a few lines of markdown: a selection study's verdict; else the summary table
    (accuracy [interval] @ FLOPs per budget and curve) and the verdict in words."""
    if a.kind == SELECTION:
        return verdict_text(verdict(a.selection), a.target)
    return (markdown_table(summary_table(a.table)) + "\n\n" + "\n".join(f"- {line}" for line in a.verdict))


def render_index(analyses: dict[str, Analysis], study_dirs: list[str]) -> str:
    """report.md of `--benchmark all`: per benchmark its target, answer and the path of its full report."""
    studies = sorted({str(s) for a in analyses.values() for s in a.frame["study"].unique()})
    sections = [f"# Study analysis across benchmarks: {', '.join(studies)}",
                f"Study folder(s): {', '.join(study_dirs)}  \nBenchmarks: {', '.join(analyses)}. Scores of different "
                "benchmarks never share a fit, a table or a verdict: each has its own report (linked below)."]
    for name, a in analyses.items():
        sections.append(f"## Benchmark `{name}`: {column_name(a.target)}\n`{a.target}` (evaluation `{a.evaluation}`); "
                        f"full report: [{name}/report.md]({name}/report.md)\n\n" + headline(a))
    return "\n\n".join(sections) + "\n"


def run(study_dirs, out=None, *, target: str | None = None, evaluation: str | None = None, n_boot: int = 1000,
        seed: int = 0, allow_partial: bool = False, figures: bool = True, benchmark: str | None = None) -> Path:
    """Load, analyse and write report.md (+ figures/) into `out` (default STUDY_DIR/analysis). `benchmark`
    "all": each benchmark's report in out/<benchmark>/, and out/report.md indexing their answers."""
    dirs = [Path(study_dirs)] if isinstance(study_dirs, (str, Path)) else [Path(d) for d in study_dirs]
    out = Path(out) if out else dirs[0] / "analysis"
    frame = load_study(dirs, allow_partial=allow_partial)
    names = [benchmark] if benchmark != ALL_BENCHMARKS else (
        sorted(frame["benchmark"].unique()) if "benchmark" in frame and not frame.empty else [None])
    # every benchmark is analysed before anything is written: a bad one loses nothing
    analyses = {a.benchmark: a for a in (analyze(frame, target, evaluation=evaluation, n_boot=n_boot, seed=seed,
                                                 benchmark=name) for name in names)}

    def report(a: Analysis, folder: Path) -> Path:
        completeness = [check_complete(d, target=a.target, evaluation=a.evaluation, benchmark=a.benchmark).message
                        .replace("\n", "  \n")
                        for d in dirs]
        return write_report(a, folder, [str(d) for d in dirs], completeness, figures)
    if benchmark != ALL_BENCHMARKS:
        return report(next(iter(analyses.values())), out)
    for name, a in analyses.items():
        report(a, out / name)
    index = out / "report.md"
    atomic_write_text(index, render_index(analyses, [str(d) for d in dirs]))
    return index
