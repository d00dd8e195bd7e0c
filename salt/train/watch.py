"""Collapse alarm while training: every `train.watch_every` steps, RankMe (salt.spectrum) and the mean per-dimension
standard deviation of the encoder's mean-pooled features on one fixed set of clips (the same clips all run long).

A collapsing encoder puts its features in fewer and fewer directions: RankMe falls. The alarm (CollapseWarning, or
CollapseError with `train.collapse_stop`) goes off when RankMe falls below `train.collapse_floor` (at any step), or,
from step `after` on (`train.collapse_after` of the run), below `train.collapse_fraction` of the highest value the
run has had, its random-initial encoder's included (kept in checkpoints, so a resumed run remembers it). It fires
when the run enters that state, not again at every watch while it stays there. The measurement runs the encoder in
eval mode without gradients and draws no random numbers, so it changes nothing the run computes.

Why the grace period: on the tiny setting, healthy runs (the demo's pixel teacher and SALT student) dip early to the
values collapsing runs stay at, then recover within the first half of the run; runs made to collapse (V-JEPA without
EMA or at 20x its learning rate, a student at 30x) and the demo's V-JEPA run never do
(`benchmarks/collapse_watch.py`, benchmarks/README.md).
"""
from __future__ import annotations

import warnings

import torch

from salt.errors import UserError
from salt.spectrum import rankme

WATCH_SEED = 20251204   # which clips are watched: fixed, independent of the run's seed


class CollapseWarning(UserWarning):
    pass


class CollapseError(UserError, RuntimeError):
    """train.collapse_stop: the run stopped at a collapse alarm; its last checkpoint is from before it."""


class CollapseWatch:
    def __init__(self, clips: torch.Tensor, floor: float, fraction: float, stop: bool, after: int = 0):
        self.clips, self.floor, self.fraction, self.stop, self.after = clips, floor, fraction, stop, after
        self.best, self.alarmed = 0.0, False

    @torch.no_grad()
    def measure(self, encoder: torch.nn.Module, dist, autocast) -> dict[str, float]:
        """{"rankme", "feature_std"} of the watched clips (every rank computes its share; gathered to all)."""
        training = encoder.training
        encoder.eval()
        try:
            with autocast:
                pooled = encoder(self.clips).float().mean(dim=1)   # [clips of this rank, D]
        finally:
            encoder.train(training)
        features = dist.gather_rows(pooled)
        return {"rankme": rankme(features), "feature_std": float(features.std(dim=0).mean())}

    def check(self, step: int, values: dict[str, float]) -> None:
        value = values["rankme"]
        self.best = max(self.best, value)
        low = value < self.floor or (step >= self.after and value < self.fraction * self.best)
        if low and not self.alarmed:
            message = (f"step {step}: RankMe of the encoder's features is {value:.2f} (highest so far "
                       f"{self.best:.2f}; alarm below {self.floor:g}, or from step {self.after} below "
                       f"{self.fraction:g} x the highest): the representation may be collapsing (lower optim.lr? "
                       "see docs/training.md)")
            if self.stop:
                raise CollapseError(message + "; stopped (train.collapse_stop), the last checkpoint is from before")
            warnings.warn(message, CollapseWarning, stacklevel=2)
        self.alarmed = low

    def state_dict(self) -> dict:
        return {"best": self.best, "alarmed": self.alarmed}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.alarmed = float(state["best"]), bool(state["alarmed"])
