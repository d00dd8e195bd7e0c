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

from analysis.allocation import allocation_table, flops_to_match, optimal_share
from analysis.collect import StudyDataError, check_complete, final_records, load_study
from analysis.correlate import rank_metrics
from analysis.fits import (MIN_DISTINCT, FitError, curve_fits, fit_ld, fit_loss_vs_compute, fit_table,
                           holdout_error)
from analysis.resample import one_blas_thread

DEFAULT_TARGET = "probe.linear.time.motion.10"   # the headline on the embedded moving-digits data
EVALUATION_PREFERENCE = ("systematic", "fast")


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
    frame: pd.DataFrame                     # every checkpoint of the chosen evaluation
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


def analyze(frame: pd.DataFrame, target: str | None = None, *, evaluation: str | None = None,
            n_boot: int = 1000, seed: int = 0) -> Analysis:
    """Fits with bootstrap intervals, allocation, FLOPs to match V-JEPA, teacher-selection metrics."""
    if frame.empty:
        raise StudyDataError("no records to analyse")
    evaluation = choose_evaluation(frame, evaluation)
    frame = frame[frame["evaluation"] == evaluation].reset_index(drop=True)
    target = choose_target(frame, target)
    last = final_records(frame)
    last = last[last[target].notna()]
    final, baselines = last[last["flops_total"] > 0], last[last["flops_total"] <= 0]
    out = Analysis(target, evaluation, frame, final.reset_index(drop=True), baselines.reset_index(drop=True),
                   n_boot=n_boot)
    with one_blas_thread():
        out.curves = curve_fits(final, target, n_boot=n_boot, seed=seed)
        out.loss_curves = {g: _try(fit_loss_vs_compute, rows, n_boot=n_boot, seed=seed)
                           for g, rows in final.groupby("group")}
        for group, rows in frame[frame["flops_total"] > 0].groupby("group"):
            sizes = rows["params.encoder"].nunique() if "params.encoder" in rows else 0
            out.ld[group] = (_try(fit_ld, rows, target, "params.encoder", "checkpoint_step", n_boot=n_boot, seed=seed)
                             if sizes >= MIN_DISTINCT
                             else FitError(f"{sizes} encoder size(s): L(N, D) needs {MIN_DISTINCT} or more"))
        out.holdout = pd.DataFrame([{"group": g, **holdout_error(rows, target)} for g, rows in final.groupby("group")])
        out.table = allocation_table(frame[frame["flops_total"] > 0], target)
        out.shares = optimal_share(final, target, n_boot=n_boot, seed=seed)
        out.match = flops_to_match(final, target, out.curves)
        out.selection = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
    out.costs = _costs(final)
    return out


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """allocation_table as budget x curve cells "accuracy @ FLOPs" (curve: group, with share when set)."""
    t = table.copy()
    share = pd.to_numeric(t["teacher_share"], errors="coerce") if "teacher_share" in t else pd.Series(np.nan, t.index)
    t["curve"] = np.where(share.notna(), t["group"] + " share=" + share.map("{:.3g}".format), t["group"])
    t["cell"] = [f"{a:.4f} @ {f:.3g}" + (" *" if best and s == s else "")
                 for a, f, best, s in zip(t["accuracy"], t["flops_total"], t["best_share"], share)]
    pivot = t.pivot_table(index="budget", columns="curve", values="cell", aggfunc="first").fillna("")
    pivot.columns.name = None
    return pivot.reset_index()


def summarize(study_dir, target: str | None = None, *, evaluation: str | None = None,
              allow_partial: bool = False) -> str:
    """The study's summary as printable text: accuracy @ total FLOPs per budget and curve (mean over
    seeds; * marks the best teacher share of a budget)."""
    frame = load_study(study_dir, allow_partial=allow_partial)
    evaluation = choose_evaluation(frame, evaluation)
    frame = frame[frame["evaluation"] == evaluation]
    target = choose_target(frame, target)
    frame = frame[frame["flops_total"] > 0]
    table = summary_table(allocation_table(frame, target))
    header = f"{target} ({evaluation}), mean over seeds @ total FLOPs; * best teacher share in the budget"
    return header + "\n" + table.to_string(index=False)


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
    return markdown_table(fit_table(fits), ["curve", "param", "estimate", "lo", "hi", "n_points", "n_boot", "reason"])


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


def render(a: Analysis, study_dirs: list[str], completeness: list[str], figures: list[Path]) -> str:
    """report.md for an Analysis."""
    counts = a.final.groupby(["group", "role"]).size().rename("runs").reset_index()
    sections = [
        f"# Study analysis: {', '.join(sorted(a.frame['study'].astype(str).unique()))}",
        f"Study folder(s): {', '.join(study_dirs)}  \nTarget: `{a.target}` (evaluation `{a.evaluation}`), "
        f"error = 1 - target. Bootstrap: {a.n_boot} resamples of runs; intervals are 95%.",
        "\n".join(f"- {line}" for line in completeness),
        "## Runs analysed\n" + markdown_table(counts),
    ]
    if not a.baselines.empty:
        sections.append("Zero-compute references: " + ", ".join(
            f"{r.run_id} {r[a.target]:.4f}" for _, r in a.baselines.iterrows()))
    sections += [
        "## Summary: accuracy @ total FLOPs (mean over seeds; * best teacher share)\n"
        + markdown_table(summary_table(a.table)),
        "## Accuracy vs compute: error = E + k * C^-c per curve\n" + _fits_table(a.curves),
        "### Extrapolation: fit on the smaller budgets, predict the largest\n"
        + markdown_table(a.holdout, ["group", "heldout_budget", "n_train", "n_heldout", "observed", "predicted",
                                     "mae", "bias", "reason"]),
        "## Held-out loss vs compute: loss = E + k * C^-c\n" + _fits_table(a.loss_curves),
        "## L(N, D) = E + A/N^alpha + B/D^beta (N = params.encoder, D = checkpoint step)\n" + _fits_table(a.ld),
        "## Pareto frontier (accuracy vs total FLOPs)\n"
        + markdown_table(a.table[a.table["pareto"]], ["group", "budget", "teacher_share", "flops_total", "accuracy",
                                                      "accuracy_sd", "n_seeds"]),
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
    if figures:
        sections.append("## Figures\n" + "\n".join(f"![{p.stem}](figures/{p.name})" for p in figures))
    return "\n\n".join(sections) + "\n"


def write_report(a: Analysis, out: Path, study_dirs: list[str], completeness: list[str],
                 figures: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    pngs = []
    if figures:
        from analysis.figures import all_figures   # matplotlib only when figures are drawn
        pngs = all_figures(a, out / "figures")
    path = out / "report.md"
    path.write_text(render(a, study_dirs, completeness, pngs), encoding="utf-8")
    return path


def run(study_dirs, out=None, *, target: str | None = None, evaluation: str | None = None, n_boot: int = 1000,
        seed: int = 0, allow_partial: bool = False, figures: bool = True) -> Path:
    """Load, analyse and write report.md (+ figures/) into `out` (default STUDY_DIR/analysis)."""
    dirs = [Path(study_dirs)] if isinstance(study_dirs, (str, Path)) else [Path(d) for d in study_dirs]
    frame = load_study(dirs, allow_partial=allow_partial)
    a = analyze(frame, target, evaluation=evaluation, n_boot=n_boot, seed=seed)
    completeness = [check_complete(d, target=a.target, evaluation=a.evaluation).message.replace("\n", "  \n")
                    for d in dirs]
    return write_report(a, Path(out) if out else dirs[0] / "analysis", [str(d) for d in dirs], completeness, figures)
