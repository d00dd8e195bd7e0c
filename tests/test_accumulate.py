"""Gradient accumulation (train.accumulate): k micro-batches per optimizer step compute the step of the whole
batch. Same masks (drawn for the global batch), same schedules, same FLOPs; weights equal to one big batch within
fp32 summation error."""
from __future__ import annotations

import pytest
import torch

from salt.checkpoint import load_checkpoint
from salt.train.loop import Trainer, run_dir_for, train
from salt.layout import read_metrics

# fp32: micro-batch gradients are summed in another order than the whole batch's, so they agree to rounding,
# not bit for bit. AdamW divides each gradient element by its own running magnitude, which amplifies the
# difference where a gradient is near zero: measured by hand on these configs, after 3 steps the weights differed
# by at most 1.1e-5 (pixel), 7.4e-6 (salt) and 1.0e-5 (vjepa), while steps 1-3 moved them by up to 1.6e-3.
GRAD_RTOL = 1e-5
WEIGHT_ATOL = 5e-5


@pytest.fixture
def teacher_dir(micro_config):
    cfg = micro_config("teacher", "teacher", steps=2)
    train(cfg)
    return run_dir_for(cfg)


@pytest.mark.parametrize("stage", ["teacher", "student", "vjepa"])
def test_batch_16_in_four_micro_batches_matches_one_batch_of_16(micro_config, teacher_dir, stage):
    extra = [f"objective.teacher_checkpoint={teacher_dir}"] if stage == "student" else []
    whole = micro_config(stage, "whole", "train.batch_size=16", *extra, steps=3)
    parts = micro_config(stage, "parts", "train.batch_size=16", "train.accumulate=4", *extra, steps=3)
    a, b = train(whole), train(parts)
    assert a["flops"]["run"] == pytest.approx(b["flops"]["run"], rel=1e-12)   # per optimizer step, not per micro
    log_a, log_b = read_metrics(run_dir_for(whole) / "metrics.jsonl"), read_metrics(run_dir_for(parts) / "metrics.jsonl")
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b] == [0, 1, 2]
    for ra, rb in zip(log_a, log_b):
        assert ra["lr"] == rb["lr"] and ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)
    wa, wb = load_checkpoint(run_dir_for(whole))["models"], load_checkpoint(run_dir_for(parts))["models"]
    assert max((wa[m][k] - wb[m][k]).abs().max().item() for m in wa for k in wa[m]) <= WEIGHT_ATOL


@pytest.mark.parametrize("stage", ["teacher", "vjepa"])
def test_accumulated_gradient_is_the_whole_batch_gradient(micro_config, stage):
    """The first step's gradient (before the optimiser touches anything), whole batch vs 4 micro-batches."""
    grads = []
    for name, extra in (("whole", []), ("parts", ["train.accumulate=4"])):
        trainer = Trainer(micro_config(stage, name, "train.batch_size=16", *extra, steps=1))
        trainer.optimizer.step = lambda: None   # keep the gradient of step 0, leave the weights alone
        batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_sampler=[[(i, i) for i in range(16)]])))
        trainer.step(0, batch)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
    whole, parts = grads
    assert (whole - parts).abs().max() <= GRAD_RTOL * whole.abs().max()
    assert not torch.equal(whole, parts)   # really summed from micro-batches (bit-equal would mean k was ignored)


def test_accumulate_must_divide_each_process_share(micro_config):
    with pytest.raises(ValueError, match="accumulate must be >= 1 and divide batch_size"):
        micro_config("teacher", "t", "train.accumulate=3")
    cfg = micro_config("teacher", "t", "train.accumulate=8")
    from salt.train.distributed import DistributedContext
    two = DistributedContext(world_size=2, rank=0)
    with pytest.raises(ValueError, match="train.accumulate=8 does not divide the 4 clips each of the 2 processes"):
        Trainer(cfg, dist=two)
