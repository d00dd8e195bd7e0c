"""The answer of a study of compute curves in words: the summary table, what the design can show, and the report
sections (fits, diagnostics, forecasts, allocation, selection metrics): the ALLOCATION and TUNED questions of
analysis.kinds. Each section reads an analysis.answers.Analysis."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import forecast as forecast_
from analysis.fits import MIN_DISTINCT, fit_table
from analysis.kinds import StudyKind
from analysis.markdown import bullets, cell, markdown_table
from analysis.replicates import Replicates, interval_text
from analysis.words import column_name

FORECAST_FACTOR = 2.0   # the report forecasts every curve at this multiple of the study's largest budget
FORECAST_COLUMNS = ["curve", "predictor", "budget", "flops", "predicted", "lo", "hi", "fit_lo", "fit_hi", "noise_sd",
                    "extrapolation", "loss", "converged", "residuals_uneven", "reason"]
ROLLOUT_COLUMNS = ["curve", "predictor", "budget", "largest_fitted", "n_heldout", "observed", "predicted", "lo", "hi",
                   "error", "relative_error", "coverage", "fit_covers_mean", "converged", "reason"]
FORECAST_CSV, ROLLOUT_CSV, PARAMS_CSV = "forecast.csv", "rollout.csv", "forecast_params.csv"   # beside report.md


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


def scope_lines(final: pd.DataFrame, rep: Replicates, kind: StudyKind, budgets_matter: bool = True) -> list[str]:
    """What a study's data can and cannot show, from its design: seeds per setting, and (`budgets_matter`: an
    allocation study) the candidate curve's budgets."""
    seeds = rep.settings["n_seeds"]
    lines = [f"{int(seeds.min())}{'-' + str(int(seeds.max())) if seeds.max() > seeds.min() else ''} seed(s) per "
             f"setting, {len(rep.settings)} settings: " + (
                 f"a run's accuracy moves by sd {rep.pooled_sd:.3f} from seed to seed ({rep.df} degrees of freedom "
                 f"pooled over settings), so differences much below {2 * rep.pooled_sd:.3f} cannot be told apart."
                 if rep.df else "one seed per setting: no intervals, and no difference can be told from seed noise "
                 "(run the study with --seeds 2 or more).")]
    lines += rep.notes
    if not budgets_matter:
        return lines
    budgets = final[final["group"] == kind.candidate]["budget"].nunique() if "group" in final else 0
    lines.append(f"{budgets} budget(s) of the {kind.candidate} runs: " + (
        "accuracy-vs-compute curves can be fitted (report.md: fits with their diagnostics; a fit is drawn only where "
        "they say the data identify it)." if budgets >= MIN_DISTINCT else
        f"an accuracy-vs-compute curve needs {MIN_DISTINCT} or more, so the study compares settings but cannot say "
        "how accuracy scales with compute (SALT's curve pools its shares, so report.md may still fit one across "
        "them; its diagnostics say whether to trust it)."))
    return lines


def _fits_table(fits: dict) -> str:
    return markdown_table(fit_table(fits), ["curve", "param", "estimate", "lo", "hi", "n_points", "n_boot", "converged",
                                             "reason"])


def _match_text(m: dict) -> str:
    if "reference_accuracy" not in m:
        return f"Not computed: {m.get('reason', '')}."
    lines = [f"- {m['reference']}'s best accuracy: {m['reference_accuracy']:.4f} at {m['reference_flops']:.3e} FLOPs.",
             f"- Raw configurations: {m['candidate']} reaches it with {cell(m['raw_flops'])} FLOPs "
             f"(savings x{cell(m['raw_savings'])})."]
    if "fit_flops" in m:
        lines.append(f"- Fitted {m['candidate']} curve: {cell(m['fit_flops'])} FLOPs (95% CI "
                     f"{cell(m.get('fit_flops_lo'))} to {cell(m.get('fit_flops_hi'))}; savings x{cell(m['fit_savings'])}).")
    if m.get("reason"):
        lines.append(f"- Note: {m['reason']}.")
    return "\n".join(lines)


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


def unrounded(frame: pd.DataFrame, column: str = "estimate") -> pd.DataFrame:
    """`column` as the shortest text that reads back to the same float (no rounding)."""
    return frame.assign(**{column: [repr(float(v)) for v in frame[column]]}) if len(frame) else frame


def with_extrapolation(table: pd.DataFrame) -> pd.DataFrame:
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


def forecast_sections(a) -> list[str]:
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
        f"`{FORECAST_CSV}`.\n" + markdown_table(with_extrapolation(f.table), FORECAST_COLUMNS),
        "### Rollout: each curve refitted without its largest budget, which is then predicted\n"
        + bullets(rollout_text(a.rollout)) + "\n\n"
        + "error: predicted - observed mean (signed); coverage: held-out runs inside the prediction interval; "
        f"fit_covers_mean: the observed mean inside the fit's own interval (`{ROLLOUT_CSV}`).\n"
        + markdown_table(a.rollout, ROLLOUT_COLUMNS),
        "### Forecast fits: parameters (unrounded) and convergence\nconverged: L-BFGS-B's own verdict on the full "
        f"data; boot_converged: the fraction of resamples it converged on (`{PARAMS_CSV}`).\n"
        + markdown_table(unrounded(f.params), ["curve", "predictor", "stage", "param", "estimate", "converged",
                                                "boot_converged"]),
        "### Forecast fits: residual spread against budget\nspread_rho, spread_p: Spearman of |residual| with the "
        "budget; spread_ratio: rms residual at the upper half of the budgets / the lower half; uneven: p < "
        f"{forecast_.RESIDUAL_P:g} (the interval assumes one spread: read it with care).\n"
        + markdown_table(f.residuals, ["curve", "predictor", "stage", "n", "rms", "spread_rho", "spread_p",
                                       "spread_ratio", "uneven"]),
    ]


def forecast_tables(a) -> dict[str, pd.DataFrame]:
    """The forecast's tables beside report.md, in full precision (none without a forecast)."""
    if a.forecast is None:
        return {}
    return {FORECAST_CSV: with_extrapolation(a.forecast.table), PARAMS_CSV: a.forecast.params, ROLLOUT_CSV: a.rollout}


def sections(a, study_dirs: list[str], completeness: list[str]) -> list[str]:
    """report.md of a study of compute curves (an analysis.answers.Analysis): runs, summary, verdict, fits with
    their diagnostics, forecasts, L(N, D), Pareto frontier, teacher share, FLOPs to match, selection metrics, cost."""
    counts = a.final.groupby(["group", "role"]).size().rename("runs").reset_index()
    sections = [
        f"# Study analysis: {', '.join(sorted(a.frame['study'].astype(str).unique()))}",
        f"Study folder(s): {', '.join(study_dirs)}  \nTarget: `{a.target}` (evaluation `{a.evaluation}`), "
        f"error = 1 - target; benchmark `{a.benchmark}`. Bootstrap: {a.n_boot} resamples of runs; intervals are 95%.",
        bullets(completeness),
        "## Runs analysed\n" + markdown_table(counts),
    ]
    if not a.baselines.empty:
        sections.append("Zero-compute references: " + ", ".join(
            f"{r.run_id} {r[a.target]:.4f}" for _, r in a.baselines.iterrows()))
    return sections + [
        f"## Summary: {column_name(a.target)} @ total FLOPs (mean over seeds [95% interval]; * best teacher share)\n"
        + markdown_table(summary_table(a.table)),
        "## Verdict: which settings can be told apart\n" + _replicates_text(a.replicates) + "\n\n"
        + bullets(a.verdict) + "\n\n"
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
