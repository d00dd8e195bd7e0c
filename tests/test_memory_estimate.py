"""The dry run's per-GPU memory estimate (salt.study.estimate.step_memory) and its advice. Its activation model
was checked against measured peak memory on CPU by benchmarks/memory_estimate.py (within 12%, benchmarks/README.md)."""
from __future__ import annotations

import pytest

from salt.config import load_config, resolve_config
from salt.flops import num_params
from salt.schema import RunConfig
from salt.study.estimate import GB, _meta_objective, fit_advice, step_memory


def _cfg(stage: str, *overrides: str) -> RunConfig:
    extra = ["objective.teacher_checkpoint=t"] if stage == "student" else []
    return load_config(RunConfig, [resolve_config(f"tiny_{stage}")], [*extra, *overrides])


@pytest.mark.parametrize("stage", ["teacher", "student", "vjepa"])
def test_states_are_16_bytes_a_trained_parameter_and_frozen_networks_4(stage):
    cfg = _cfg(stage)
    objective, _ = _meta_objective(cfg)
    trained = sum(num_params(m) for m in objective.trainable().values())
    frozen = 0 if stage == "teacher" else num_params(objective.target_encoder)   # frozen teacher / EMA copy
    m = step_memory(cfg)
    assert (m.weights, m.grads, m.optimizer, m.frozen) == pytest.approx(
        (4 * trained / GB, 4 * trained / GB, 8 * trained / GB, 4 * frozen / GB))
    # train.shard=fsdp: trained networks and the EMA target split over the devices, a frozen teacher whole
    sharded = step_memory(cfg, devices=4, shard=True)
    assert sharded.optimizer == pytest.approx(m.optimizer / 4) and sharded.grads == pytest.approx(m.grads / 4)
    assert sharded.frozen == pytest.approx(m.frozen / 4 if stage == "vjepa" else m.frozen)
    blocks = [num_params(b) for net in objective.trainable().values() for b in net.blocks]   # gathered one at a time
    root, block = trained - sum(blocks), max(blocks)
    # bf16 (the default): the root and two blocks gathered in bf16, one block's gradient in fp32 before its reduce
    assert sharded.gathered == pytest.approx((2 * (root + 2 * block) + 4 * block) / GB) and m.gathered == 0
    fp32 = step_memory(cfg, devices=4, shard=True, precision="fp32")
    assert fp32.gathered == pytest.approx(4 * (root + 3 * block) / GB)
    assert step_memory(cfg, devices=4, shard=None) == step_memory(cfg, devices=4)   # the config's own: none
    assert step_memory(_cfg(stage, "train.shard=fsdp"), devices=4) == sharded
    assert step_memory(cfg, devices=1, shard=True) == m   # one process is never sharded


def test_activations_follow_the_micro_batch_precision_and_checkpointing():
    cfg = _cfg("teacher")   # pixel: every network is trained, so activations are all block activations
    one = step_memory(cfg, precision="fp32")
    assert step_memory(cfg, devices=2, precision="fp32").activations == pytest.approx(one.activations / 2)
    assert step_memory(cfg, accumulate=4, precision="fp32").activations == pytest.approx(one.activations / 4)
    assert step_memory(cfg, precision="bf16").activations == pytest.approx(one.activations * 40 / 64)
    checkpointed = step_memory(cfg, precision="fp32", activation_checkpointing=True)
    assert checkpointed.activations < one.activations / 2
    with pytest.raises(ValueError, match="precision must be one of"):
        step_memory(cfg, precision="fp8")


def test_advice_names_a_setting_that_fits_or_says_why_none_does():
    cfg = load_config(RunConfig, [resolve_config("paper_vitl_student")],   # 64 clips per GPU: masks sample fast
                      ["objective.teacher_checkpoint=t", "train.batch_size=512"])
    full = step_memory(cfg, devices=8).total
    assert fit_advice(cfg, 8, full + 1) == ""
    advice = fit_advice(cfg, 8, full / 3)
    k = int(advice.split("train.accumulate=")[1].split()[0])
    assert step_memory(cfg, devices=8, accumulate=k).total <= full / 3 < step_memory(cfg, devices=8, accumulate=k // 2 or 1).total
    assert "does not fit even one clip" in fit_advice(cfg, 8, 1.0)


def test_advice_names_sharding_when_the_weights_alone_do_not_fit():
    cfg = load_config(RunConfig, [resolve_config("paper_vitl_student")],
                      ["objective.teacher_checkpoint=t", "train.batch_size=512"])
    one_clip = step_memory(cfg, devices=8, accumulate=64, activation_checkpointing=True)
    sharded = step_memory(cfg, devices=8, accumulate=64, activation_checkpointing=True, shard=True)
    budget = (one_clip.total + sharded.total) / 2   # only sharding makes it fit
    advice = fit_advice(cfg, 8, budget)
    assert "train.shard=fsdp" in advice, advice
    k = int(advice.split("train.accumulate=")[1].split()[0])
    checkpointing = "model.activation_checkpointing=true" in advice
    assert step_memory(cfg, devices=8, accumulate=k, activation_checkpointing=checkpointing, shard=True).total <= budget
    assert "train.shard=fsdp" in fit_advice(cfg, 1, 1.0)   # one GPU: shard over more of them


def test_dry_run_names_the_runs_that_do_not_fit(tmp_path, capsys):
    from studies import compute_allocation
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path / "s"),
                                    "--gpu-mem-gb", "0.0001"]) == 0
    out = capsys.readouterr().out
    assert "mem GB" in out and "runs do not fit 0.0001 GB per GPU (1 GPUs per run)" in out
    assert "does not fit even one clip per micro-batch" in out
