"""Mask generators: which tokens of a clip the encoder sees (context) and which are predicted (target).

    gen = build_mask_generator(MaskConfig(), grid=(T, H, W))
    pairs = gen(batch_size, generator)   # list[MaskPair]; seed `generator` from (seed, step) for exact resume

Token index = t*H*W + h*W + w. Models gather by index and know nothing about how a mask was sampled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from salt.identity import ALWAYS, UNLESS_DEFAULT
from salt.masks.multiblock import (EQUALIZE, BlockConfig, MultiBlockMaskGenerator, cut_to_equal_lengths,
                                   pad_to_equal_lengths)
from salt.masks.simple import (CausalMaskGenerator, MaskPair, RandomTokenMaskGenerator, TubeMaskGenerator,
                               random_subset)

__all__ = ["BlockConfig", "MaskConfig", "MaskGenerator", "MaskPair", "build_mask_generator", "num_mask_pairs", "cut_to_equal_lengths",
           "pad_to_equal_lengths",
           "random_subset", "MultiBlockMaskGenerator", "RandomTokenMaskGenerator", "TubeMaskGenerator",
           "CausalMaskGenerator"]

MASK_KINDS = ("multiblock", "random", "tube", "causal")


class MaskGenerator(Protocol):
    grid: tuple[int, int, int]

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskPair]: ...


def _vjepa_blocks() -> list[BlockConfig]:
    """V-JEPA's two configs: short-range (8 x 0.15 of the frame) and long-range (2 x 0.7), spanning all frames."""
    return [BlockConfig(num_blocks=8, spatial_scale=[0.15, 0.15]),
            BlockConfig(num_blocks=2, spatial_scale=[0.7, 0.7])]


@dataclass
class MaskConfig:
    kind: str = field(default="multiblock", metadata=ALWAYS)   # multiblock | random | tube | causal
    # multiblock: one MaskPair per entry
    blocks: list[BlockConfig] = field(default_factory=_vjepa_blocks, metadata=ALWAYS)
    # random / tube: masked fraction; causal: fraction of time steps that are target
    ratio: float = field(default=0.9, metadata=ALWAYS)
    # random / tube / causal: independent (context, target) pairs per clip
    num_pairs: int = field(default=1, metadata=ALWAYS)
    # multiblock: redraw a sample's blocks when fewer context tokens remain
    min_context: int = field(default=1, metadata=ALWAYS)
    # multiblock: rows of different lengths are cut to the batch's shortest (V-JEPA's scheme; drops tokens, more
    # the larger the batch) or padded to the longest with attention / loss masks (keeps every token)
    equalize: str = field(default="cut", metadata=UNLESS_DEFAULT)
    # multiblock cut: 0 cuts the whole global batch to its shortest row; N cuts each N consecutive clips to theirs,
    # as V-JEPA's collator cuts each GPU's batch (the paper presets: 24 clips), with block sizes drawn per group
    # too; the groups' rows are then padded to the longest. A property of the config, not of the process count.
    cut_group: int = field(default=0, metadata=UNLESS_DEFAULT)

    def __post_init__(self):
        if self.kind not in MASK_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MASK_KINDS)}; got {self.kind!r}")
        if not self.blocks:
            raise ValueError("blocks must list at least one BlockConfig")
        for block in self.blocks:
            if not isinstance(block, BlockConfig):
                raise ValueError(f"blocks must hold BlockConfig entries, got {type(block).__name__}")
        if not 0 < self.ratio < 1:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {self.num_pairs}")
        if self.kind == "multiblock" and self.num_pairs != 1:
            raise ValueError(f"num_pairs must be 1 for kind 'multiblock' (it makes one pair per entry of blocks), "
                             f"got {self.num_pairs}")
        if self.equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {', '.join(EQUALIZE)}; got {self.equalize!r}")
        if self.cut_group < 0 or (self.cut_group and (self.kind != "multiblock" or self.equalize != "cut")):
            raise ValueError(f"cut_group must be 0, or >= 1 with kind 'multiblock' and equalize 'cut'; got "
                             f"{self.cut_group} with kind {self.kind!r}, equalize {self.equalize!r}")
        if self.min_context < 1:
            raise ValueError(f"min_context must be >= 1, got {self.min_context}")


def num_mask_pairs(cfg: MaskConfig) -> int:
    """How many (context, target) pairs a generator yields per clip (the predictor keeps one mask token each)."""
    return len(cfg.blocks) if cfg.kind == "multiblock" else cfg.num_pairs


def build_mask_generator(cfg: MaskConfig, grid: tuple[int, int, int]) -> MaskGenerator:
    """The generator for cfg.kind on a (T, H, W) token grid; ValueError if the grid cannot hold that mask."""
    if cfg.kind == "multiblock":
        return MultiBlockMaskGenerator(grid, cfg.blocks, cfg.min_context, cfg.equalize, cfg.cut_group)
    simple_kinds = {"random": RandomTokenMaskGenerator, "tube": TubeMaskGenerator, "causal": CausalMaskGenerator}
    if cfg.kind not in simple_kinds:
        raise ValueError(f"kind must be one of {', '.join(MASK_KINDS)}; got {cfg.kind!r}")
    return simple_kinds[cfg.kind](grid, cfg.ratio, cfg.num_pairs)
