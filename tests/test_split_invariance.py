"""One step, whatever the split: with padded masks (rows of different lengths), 2 processes x 2 micro-batches
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
    stages = {"student": [f"objective.teacher_checkpoint={run_dir_for(teacher)}"], "vjepa": [], "teacher": []}
    whole = {s: micro_config(s, f"{s}-whole", *PADDED, *extra, steps=STEPS) for s, extra in stages.items()}
    split = {s: micro_config(s, f"{s}-split", *PADDED, *extra, "train.accumulate=2", steps=STEPS)
             for s, extra in stages.items()}
    for cfg in whole.values():
        train(cfg)
    mp.start_processes(_ranks_main, args=(_free_port(), list(split.values())), nprocs=2, start_method="spawn")
    for stage in stages:
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
