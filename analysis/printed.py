"""The answers `python -m analysis` prints without writing a report: `--predict` (forecasts) and `--choose-by`
(checkpoint choice)."""
from __future__ import annotations

from analysis import choice as choice_
from analysis import forecast as forecast_
from analysis.collect import load_study
from analysis.report import select
from analysis.report_curves import FORECAST_COLUMNS, ROLLOUT_COLUMNS, rollout_text, unrounded, with_extrapolation


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
                     + with_extrapolation(f.table)[columns].to_string(index=False))
        notes = f.table[f.table["reason"].astype(str) != ""][["curve", "predictor", "reason"]]
        if len(notes):
            parts.append("Notes:\n" + "\n".join(f"- {r.curve} ({r.predictor}): {r.reason}" for r in notes.itertuples()))
    parts.append("Parameters (unrounded; converged: the optimiser's verdict):\n"
                 + unrounded(f.params).to_string(index=False) if len(f.params) else "No curve could be fitted.")
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
