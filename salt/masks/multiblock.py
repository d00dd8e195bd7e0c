"""V-JEPA multiblock-3D masks: the target is a union of a few large space-time boxes, the context is the rest.

Large contiguous targets cannot be filled in by interpolating neighbouring patches, which is why V-JEPA (and
SALT, for both stages) use them. One MaskPair per BlockConfig: the default gives a short-range pair (8 blocks of
0.15 of the frame) and a long-range pair (2 blocks of 0.7); the caller averages the loss over pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from salt.identity import ALWAYS
from salt.masks.simple import MaskPair, check_batch_size, check_grid, indices_of, random_subset

# V-JEPA resamples an empty-context sample forever; a bound turns an impossible config into an error.
MAX_RESAMPLES = 100
# How rows of different lengths become one batch: cut to the shortest (V-JEPA; a random subset here) or padded to
# the longest with validity masks (every token kept).
EQUALIZE = ("cut", "pad")


def _check_range(name: str, value: list[float], upper: float) -> None:
    if len(value) != 2 or not 0 < value[0] <= value[1] <= upper:
        bound = f" <= {upper}" if math.isfinite(upper) else ""
        raise ValueError(f"{name} must be [min, max] with 0 < min <= max{bound}, got {value!r}")


@dataclass
class BlockConfig:
    """One V-JEPA multiblock config: how many blocks, and the ranges their size is drawn from."""
    num_blocks: int = field(default=8, metadata=ALWAYS)
    # the ranges (low, high) of a block's size: a fraction of H*W, a fraction of T, and its h / w
    spatial_scale: list[float] = field(default_factory=lambda: [0.15, 0.15], metadata=ALWAYS)
    temporal_scale: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata=ALWAYS)
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5], metadata=ALWAYS)

    def __post_init__(self):
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        _check_range("spatial_scale", self.spatial_scale, 1.0)
        _check_range("temporal_scale", self.temporal_scale, 1.0)
        _check_range("aspect_ratio", self.aspect_ratio, math.inf)


class MultiBlockMaskGenerator:
    """For each BlockConfig: a block size (t, h, w) drawn once per batch, block positions drawn per sample,
    target = union of the sample's blocks, context = the complement.

    Rows are cut to the batch's shortest row by keeping a uniformly random subset of each row, not (as V-JEPA
    does) its smallest indices, which would bias against late-frame / bottom-right tokens; see
    cut_to_equal_lengths. A sample left with fewer than min_context context tokens has its blocks redrawn (at
    most MAX_RESAMPLES times, then ValueError).
    """

    def __init__(self, grid, blocks: list[BlockConfig], min_context: int = 1, equalize: str = "cut",
                 cut_group: int = 0):
        self.grid = check_grid(grid)
        if not blocks:
            raise ValueError("blocks must list at least one BlockConfig")
        if not 1 <= min_context < math.prod(self.grid):
            raise ValueError(f"min_context must be in [1, {math.prod(self.grid)}) for grid {self.grid}, "
                             f"got {min_context}")
        if equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {EQUALIZE}, got {equalize!r}")
        if cut_group < 0 or (cut_group and equalize != "cut"):
            raise ValueError(f"cut_group must be 0 (the whole batch) or a number of clips >= 1 with equalize='cut', "
                             f"got {cut_group} with equalize={equalize!r}")
        self.blocks = list(blocks)
        self.min_context = min_context
        self.equalize = equalize
        self.cut_group = cut_group

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskPair]:
        targets = self.sample_target_masks(batch_size, generator)
        if self.equalize == "pad":
            return [pad_to_equal_lengths(target) for target in targets]
        if self.cut_group and batch_size > self.cut_group:
            return [cut_within_groups(target, self.cut_group, generator) for target in targets]
        return [cut_to_equal_lengths(target, generator) for target in targets]

    def groups(self, batch_size: int) -> list[int]:
        """The sizes of the groups of consecutive clips that draw their own block sizes (and, cut, are cut to their
        own shortest row): the whole batch, or `cut_group` clips each as V-JEPA's collator per GPU batch."""
        size = self.cut_group or batch_size
        return [min(size, batch_size - start) for start in range(0, batch_size, size)]

    def sample_target_masks(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The uncut target masks, one [B, T*H*W] bool tensor per BlockConfig (True = covered by a block)."""
        check_batch_size(batch_size)
        per_group = [[self._sample_target_mask(cfg, n, generator) for cfg in self.blocks]
                     for n in self.groups(batch_size)]
        return [torch.cat(masks) for masks in zip(*per_group)]

    def sample_block_size(self, cfg: BlockConfig, generator: torch.Generator) -> tuple[int, int, int]:
        """(t, h, w) as in V-JEPA: scale -> token count, aspect ratio -> h / w, clamped to [1, grid]."""
        frames, height, width = self.grid
        u_time, u_space, u_aspect = torch.rand(3, generator=generator, device=generator.device).tolist()
        t = int(frames * _lerp(cfg.temporal_scale, u_time))
        area = int(height * width * _lerp(cfg.spatial_scale, u_space))
        aspect = _lerp(cfg.aspect_ratio, u_aspect)
        h = round(math.sqrt(area * aspect))
        w = round(math.sqrt(area / aspect))
        return min(max(1, t), frames), min(max(1, h), height), min(max(1, w), width)

    def _sample_target_mask(self, cfg: BlockConfig, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        size = self.sample_block_size(cfg, generator)
        target = self._union_of_blocks(batch_size, size, cfg.num_blocks, generator)
        for _ in range(MAX_RESAMPLES):
            short = ((~target).sum(dim=1) < self.min_context).nonzero().squeeze(1)
            if short.numel() == 0:
                return target
            target[short] = self._union_of_blocks(short.numel(), size, cfg.num_blocks, generator)
        if ((~target).sum(dim=1) < self.min_context).any():
            raise ValueError(
                f"multiblock: {MAX_RESAMPLES} redraws still left fewer than min_context={self.min_context} "
                f"context tokens ({cfg.num_blocks} blocks of (t, h, w)={size} on grid {self.grid}); lower "
                f"num_blocks, spatial_scale or temporal_scale, or min_context")
        return target

    def _union_of_blocks(self, batch_size: int, size: tuple[int, int, int], num_blocks: int,
                         generator: torch.Generator) -> torch.Tensor:
        """[B, T*H*W] bool: True where any of the sample's num_blocks boxes of the given size lies."""
        device = generator.device
        inside = []  # per axis: [B, num_blocks, extent] bool, True where the block covers that coordinate
        for extent, length in zip(self.grid, size):
            start = torch.randint(0, extent - length + 1, (batch_size, num_blocks, 1),
                                  generator=generator, device=device)
            coord = torch.arange(extent, device=device)
            inside.append((coord >= start) & (coord < start + length))
        in_t, in_h, in_w = inside
        in_hw = (in_h[..., :, None] & in_w[..., None, :]).flatten(2)  # [B, num_blocks, H*W]
        # Blocks covering each (t, hw), counted by one batched matmul: much cheaper than a 5-D broadcast.
        covered = in_t.transpose(1, 2).float() @ in_hw.float()     # [B, T, H*W]
        return covered.flatten(1) > 0


def cut_to_equal_lengths(target: torch.Tensor, generator: torch.Generator) -> MaskPair:
    """[B, N] bool target mask -> MaskPair whose rows (context = complement) are cut to the batch's shortest
    row by a uniformly random subset per row, not (as V-JEPA does) the smallest indices, which would bias
    against late-frame / bottom-right tokens. Cut tokens end up neither context nor target."""
    context = ~target
    return MaskPair(
        context=indices_of(random_subset(context, int(context.sum(dim=1).min()), generator)),
        target=indices_of(random_subset(target, int(target.sum(dim=1).min()), generator)),
    )


def cut_within_groups(target: torch.Tensor, group: int, generator: torch.Generator) -> MaskPair:
    """cut_to_equal_lengths within each `group` consecutive rows (V-JEPA's collator cuts each GPU's batch to its
    own shortest row), then the groups' rows padded to the longest with validity masks."""
    def group_minimum(members):   # each row's count: the shortest row of its group
        return torch.cat([c.min().expand(len(c)) for c in members.sum(dim=1).split(group)])
    kept_context, kept_target = (random_subset(members, group_minimum(members), generator)
                                 for members in (~target, target))
    context_idx, context_valid = padded_indices(kept_context)
    target_idx, target_valid = padded_indices(kept_target)
    return MaskPair(context_idx, target_idx, context_valid, target_valid)


def padded_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, N] bool -> (indices [B, L], valid [B, L]), L = the longest row: each row's True indices in ascending
    order, then padding (indices of other tokens, in range, marked invalid)."""
    n = mask.shape[1]
    position = torch.arange(n, device=mask.device)
    order = torch.where(mask, position, position + n).argsort(dim=1)   # members first, each part ascending
    length = int(mask.sum(dim=1).max())
    return order[:, :length], position[:length] < mask.sum(dim=1, keepdim=True)


def pad_to_equal_lengths(target: torch.Tensor) -> MaskPair:
    """[B, N] bool target mask -> MaskPair that keeps every token: rows padded to the batch's longest, with
    validity masks (no token dropped, whatever the batch size; no randomness used)."""
    context, context_valid = padded_indices(~target)
    target_idx, target_valid = padded_indices(target)
    return MaskPair(context, target_idx, context_valid, target_valid)


def _lerp(bounds: list[float], u: float) -> float:
    low, high = bounds
    return low + u * (high - low)
