"""Schedules are pure functions of the step, so a resumed run computes exactly what an uninterrupted one did."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, *, start: float, peak: float, final: float, warmup: int) -> float:
    """Linear warmup start -> peak over `warmup` steps, then cosine peak -> final at `total_steps`."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, total_steps: int, *, start: float, final: float) -> float:
    """Cosine from start (step 0) to final (last step); used for weight decay 0.04 -> 0.4 as in V-JEPA/SALT."""
    progress = min(1.0, step / max(1, total_steps))
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear(step: int, total_steps: int, *, start: float, final: float) -> float:
    """Linear start -> final (V-JEPA 1's EMA momentum 0.998 -> 1.0); start == final gives a constant (V-JEPA 2)."""
    progress = min(1.0, step / max(1, total_steps))
    return start + (final - start) * progress
