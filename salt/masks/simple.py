"""The MaskPair type shared by all generators, and the non-block masks: random tokens (MAE), random tubes
(VideoMAE) and causal (predict the future).

Tokens of a clip sit on a (T, H, W) grid flattened row-major: index = t*H*W + h*W + w. Generators return index
lists only, so models gather by index and never need to know how a mask was sampled. All randomness comes from
the torch.Generator passed in, so a mask is a pure function of the generator's state (exact resume).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch


@dataclass
class MaskPair:
    """One (context, target) split for a whole batch.

    Each row is sorted ascending without repeats, and context and target are disjoint per row. All rows have
    the same length so a model can gather a batch with one index tensor. Rows of different true lengths are
    either cut to the shortest (no `*_valid`) or padded to the longest: then `context_valid` / `target_valid`
    (bool, same shape) say which entries are real, and models mask the padding out of attention and the loss.
    """
    context: torch.Tensor  # int64 [B, Nc]
    target: torch.Tensor   # int64 [B, Nt]
    context_valid: torch.Tensor | None = None   # bool [B, Nc]; None: every entry is real
    target_valid: torch.Tensor | None = None    # bool [B, Nt]
    # Padded rows: the number of valid target tokens a loss over these rows divides its sum by. None: their own
    # count (a mean over these rows). The training loop sets it from the whole global batch (`spread_over`).
    target_count: torch.Tensor | None = None    # 0-d float

    def map(self, fn) -> "MaskPair":
        """fn applied to every tensor of the pair (rows of a shard or micro-batch, a device move); the target
        count, a property of the whole batch, is kept."""
        return MaskPair(*(None if t is None else fn(t)
                          for t in (self.context, self.target, self.context_valid, self.target_valid)),
                        target_count=self.target_count)

    def spread_over(self, parts: int) -> "MaskPair":
        """This (global) batch's pair for a step computed as `parts` partial losses, one per micro-batch of each
        process, that are averaged (over micro-batches, then processes): each divides its sum over valid target
        tokens by the global batch's count / parts, so the average is the global batch's token mean however the
        rows are split. Unpadded rows (every row the same length) are returned as they are."""
        if self.target_valid is None:
            return self
        count = self.target_valid.sum().to(torch.float32) / parts
        return MaskPair(self.context, self.target, self.context_valid, self.target_valid, target_count=count)

    def trimmed(self) -> "MaskPair":
        """These rows without the padding columns no row uses (valid entries come first in every row): a micro-batch
        computes its own longest row, not the global batch's. The same loss (padding counts for nothing)."""
        def cut(idx, valid):
            if valid is None:
                return idx, valid
            length = int(valid.sum(dim=1).max())
            return idx[:, :length], valid[:, :length]
        (context, context_valid), (target, target_valid) = (cut(self.context, self.context_valid),
                                                            cut(self.target, self.target_valid))
        return MaskPair(context, target, context_valid, target_valid, target_count=self.target_count)

    def to(self, device: torch.device | str) -> "MaskPair":
        return self.map(lambda t: t.to(device, non_blocking=True))


def check_grid(grid) -> tuple[int, int, int]:
    """The token grid as a tuple of three ints >= 1 (time, height, width), or a ValueError naming the problem."""
    if (not isinstance(grid, (tuple, list)) or len(grid) != 3
            or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in grid)):
        raise ValueError(f"grid must be three ints >= 1 (T, H, W), got {grid!r}")
    return tuple(int(n) for n in grid)


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def count_for_ratio(ratio: float, total: int) -> int:
    """round(ratio * total), kept in [1, total - 1] so both context and target are non-empty."""
    return min(max(1, round(ratio * total)), total - 1)


def random_subset(members: torch.Tensor, k: int | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per row of a [B, N] bool tensor, k of its True entries chosen uniformly at random (as a bool mask); k is
    one number for every row, or an int64 tensor [B] of one per row.

    Used to equalise row lengths across a batch: V-JEPA instead keeps each row's k smallest indices, so
    late-frame / bottom-right tokens are dropped more often than others; a uniform subset has no such bias.
    Every row must have at least k True entries.
    """
    keys = torch.rand(members.shape, generator=generator, device=members.device).masked_fill_(~members, 2.0)
    if isinstance(k, int):
        chosen = keys.topk(k, dim=1, largest=False, sorted=False).indices  # topk + scatter: ~5x cheaper than argsort
        return torch.zeros_like(members).scatter_(1, chosen, True)
    longest = int(k.max())   # each row's smallest keys first, then the first k of each row kept
    chosen = keys.topk(longest, dim=1, largest=False, sorted=True).indices
    return torch.zeros_like(members).scatter_(1, chosen, torch.arange(longest, device=members.device) < k[:, None])


def indices_of(mask: torch.Tensor) -> torch.Tensor:
    """[B, N] bool with the same number of True entries per row -> their int64 indices, sorted, [B, count]."""
    return mask.nonzero()[:, 1].view(mask.shape[0], -1)


class RandomTokenMaskGenerator:
    """MAE-style: every sample hides its own random set of round(ratio * T*H*W) tokens."""

    def __init__(self, grid, ratio: float, num_pairs: int = 1):
        self.grid = check_grid(grid)
        num_tokens = math.prod(self.grid)
        if num_tokens < 2:
            raise ValueError(f"random masks need at least 2 tokens to split, got grid {self.grid}")
        self.num_target = count_for_ratio(ratio, num_tokens)
        self.num_pairs = num_pairs

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskPair]:
        check_batch_size(batch_size)
        everything = torch.ones(batch_size, math.prod(self.grid), dtype=torch.bool, device=generator.device)
        targets = [random_subset(everything, self.num_target, generator) for _ in range(self.num_pairs)]
        return [MaskPair(context=indices_of(~target), target=indices_of(target)) for target in targets]


class TubeMaskGenerator:
    """VideoMAE-style: every sample hides a random set of round(ratio * H*W) spatial positions in all time
    steps, so a masked patch cannot be copied from the same place in a neighbouring frame."""

    def __init__(self, grid, ratio: float, num_pairs: int = 1):
        self.grid = check_grid(grid)
        _, height, width = self.grid
        if height * width < 2:
            raise ValueError(f"tube masks need at least 2 spatial positions, got grid {self.grid}")
        self.num_target = count_for_ratio(ratio, height * width)
        self.num_pairs = num_pairs

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskPair]:
        check_batch_size(batch_size)
        return [self._pair(batch_size, generator) for _ in range(self.num_pairs)]

    def _pair(self, batch_size: int, generator: torch.Generator) -> MaskPair:
        frames, height, width = self.grid
        everywhere = torch.ones(batch_size, height * width, dtype=torch.bool, device=generator.device)
        hidden_positions = random_subset(everywhere, self.num_target, generator)
        target = hidden_positions[:, None, :].expand(-1, frames, -1).flatten(1)  # same positions in every frame
        return MaskPair(context=indices_of(~target), target=indices_of(target))


class CausalMaskGenerator:
    """Predict the future: the last ceil(ratio * T) time steps are target, the earlier ones context (at least
    one context step is always kept). Deterministic; the generator only fixes the device. With num_pairs > 1
    the pairs are identical copies."""

    def __init__(self, grid, ratio: float, num_pairs: int = 1):
        self.grid = check_grid(grid)
        frames, height, width = self.grid
        if frames < 2:
            raise ValueError(f"causal masks need at least 2 time steps, got grid {self.grid}")
        # The epsilon keeps float noise (0.3 * 10 = 3.0000000000000004) from adding a whole time step.
        target_steps = min(math.ceil(ratio * frames - 1e-9), frames - 1)
        self.num_context_steps = frames - max(1, target_steps)
        self.num_pairs = num_pairs

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskPair]:
        check_batch_size(batch_size)
        frames, height, width = self.grid
        split = self.num_context_steps * height * width
        tokens = torch.arange(frames * height * width, device=generator.device)
        return [MaskPair(context=tokens[:split].repeat(batch_size, 1), target=tokens[split:].repeat(batch_size, 1))
                for _ in range(self.num_pairs)]
