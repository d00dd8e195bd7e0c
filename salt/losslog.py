"""The training loss a run logged, read at a checkpoint: losses["train"] and ["train_early"] of its evaluation
records (docs/records.md), and the analysis's numbers for records written before those existed.

Rows are a run's metrics.jsonl (salt.layout.read_metrics). Standard library only.
"""
from __future__ import annotations

import math

# losses["train"] / losses["train_early"] (train_losses): exponentially weighted means of the logged training loss
# with this time constant (a fraction of the run's steps), at the checkpoint and at EARLY_FRACTION of the run.
TRAIN_LOSS_SMOOTHING = 0.05
EARLY_FRACTION = 0.1


def smoothed_loss(rows: list[dict], step: int, tau: float) -> float:
    """Exponentially weighted mean of the loss logged before `step` (a row's "step" is the 0-based step whose
    batch it scored, so checkpoint `step` has seen rows 0..step-1), weights exp(-(step - 1 - row step) / tau).
    One logged batch is noisy; the weighted mean needs no minimum logging rate (a sparse log leans on its
    nearest rows). NaN when nothing was logged before `step`."""
    points = [(r["step"], r["loss"]) for r in rows
              if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
              and 0 <= r["step"] < step and math.isfinite(r["loss"])]
    if not points:
        return math.nan
    weights = [math.exp(-(step - 1 - s) / tau) for s, _ in points]
    return sum(w * v for w, (_, v) in zip(weights, points)) / sum(weights)


def train_losses(rows: list[dict], checkpoint_step: int, steps_total: int) -> dict[str, float]:
    """The record's training-loss entries from a run's metrics rows (salt.layout.read_metrics):
    `train` = the smoothed loss at the checkpoint, `train_early` = the smoothed loss at EARLY_FRACTION of the run
    (the same step for every run of one recipe: the early-selection proxy), present once the checkpoint has
    passed that step. Time constant: TRAIN_LOSS_SMOOTHING of the run's steps (at least one step)."""
    tau = max(1.0, TRAIN_LOSS_SMOOTHING * steps_total)
    out = {"train": smoothed_loss(rows, checkpoint_step, tau)}
    early = max(1, round(EARLY_FRACTION * steps_total))
    if checkpoint_step >= early:
        out["train_early"] = smoothed_loss(rows, early, tau)
    return {k: v for k, v in out.items() if math.isfinite(v)}
