"""Record columns and curve names in words, for figures and printed answers ("10-shot motion accuracy", not
`probe.linear.time.motion.10`). Tables keep column names (they are what a reader greps for)."""
from __future__ import annotations

import pandas as pd

from analysis.kinds import curve

PROBES = {"linear": "linear probe", "attentive": "attentive probe", "knn": "k-NN"}
POOLINGS = {"time": "per-time-step pooled features", "mean": "mean-pooled features", "tokens": "all tokens",
            "pixels": "raw pixels"}
COLUMNS = {"flops_total": "total training FLOPs (teacher + student)", "flops_run": "training FLOPs of the run",
           "losses.heldout": "held-out loss (the run's own objective)", "losses.train": "smoothed training loss",
           "losses.train_early": "training loss at 10% of the run", "checkpoint_step": "training step",
           "params.encoder": "encoder parameters", "budget": "budget",
           "teacher_flops_share": "teacher's share of the total training FLOPs (measured)"}


def group_name(group: str) -> str:
    """A curve label in words (analysis.kinds.CURVES; an unknown label as itself)."""
    return curve(group).words


def column_name(column: str, *, short: bool = False) -> str:
    """A record column in words; `short` leaves out how a probe score was measured."""
    if column.startswith("probe.") and column.count(".") == 4:
        _, probe, pooling, label, shots = column.split(".")
        what = f"{label} accuracy, all labels" if shots == "all" else f"{shots}-shot {label} accuracy"
        if short:
            return what
        return f"{what} ({PROBES.get(probe, probe)}, {POOLINGS.get(pooling, pooling)})"
    return COLUMNS.get(column, column)


def share_name(frame: pd.DataFrame, column: str) -> str:
    """The teacher-share axis in words: of the total FLOPs when the study's budgets are FLOPs (a `total_flops`
    label), of the total steps when they are steps, or the measured FLOPs share."""
    if column == "teacher_share":
        by_flops = "total_flops" in frame and pd.to_numeric(frame["total_flops"], errors="coerce").notna().any()
        return "teacher's share of the total training " + ("FLOPs" if by_flops else "steps")
    return column_name(column)
