"""What a method is: an objective object. The training loop owns optimisation, schedules and checkpoints;
an objective only says which modules it trains, what the loss of a batch is, and what happens after a step."""
from __future__ import annotations

import torch
from torch import nn

from salt.flops import NetworkCost


class Objective(nn.Module):
    """Subclasses set `self.encoder` and implement `loss`. Hooks default to doing nothing."""

    encoder: nn.Module
    upstream_flops: float = 0.0   # compute already spent on the networks this run starts from (teacher chain)
    teacher_source: tuple[str, int] = ("", -1)   # (run id, step) of the checkpoint a frozen teacher came from

    def trainable(self) -> dict[str, nn.Module]:
        """Modules the optimiser updates."""
        raise NotImplementedError

    def saved(self) -> dict[str, nn.Module]:
        """Modules a checkpoint holds (trainable ones plus any EMA copy; never a frozen teacher loaded from file)."""
        return self.trainable()

    def loss(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        """-> {"loss": scalar to minimise, ...other scalars to log}. `batch["masks"]` is a list of MaskPair."""
        raise NotImplementedError

    def costs(self, batch: dict) -> list[NetworkCost]:
        """What each network processed for this batch, for the compute accounting."""
        raise NotImplementedError

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called after each optimiser step (EMA update, frozen-teacher check, plateau warning)."""


def token_mean(error: torch.Tensor, valid: torch.Tensor | None, count: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of a per-token error [B, N, D] over tokens and features; padding tokens (valid False, bool [B, N]) count
    for nothing, so a sample's loss does not depend on what it was batched with. `count` (MaskPair.target_count):
    the number of tokens to divide the sum by, when these rows are part of a larger batch (its default: the rows'
    own valid tokens)."""
    if valid is None:
        return error.mean()
    weight = valid.to(error.dtype).unsqueeze(-1)
    return (error * weight).sum() / ((weight.sum() if count is None else count) * error.shape[-1])


def mean_over_pairs(values: list[torch.Tensor]) -> torch.Tensor:
    """The loss is averaged over the (context, target) pairs of a clip (V-JEPA: short- and long-range)."""
    return torch.stack(values).mean()
