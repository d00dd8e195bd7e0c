"""One step, whatever the split: with padded masks (rows of different lengths: mask.equalize=pad, or the cut per
group of clips, mask.cut_group), 2 processes x 2 micro-batches
compute the step of 1 process x 1 micro-batch on the same global batch, because every micro-batch divides its
loss by the global batch's count of valid target tokens (MaskPair.spread_over). Weighting each micro-batch or
process alike instead (its own token mean) fails this test: checked by hand, loss differences of ~1e-3."""
import os

import pytest
import torch
import torch.multiprocessing as mp

from salt.checkpoint import load_checkpoint
from salt.layout import read_metrics
from salt.train.distributed import DistributedContext
from salt.train.loop import run_dir_for, train
from tests.test_distributed import _assert_close_weights, _free_port

STEPS = 4
PADDED = ["mask.kind=multiblock", "mask.equalize=pad", "train.batch_size=8",
          "mask.blocks=[{num_blocks: 2, spatial_scale: [0.2, 0.4]}, {num_blocks: 1, spatial_scale: [0.3, 0.6]}]"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _ranks_main(rank, port, configs):
    """One of 2 processes: one process group, each config trained in turn (2 micro-batches per step)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with DistributedContext.from_env("cpu") as context:
        for cfg in configs:
            train(cfg, dist=context)


def test_padded_masks_give_the_same_step_on_any_split(micro_config, tmp_path):
    teacher = micro_config("teacher", "teacher", steps=2)
    train(teacher)
    # padded masks for each method, and V-JEPA with the cut per group of 2 clips (groups padded to the longest)
    cases = {"student": ("student", [*PADDED, f"objective.teacher_checkpoint={run_dir_for(teacher)}"]),
             "vjepa": ("vjepa", PADDED), "teacher": ("teacher", PADDED),
             "vjepa-cut-group": ("vjepa", [*PADDED, "mask.equalize=cut", "mask.cut_group=2"])}
    whole = {c: micro_config(s, f"{c}-whole", *extra, steps=STEPS) for c, (s, extra) in cases.items()}
    split = {c: micro_config(s, f"{c}-split", *extra, "train.accumulate=2", steps=STEPS)
             for c, (s, extra) in cases.items()}
    for cfg in whole.values():
        train(cfg)
    mp.start_processes(_ranks_main, args=(_free_port(), list(split.values())), nprocs=2, start_method="spawn")
    for stage in cases:
        one = read_metrics(run_dir_for(whole[stage]) / "metrics.jsonl")
        two = read_metrics(run_dir_for(split[stage]) / "metrics.jsonl")
        assert [r["step"] for r in two] == list(range(STEPS))
        worst = max(abs(b["loss"] - a["loss"]) / abs(a["loss"]) for a, b in zip(one, two))
        print(f"{stage}: max relative loss difference, 2 processes x 2 micro-batches vs 1 x 1: {worst:.2e}")
        assert worst <= 1e-5, stage
        want = load_checkpoint(run_dir_for(whole[stage]))["models"]
        got = load_checkpoint(run_dir_for(split[stage]))["models"]
        for name in want:
            for key, value in want[name].items():
                _assert_close_weights(got[name][key], value, f"{stage} {name}.{key}")
        worst = max((got[n][k] - v).abs().max().item() for n in want for k, v in want[n].items()
                    if not k.endswith("attn.qkv.bias"))   # (the key bias: see _assert_close_weights)
        print(f"{stage}: max weight difference {worst:.1e}")
        assert worst <= 1e-5, stage


def test_a_global_count_spread_over_parts_adds_up_to_the_token_mean():
    """The arithmetic alone: 4 row groups of a padded batch, each divided by the whole count / 4, average to the
    batch's token mean; unpadded pairs are left alone."""
    from salt.masks import MaskConfig, build_mask_generator
    from salt.objectives.base import token_mean
    (pair, _) = build_mask_generator(MaskConfig(kind="multiblock", equalize="pad"), (4, 6, 6))(
        16, torch.Generator().manual_seed(0))
    assert pair.target_valid.sum(dim=1).unique().numel() > 1   # rows of different lengths
    error = torch.rand(*pair.target.shape, 3, generator=torch.Generator().manual_seed(1))
    spread = pair.spread_over(4)
    parts = [token_mean(error[rows], spread.target_valid[rows], spread.target_count)
             for rows in (slice(i * 4, (i + 1) * 4) for i in range(4))]
    torch.testing.assert_close(torch.stack(parts).mean(), token_mean(error, pair.target_valid), rtol=1e-6, atol=0)
    cut = build_mask_generator(MaskConfig(kind="multiblock"), (4, 6, 6))(16, torch.Generator().manual_seed(0))[0]
    assert cut.spread_over(4) is cut and cut.map(lambda t: t).target_count is None


def test_the_cut_per_group_keeps_each_groups_shortest_row_and_draws_its_own_block_sizes():
    from salt.masks import MaskConfig, build_mask_generator
    grid = (4, 8, 8)
    whole = build_mask_generator(MaskConfig(kind="multiblock"), grid)
    grouped = build_mask_generator(MaskConfig(kind="multiblock", cut_group=6), grid)
    for a, b in zip(whole(6, torch.Generator().manual_seed(0)), grouped(6, torch.Generator().manual_seed(0))):
        assert torch.equal(a.context, b.context) and torch.equal(a.target, b.target)   # one group: the plain cut
        assert b.context_valid is None
    targets = grouped.sample_target_masks(24, torch.Generator().manual_seed(1))
    pairs = grouped(24, torch.Generator().manual_seed(1))
    for target, pair in zip(targets, pairs):
        for g in range(4):
            rows = slice(6 * g, 6 * g + 6)
            for part, valid, idx in (((~target)[rows], pair.context_valid[rows], pair.context[rows]),
                                     (target[rows], pair.target_valid[rows], pair.target[rows])):
                assert (valid.sum(dim=1) == part.sum(dim=1).min()).all()   # every row cut to its group's shortest
                kept = idx[:, :int(valid.sum(dim=1).max())]
                assert part.gather(1, kept).all()   # kept tokens are the row's own
    # block sizes drawn per group: with one block per clip, a clip's target is its block, the same size in a group
    from salt.masks import BlockConfig
    one_block = build_mask_generator(MaskConfig(kind="multiblock", cut_group=6, blocks=[
        BlockConfig(num_blocks=1, spatial_scale=[0.1, 0.6])]), grid)
    (target,) = one_block.sample_target_masks(24, torch.Generator().manual_seed(2))
    sizes = target.sum(dim=1).view(4, 6)
    assert (sizes == sizes[:, :1]).all() and sizes[:, 0].unique().numel() > 1
    trimmed = pairs[0].map(lambda t: t[:6]).trimmed()
    assert trimmed.context_valid.all() and trimmed.target_valid.all()   # one group: no padding left
    with pytest.raises(ValueError, match="cut_group"):
        MaskConfig(kind="multiblock", equalize="pad", cut_group=4)


def test_the_estimate_counts_what_each_choice_keeps_and_computes(micro_config):
    """tokens_per_clip (the dry run's mask line; FLOPs and memory use the computed lengths): the whole-batch cut
    computes what it keeps; pad keeps each clip's own tokens and computes more (padding); the cut per group keeps
    more than the whole-batch cut."""
    from salt.study.estimate import step_flops, tokens_per_clip
    blocks = "mask.blocks=[{num_blocks: 3, spatial_scale: [0.1, 0.3]}]"
    common = ["mask.kind=multiblock", blocks, "train.batch_size=16"]
    cut, group, pad = (tokens_per_clip(micro_config("vjepa", "e", *common, *extra))[0]
                       for extra in ([], ["mask.cut_group=4"], ["mask.equalize=pad"]))
    assert cut["context_kept"] == cut["context_computed"]
    assert abs(group["context_kept"] - group["context_computed"]) < 1   # a group's rows are as long (rounded mean)
    assert cut["context_kept"] < group["context_kept"] < pad["context_kept"] < pad["context_computed"]
    flops = [step_flops(micro_config("vjepa", "e", *common, *extra)) for extra in ([], ["mask.equalize=pad"])]
    assert flops[0] < flops[1]   # padding is counted
