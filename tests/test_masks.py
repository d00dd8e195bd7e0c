"""Mask generators: index invariants (property tests), ratios, block geometry, determinism, no positional bias."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from salt.masks import (BlockConfig, MaskConfig, MultiBlockMaskGenerator, build_mask_generator,
                        cut_to_equal_lengths, random_subset)

FAST = settings(max_examples=40, deadline=None)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_valid_pair(pair, batch_size: int, num_tokens: int, min_context: int = 1) -> None:
    for idx in (pair.context, pair.target):
        assert idx.dtype == torch.int64
        assert idx.dim() == 2 and idx.shape[0] == batch_size and idx.shape[1] >= 1
        assert 0 <= int(idx.min()) and int(idx.max()) < num_tokens
        assert (idx[:, 1:] > idx[:, :-1]).all(), "rows must be sorted ascending without repeats"
    assert pair.context.shape[1] >= min_context
    both = torch.cat([pair.context, pair.target], dim=1).sort(dim=1).values
    assert (both[:, 1:] > both[:, :-1]).all(), "context and target must be disjoint per row"


def assert_same_masks(pairs_a, pairs_b) -> None:
    assert len(pairs_a) == len(pairs_b)
    for a, b in zip(pairs_a, pairs_b):
        assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)


def coords(idx: torch.Tensor, grid):
    """Flat token indices -> (t, h, w) coordinate tensors (row-major: t*H*W + h*W + w)."""
    _, height, width = grid
    return idx // (height * width), (idx // width) % height, idx % width


# ---------------------------------------------------------------- property tests

@st.composite
def block_configs(draw):
    """Blocks of at most 0.3 of the frame: one never fills a frame, so some context can always be left."""
    def scale_range(low, high):
        a = draw(st.floats(low, high))
        return [a, draw(st.floats(a, high))]
    return BlockConfig(num_blocks=draw(st.integers(1, 3)), spatial_scale=scale_range(0.01, 0.3),
                       temporal_scale=scale_range(0.05, 1.0), aspect_ratio=scale_range(0.5, 2.0))


grids = st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9)).filter(lambda g: g[1] * g[2] >= 2)


@FAST
@given(grid=grids, blocks=st.lists(block_configs(), min_size=1, max_size=3), batch_size=st.integers(1, 12),
       seed=st.integers(0, 2**31))
def test_multiblock_pairs_are_valid_and_deterministic(grid, blocks, batch_size, seed):
    gen = build_mask_generator(MaskConfig(kind="multiblock", blocks=blocks), grid)
    pairs = gen(batch_size, seeded(seed))
    assert len(pairs) == len(blocks)
    for pair in pairs:
        assert_valid_pair(pair, batch_size, math.prod(grid))
    assert_same_masks(pairs, gen(batch_size, seeded(seed)))


@FAST
@given(kind=st.sampled_from(["random", "tube", "causal"]),
       grid=st.tuples(st.integers(2, 6), st.integers(1, 9), st.integers(1, 9)).filter(lambda g: g[1] * g[2] >= 2),
       ratio=st.floats(0.01, 0.99), num_pairs=st.integers(1, 3), batch_size=st.integers(1, 12),
       seed=st.integers(0, 2**31))
def test_simple_pairs_are_valid_and_deterministic(kind, grid, ratio, num_pairs, batch_size, seed):
    gen = build_mask_generator(MaskConfig(kind=kind, ratio=ratio, num_pairs=num_pairs), grid)
    pairs = gen(batch_size, seeded(seed))
    assert len(pairs) == num_pairs
    for pair in pairs:
        assert_valid_pair(pair, batch_size, math.prod(grid))
        assert pair.context.shape[1] + pair.target.shape[1] == math.prod(grid)  # nothing is cut
    assert_same_masks(pairs, gen(batch_size, seeded(seed)))


# ---------------------------------------------------------------- ratios and structure

@pytest.mark.parametrize("kind", ["random", "tube"])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_random_and_tube_mask_the_configured_ratio(kind, ratio):
    grid = (4, 8, 8)
    gen = build_mask_generator(MaskConfig(kind=kind, ratio=ratio), grid)
    fractions = [pair.target.shape[1] / 256 for seed in range(20) for pair in gen(16, seeded(seed))]
    assert abs(sum(fractions) / len(fractions) - ratio) <= 0.05


def test_random_masks_every_token_equally_often():
    gen = build_mask_generator(MaskConfig(kind="random", ratio=0.75), (4, 8, 8))
    generator, hits, rows = seeded(0), torch.zeros(256), 0
    for _ in range(100):
        (pair,) = gen(64, generator)
        hits += torch.bincount(pair.target.flatten(), minlength=256)
        rows += 64
    frequency = hits / rows  # std per token ~ sqrt(.75 * .25 / 6400) = 0.005
    assert frequency.min() > 0.72 and frequency.max() < 0.78
    assert not torch.equal(pair.target[0], pair.target[1]), "each sample must get its own mask"


def test_tube_masks_whole_tubes():
    grid = (4, 8, 8)
    (pair,) = build_mask_generator(MaskConfig(kind="tube", ratio=0.75), grid)(8, seeded(0))
    assert pair.target.shape[1] == 4 * 48
    for row in pair.target:
        t, h, w = coords(row, grid)
        positions = (h * 8 + w).view(4, 48)  # time-major: each frame holds the same 48 positions
        assert (positions == positions[0]).all()
        assert torch.equal(t.view(4, 48), torch.arange(4)[:, None].expand(4, 48))
    assert not torch.equal(pair.target[0], pair.target[1])


@pytest.mark.parametrize("frames, ratio, target_steps", [
    (8, 0.5, 4), (10, 0.3, 3), (8, 0.9, 7), (4, 0.99, 3), (4, 0.01, 1), (2, 0.5, 1)])
def test_causal_targets_exactly_the_last_time_steps(frames, ratio, target_steps):
    grid = (frames, 3, 5)
    (pair,) = build_mask_generator(MaskConfig(kind="causal", ratio=ratio), grid)(3, seeded(0))
    split = (frames - target_steps) * 15
    assert torch.equal(pair.context, torch.arange(split).expand(3, -1))
    assert torch.equal(pair.target, torch.arange(split, frames * 15).expand(3, -1))


def test_multiblock_blocks_share_one_size_per_batch_but_not_positions():
    grid = (4, 8, 8)
    blocks = [BlockConfig(num_blocks=1, spatial_scale=[0.25, 0.25], temporal_scale=[0.5, 0.5],
                          aspect_ratio=[1.0, 1.0])]
    (pair,) = build_mask_generator(MaskConfig(blocks=blocks), grid)(32, seeded(0))
    assert pair.target.shape[1] == 2 * 4 * 4  # int(4 * 0.5) frames, round(sqrt(int(64 * 0.25))) square
    for row in pair.target:
        extents = [int(c.max() - c.min()) + 1 for c in coords(row, grid)]
        assert extents == [2, 4, 4], "the target must be one solid box"
    corners = {tuple(int(c.min()) for c in coords(row, grid)) for row in pair.target}
    assert len(corners) > 1, "block positions must be drawn per sample"


def test_multiblock_block_size_varies_between_batches():
    gen = MultiBlockMaskGenerator((4, 8, 8), [BlockConfig(spatial_scale=[0.1, 0.6], temporal_scale=[0.25, 1.0])])
    generator = seeded(0)
    sizes = {gen.sample_block_size(gen.blocks[0], generator) for _ in range(20)}
    assert len(sizes) > 3


def test_multiblock_default_masks_large_fractions_on_the_paper_grid():
    """V-JEPA masks: 8 x 0.15 (short-range) and 2 x 0.7 (long-range) on 8 x 14 x 14 tokens. Measured here
    (batch 64): uncut target 0.63 / 0.81, after the equal-length cut target 0.45 / 0.70, context 0.20 / 0.06."""
    grid, num_tokens = (8, 14, 14), 8 * 14 * 14
    gen = build_mask_generator(MaskConfig(), grid)
    generator = seeded(0)
    target, context = torch.zeros(2), torch.zeros(2)
    draws = 5
    for _ in range(draws):
        pairs = gen(64, generator)
        assert len(pairs) == 2
        for i, pair in enumerate(pairs):
            assert_valid_pair(pair, 64, num_tokens)
            target[i] += pair.target.shape[1] / num_tokens / draws
            context[i] += pair.context.shape[1] / num_tokens / draws
    short_range, long_range = 0, 1
    assert 0.35 < target[short_range] < 0.55 and 0.12 < context[short_range] < 0.28
    assert 0.62 < target[long_range] < 0.78 and context[long_range] < 0.1
    assert target[long_range] > target[short_range]


def test_multiblock_redraws_samples_below_min_context():
    """Two 3 x 3 blocks (all frames) on a 4 x 4 frame leave 7, 4 or 2 free positions; 2 (a quarter of the
    samples) is below min_context and must be redrawn."""
    grid = (2, 4, 4)
    blocks = [BlockConfig(num_blocks=2, spatial_scale=[0.5, 0.5], aspect_ratio=[1.0, 1.0])]
    gen = build_mask_generator(MaskConfig(blocks=blocks, min_context=8), grid)
    generator = seeded(0)
    for _ in range(10):
        (target,) = gen.sample_target_masks(32, generator)
        assert ((~target).sum(dim=1) >= 8).all()
        (pair,) = gen(32, generator)
        assert_valid_pair(pair, 32, 32, min_context=8)


def test_multiblock_impossible_context_is_a_clear_error():
    blocks = [BlockConfig(num_blocks=1, spatial_scale=[1.0, 1.0], aspect_ratio=[1.0, 1.0])]
    gen = build_mask_generator(MaskConfig(blocks=blocks), (2, 4, 4))
    with pytest.raises(ValueError, match="min_context"):
        gen(4, seeded(0))


# ---------------------------------------------------------------- the equal-length cut

def test_random_subset_picks_k_uniformly_among_members():
    members = torch.zeros(4000, 12, dtype=torch.bool)
    members[:, 2:10] = True
    chosen = random_subset(members, 3, seeded(0))
    assert (chosen.sum(dim=1) == 3).all()
    assert not (chosen & ~members).any()
    frequency = chosen[:, 2:10].float().mean(dim=0)  # 3 of 8: 0.375 each, std ~0.008
    assert (frequency - 0.375).abs().max() < 0.03


def late_minus_early(hits: torch.Tensor, grid) -> list[float]:
    """Per axis (t, h, w): (count in the late half - count in the early half) / total count."""
    cube = hits.view(grid)
    imbalance = []
    for axis, extent in enumerate(grid):
        half = extent // 2
        late, early = cube.narrow(axis, extent - half, half).sum(), cube.narrow(axis, 0, half).sum()
        imbalance.append(float((late - early) / cube.sum()))
    return imbalance


def test_equal_length_cut_does_not_favour_low_indices():
    """Uniform block positions are symmetric under reversing any axis, so late / bottom / right tokens must be
    kept as often as early / top / left ones (measured: |imbalance| ~0.002, ~30% of target tokens cut).
    Keeping each row's smallest indices (V-JEPA's cut) gives about -0.42 on the time axis."""
    grid, num_tokens = (4, 8, 8), 256
    gen = build_mask_generator(MaskConfig(blocks=[BlockConfig(num_blocks=8)]), grid)
    generator = seeded(0)
    kept_target, kept_context, kept_by_truncation = (torch.zeros(num_tokens) for _ in range(3))
    uncut_target = 0
    for _ in range(60):
        (target,) = gen.sample_target_masks(64, generator)
        pair = cut_to_equal_lengths(target, generator)
        uncut_target += int(target.sum())
        kept_target += torch.bincount(pair.target.flatten(), minlength=num_tokens)
        kept_context += torch.bincount(pair.context.flatten(), minlength=num_tokens)
        shortest = pair.target.shape[1]
        smallest_first = torch.where(target, torch.arange(num_tokens), num_tokens).sort(dim=1).values[:, :shortest]
        kept_by_truncation += torch.bincount(smallest_first.flatten(), minlength=num_tokens)
    assert kept_target.sum() < 0.8 * uncut_target, "the check needs rows that really are cut"
    for kept in (kept_target, kept_context):
        assert max(abs(x) for x in late_minus_early(kept, grid)) < 0.02
    assert late_minus_early(kept_by_truncation, grid)[0] < -0.1  # the check can tell a biased cut


# ---------------------------------------------------------------- determinism

@pytest.mark.parametrize("kind", ["multiblock", "random", "tube"])
def test_masks_follow_only_the_generator_state(kind):
    gen = build_mask_generator(MaskConfig(kind=kind), (4, 8, 8))
    torch.manual_seed(123)  # the global RNG must play no part
    first = gen(8, seeded(5))
    torch.manual_seed(456)
    assert_same_masks(first, gen(8, seeded(5)))
    other_seed = gen(8, seeded(6))
    assert any(not torch.equal(a.target, b.target) for a, b in zip(first, other_seed))
    generator = seeded(5)
    gen(8, generator)
    next_step = gen(8, generator)
    assert any(not torch.equal(a.target, b.target) for a, b in zip(first, next_step))


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("make, field", [
    (lambda: MaskConfig(kind="blocky"), "kind must be one of multiblock, random, tube, causal"),
    (lambda: MaskConfig(ratio=0.0), "ratio"),
    (lambda: MaskConfig(ratio=1.0), "ratio"),
    (lambda: MaskConfig(num_pairs=0), "num_pairs"),
    (lambda: MaskConfig(kind="multiblock", num_pairs=2), "num_pairs"),
    (lambda: MaskConfig(min_context=0), "min_context"),
    (lambda: MaskConfig(blocks=[]), "blocks"),
    (lambda: MaskConfig(blocks=[{"num_blocks": 2}]), "blocks"),
    (lambda: BlockConfig(num_blocks=0), "num_blocks"),
    (lambda: BlockConfig(spatial_scale=[0.0, 0.5]), "spatial_scale"),
    (lambda: BlockConfig(spatial_scale=[0.5, 0.4]), "spatial_scale"),
    (lambda: BlockConfig(spatial_scale=[0.5, 1.2]), "spatial_scale"),
    (lambda: BlockConfig(spatial_scale=[0.5]), "spatial_scale"),
    (lambda: BlockConfig(temporal_scale=[0.5, 1.5]), "temporal_scale"),
    (lambda: BlockConfig(aspect_ratio=[0.0, 1.0]), "aspect_ratio"),
    (lambda: BlockConfig(aspect_ratio=[2.0, 1.0]), "aspect_ratio"),
])
def test_bad_configs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize("kind, grid, message", [
    ("multiblock", (0, 4, 4), "grid"),
    ("multiblock", (4, 4), "grid"),
    ("random", (2.0, 4, 4), "grid"),
    ("random", (1, 1, 1), "2 tokens"),
    ("tube", (4, 1, 1), "2 spatial positions"),
    ("causal", (1, 4, 4), "2 time steps"),
])
def test_grids_that_cannot_hold_the_mask_are_rejected(kind, grid, message):
    with pytest.raises(ValueError, match=message):
        build_mask_generator(MaskConfig(kind=kind), grid)


def test_min_context_must_fit_the_grid_and_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="min_context"):
        build_mask_generator(MaskConfig(min_context=32), (2, 4, 4))
    for kind in ["multiblock", "random", "tube", "causal"]:
        with pytest.raises(ValueError, match="batch_size"):
            build_mask_generator(MaskConfig(kind=kind), (2, 4, 4))(0, seeded(0))
