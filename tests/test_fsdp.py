"""Sharded training (train.shard=fsdp, FSDP2's fully_shard) with 2 gloo processes on CPU: the same run as one
process and as 2 unsharded processes, exact resume under sharding, and checkpoints in the one-process format.

One spawn of 2 processes runs every sharded and unsharded 2-process run of both latent methods (SALT: frozen
teacher kept whole, activation checkpointing on; V-JEPA: EMA target sharded beside the encoder, 2 micro-batches
per step), since starting processes costs more than these micro runs."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.multiprocessing as mp

from salt.checkpoint import load_checkpoint
from salt.layout import RunLayout, read_metrics
from salt.train.loop import Trainer, run_dir_for, train
from tests.test_distributed import Stop, _free_port

STEPS, STOP = 4, 2   # the resumed run stops after step 2 and resumes from the checkpoint before it
STAGES = ("student", "vjepa")

pytestmark = pytest.mark.usefixtures("one_thread")


def _rank_main(rank, ports, runs):
    """One of 2 processes: each (cfg, stop_at) run in turn under its own rendezvous ports (start, resume)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    for (cfg, stop_at), (first, second) in zip(runs, ports):
        os.environ["MASTER_PORT"] = str(first)
        try:
            train(cfg, callbacks=[_stopper(stop_at)])
        except Stop:
            os.environ["MASTER_PORT"] = str(second)
            train(cfg, resume=True)
        assert not torch.distributed.is_initialized()


def _stopper(stop_at):
    seen = []   # dtypes of a block's weight as its forward computes with it (after FSDP's all-gather)

    def stop(trainer, step, record):
        if step == stop_at:
            raise Stop
        if trainer.cfg.train.shard == "fsdp":
            _assert_holds_what_the_estimate_says(trainer)
            fc1 = trainer.objective.encoder.blocks[0].mlp.fc1
            if step == 0:
                fc1.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
            else:   # bf16 runs gather and compute in bf16; fp32 runs in fp32
                assert seen and set(seen) == {trainer.amp_dtype or torch.float32}, (seen, trainer.amp_dtype)
    return stop


def _assert_holds_what_the_estimate_says(trainer):
    """Really sharded: this rank holds its half of the weights, gradients and AdamW moments of the trained networks
    (and of the EMA target), exactly as the dry run's memory estimate counts them (every sharded dimension is even
    here, so no padding); a frozen teacher whole."""
    from salt.study.estimate import GB, step_memory
    weight = trainer.objective.encoder.blocks[0].mlp.fc1.weight
    assert type(weight).__name__ == "DTensor" and weight.to_local().shape[0] * 2 == weight.shape[0]
    estimate = step_memory(trainer.cfg, devices=2)

    def local_bytes(tensors):
        return sum(t.to_local().numel() * t.element_size() if hasattr(t, "to_local") else t.numel() * t.element_size()
                   for t in tensors)
    moments = [v for s in trainer.optimizer.state.values() for k, v in s.items() if k.startswith("exp_avg")]
    assert local_bytes(trainer.params) == pytest.approx(estimate.weights * GB)
    assert local_bytes([p.grad for p in trainer.params]) == pytest.approx(estimate.grads * GB)
    assert local_bytes(moments) == pytest.approx(estimate.optimizer * GB)
    assert local_bytes(trainer.objective.target_encoder.parameters()) == pytest.approx(estimate.frozen * GB)


def _losses(cfg):
    return [r["loss"] for r in read_metrics(run_dir_for(cfg) / "metrics.jsonl")]


def _max_difference(a: dict, b: dict) -> float:
    return max((a[m][k] - b[m][k]).abs().max().item() for m in a for k in a[m])


def _assert_same_checkpoint(a: dict, b: dict, rng: bool = True):
    """Bit for bit: weights, optimizer state (moments and steps), step, counters, RNG."""
    for name in a["models"]:
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), f"{name}.{k}"
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i, values in oa["state"].items():
        for k, v in values.items():
            assert torch.equal(v, ob["state"][i][k]), f"optimizer state {i}.{k}"
    for key in ("step", "flops", "data_counts", "data", "masks"):
        assert a[key] == b[key], key
    assert not rng or torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture
def teacher_dir(micro_config):
    cfg = micro_config("teacher", "teacher", steps=2)
    train(cfg)
    return run_dir_for(cfg)


def test_fsdp_matches_one_process_and_unsharded_processes_and_resumes_exactly(micro_config, teacher_dir, tmp_path):
    def cfg(stage, name, *extra):
        teacher = [f"objective.teacher_checkpoint={teacher_dir}"] if stage == "student" else []
        # composed with activation checkpointing (salt) and gradient accumulation (vjepa), in every run alike
        composed = ["model.activation_checkpointing=true"] if stage == "student" else ["train.accumulate=2"]
        return micro_config(stage, f"{stage}-{name}", *teacher, *extra, *composed, steps=STEPS)

    runs = {}
    for stage in STAGES:
        runs[stage, "fsdp"] = (cfg(stage, "fsdp", "train.shard=fsdp"), None)
        runs[stage, "fsdp_resumed"] = (cfg(stage, "fsdp_resumed", "train.shard=fsdp"), STOP)
        runs[stage, "ddp"] = (cfg(stage, "ddp"), None)
        runs[stage, "fsdp_bf16"] = (cfg(stage, "fsdp_bf16", "train.shard=fsdp", "train.precision=bf16"), None)
    ports = [(_free_port(), _free_port()) for _ in runs]
    mp.start_processes(_rank_main, args=(ports, list(runs.values())), nprocs=2, start_method="spawn")

    for stage in STAGES:
        fsdp, resumed, ddp = (runs[stage, kind][0] for kind in ("fsdp", "fsdp_resumed", "ddp"))
        single = cfg(stage, "single", "train.shard=fsdp")   # one process: nothing to shard, the plain step
        train(single)
        # 1. Same run as one process and as 2 unsharded processes: losses, gradient norms, FLOPs, final weights.
        for other in (single, ddp):
            a = read_metrics(run_dir_for(other) / "metrics.jsonl")
            b = read_metrics(run_dir_for(fsdp) / "metrics.jsonl")
            assert [r["step"] for r in b] == list(range(STEPS))
            for ra, rb in zip(a, b):
                assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5), (stage, other.name, ra["step"])
                assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4), (stage, other.name, ra["step"])
                assert rb["flops"] == pytest.approx(ra["flops"], rel=1e-12)
            # Sums in another order (one process; with accumulation, FSDP reduce-scatters each micro-batch's gradient,
            # the unsharded path all-reduces their sum): measured up to 2.5e-5 apart (0 against the unsharded processes
            # without accumulation). AdamW moves each weight by up to lr (1e-4 to 1e-3 here) a step, so 1e-4 sees any
            # real divergence (tests/test_distributed.py: why the attention key bias moves by rounding).
            wa, wb = load_checkpoint(run_dir_for(other))["models"], load_checkpoint(run_dir_for(fsdp))["models"]
            assert wa.keys() == wb.keys() and _max_difference(wa, wb) < 1e-4, (stage, other.name)
            worst = max(abs(rb["loss"] - ra["loss"]) / abs(ra["loss"]) for ra, rb in zip(a, b))
            print(f"{stage}, fsdp vs {other.name}: max relative loss difference {worst:.1e}, "
                  f"max weight difference {_max_difference(wa, wb):.1e}")
        # bf16: weights gathered and used in bf16 (the hook in _stopper), gradients reduced in fp32, sharded weights
        # fp32; the same run as one bf16 process within bf16 rounding (norm weights and embeddings are rounded to
        # bf16 too, which autocast alone leaves in fp32)
        bf16 = cfg(stage, "single_bf16", "train.precision=bf16")
        train(bf16)
        worst = max(abs(b - a) / abs(a) for a, b in zip(_losses(bf16), _losses(runs[stage, "fsdp_bf16"][0])))
        print(f"{stage}, bf16 fsdp vs one bf16 process: max relative loss difference {worst:.1e}")
        assert worst < 1e-2, worst   # measured 1.1e-3 (salt), 1.3e-3 (vjepa)
        weights = load_checkpoint(run_dir_for(runs[stage, "fsdp_bf16"][0]))["models"]
        assert all(v.dtype == torch.float32 for m in weights.values() for v in m.values() if v.is_floating_point())
        # 2. Exact resume under sharding: stopped after step 2, resumed from the step-2 checkpoint = uninterrupted.
        assert _losses(resumed) == _losses(fsdp)
        # (not the saved global RNG: each start draws the DataLoader's base seed from it, so a resumed run's is one
        # draw further, sharded or not; nothing in a step draws from it)
        _assert_same_checkpoint(load_checkpoint(run_dir_for(resumed)), load_checkpoint(run_dir_for(fsdp)), rng=False)
        # 3. A sharded run's checkpoint is a one-process checkpoint: one process resumes it, and saves it back bit
        # for bit (weights, AdamW moments); going on from step 2, it ends where the sharded run ended (within the
        # rounding of sums in another order).
        source = RunLayout(run_dir_for(fsdp)).checkpoint(2)
        alone = cfg(stage, "alone")
        RunLayout(run_dir_for(alone)).checkpoints_dir.mkdir(parents=True)
        shutil.copy(source, RunLayout(run_dir_for(alone)).checkpoint(2))
        trainer = Trainer(alone, resume=True)
        assert trainer.start_step == 2
        _assert_same_checkpoint(load_checkpoint(trainer.save(2)), load_checkpoint(source))
        trainer.fit()
        assert _losses(alone) == pytest.approx(_losses(fsdp)[2:], rel=1e-5)
        assert _max_difference(load_checkpoint(run_dir_for(alone))["models"],
                               load_checkpoint(run_dir_for(fsdp))["models"]) < 1e-5


def test_shard_is_a_checked_scheduling_key(micro_config):
    """Sharding changes where weights live, not what a run computes: a study's run id ignores it; and a typo is an
    error naming the key."""
    from salt.identity import run_id
    sharded, plain = micro_config("vjepa", "a", "train.shard=fsdp"), micro_config("vjepa", "a")
    assert run_id(sharded, "study") == run_id(plain, "study")
    with pytest.raises(ValueError, match="shard must be one of none, fsdp; got 'fsd'"):
        micro_config("vjepa", "a", "train.shard=fsd")
