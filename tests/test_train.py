"""The training loop: exact resume, atomic checkpoints, done markers, NaN stops, teacher chains, logs."""
import json

import pytest
import torch

from salt.objectives import fingerprint
from salt import checkpoint as ckpt
from salt.checkpoint import load_checkpoint
from salt.layout import RunLayout
from salt.train.loop import NonFiniteLossError, Trainer, run_dir_for, train
from salt.layout import read_metrics


def _weights(run_dir):
    return load_checkpoint(run_dir)["models"]


def _assert_same_models(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}.{k} differs"


def _crash_after(trainer: Trainer, steps: int) -> None:
    """Run `trainer` until it has taken `steps` steps, then stop it as a kill would (KeyboardInterrupt)."""
    original_step, calls = trainer.step, []

    def crashing(step, batch):
        if len(calls) == steps:
            raise KeyboardInterrupt
        calls.append(step)
        return original_step(step, batch)
    trainer.step = crashing
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


@pytest.mark.parametrize("stage, accumulate", [("teacher", 1), ("vjepa", 1), ("vjepa", 2)])
def test_resume_mid_run_gives_identical_weights(micro_config, stage, accumulate):
    straight = micro_config(stage, "straight", f"train.accumulate={accumulate}", steps=6)
    train(straight)
    # Interrupted: the same run stopped after 3 steps (checkpoint at 2), then resumed to 6.
    interrupted = micro_config(stage, "resumed", f"train.accumulate={accumulate}", steps=6)
    _crash_after(Trainer(interrupted), 3)
    assert [s for s, _ in RunLayout(run_dir_for(interrupted)).checkpoints()] == [2]
    assert not (run_dir_for(interrupted) / "done.json").exists()
    summary = train(interrupted, resume=True)
    assert summary["steps"] == 6
    _assert_same_models(_weights(run_dir_for(straight)), _weights(run_dir_for(interrupted)))
    # ... and the same global RNG state (the DataLoader draws its workers' seed from its own generator)
    assert torch.equal(load_checkpoint(run_dir_for(straight))["rng"]["torch"],
                       load_checkpoint(run_dir_for(interrupted))["rng"]["torch"])
    # The metrics log has each step once, even though step 2 was logged before the crash and again after.
    steps = [r["step"] for r in read_metrics(run_dir_for(interrupted) / "metrics.jsonl")]
    assert steps == list(range(6))
    a = json.loads((run_dir_for(straight) / "done.json").read_text())
    assert summary["flops"]["run"] == pytest.approx(a["flops"]["run"])


def test_existing_run_without_resume_is_refused_and_done_run_is_skipped(micro_config):
    cfg = micro_config("teacher", "t", steps=2)
    first = train(cfg)
    # A finished run is never retrained or overwritten.
    mtime = (run_dir_for(cfg) / "done.json").stat().st_mtime_ns
    assert train(cfg) == first
    assert (run_dir_for(cfg) / "done.json").stat().st_mtime_ns == mtime
    (run_dir_for(cfg) / "done.json").unlink()
    with pytest.raises(RuntimeError, match="--resume"):
        Trainer(cfg)


def test_interrupted_checkpoint_write_leaves_previous_intact(micro_config, monkeypatch):
    cfg = micro_config("teacher", "t", steps=4)
    trainer = Trainer(cfg)
    good = trainer.save(2)
    before = good.read_bytes()
    real_save = torch.save

    def torn_save(obj, f):
        real_save(obj, f)
        f.truncate(100)      # half-written ...
        raise OSError("disk full")   # ... and the process fails mid-write
    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(4)
    monkeypatch.undo()
    assert [s for s, _ in RunLayout(run_dir_for(cfg)).checkpoints()] == [2]
    assert good.read_bytes() == before
    assert not list((run_dir_for(cfg) / "checkpoints").glob("*.tmp"))
    assert load_checkpoint(run_dir_for(cfg))["step"] == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "step_00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(micro_config):
    """A truncated step-4 checkpoint (a full disk, a killed copy): resume warns, moves it aside, continues from step
    2, and ends with the weights of an uninterrupted run; evaluation's "latest checkpoint" takes the same path."""
    straight = micro_config("teacher", "straight", steps=6)
    train(straight)
    cfg = micro_config("teacher", "damaged", steps=6)
    _crash_after(Trainer(cfg), 5)
    layout = RunLayout(run_dir_for(cfg))
    assert [s for s, _ in layout.checkpoints()] == [2, 4]
    latest = layout.checkpoint(4)
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(ckpt.CheckpointFallbackWarning, match="step_00000004.pt.*moved to step_00000004.pt.unreadable"):
        summary = train(cfg, resume=True)
    assert summary["steps"] == 6 and layout.set_aside(latest).is_file()
    _assert_same_models(_weights(run_dir_for(straight)), _weights(run_dir_for(cfg)))
    layout.checkpoint(6).write_bytes(b"damaged")   # evaluation of the latest: the same fallback
    with pytest.warns(ckpt.CheckpointFallbackWarning):
        assert load_checkpoint(run_dir_for(cfg))["step"] == 4


def test_no_readable_checkpoint_names_what_was_set_aside_and_a_rerun_starts_over(micro_config):
    cfg = micro_config("teacher", "all-bad", steps=4)
    train(cfg)
    layout = RunLayout(run_dir_for(cfg))
    layout.done.unlink()
    for _, path in layout.checkpoints():
        path.write_bytes(b"damaged")
    with pytest.warns(ckpt.CheckpointFallbackWarning), \
            pytest.raises(ckpt.UnreadableCheckpointError, match="no readable checkpoint.*step_00000004.pt.unreadable"):
        train(cfg, resume=True)
    assert layout.checkpoints() == [] and train(cfg, resume=True)["steps"] == 4


def test_nan_loss_stops_and_keeps_last_good_checkpoint(micro_config):
    cfg = micro_config("teacher", "nan", steps=6)
    trainer = Trainer(cfg)
    original = trainer.objective.loss

    def poisoned(batch, step):
        out = original(batch, step)
        return {**out, "loss": out["loss"] * float("nan")} if step == 3 else out
    trainer.objective.loss = poisoned
    with pytest.raises(NonFiniteLossError, match="step 3"):
        trainer.fit()
    assert [s for s, _ in RunLayout(run_dir_for(cfg)).checkpoints()] == [2]
    assert torch.isfinite(load_checkpoint(run_dir_for(cfg))["models"]["encoder"]["patch_embed.weight"]).all()


def test_teacher_student_chain_and_frozen_teacher(micro_config):
    teacher_cfg = micro_config("teacher", "teacher", steps=2)
    t = train(teacher_cfg)
    student_cfg = micro_config("student", "student", f"objective.teacher_checkpoint={run_dir_for(teacher_cfg)}",
                               "objective.teacher_check_every=1", steps=3)
    trainer = Trainer(student_cfg)
    teacher_before = fingerprint(trainer.objective.target_encoder)
    s = trainer.fit()
    assert torch.equal(fingerprint(trainer.objective.target_encoder), teacher_before)
    assert all(p.grad is None for p in trainer.objective.target_encoder.parameters())
    assert "target_encoder" not in load_checkpoint(run_dir_for(student_cfg))["models"]
    assert s["flops"]["teacher_stage"] == pytest.approx(t["flops"]["total"])
    # A SALT student is the next stage's teacher (3-stage chain); compute accumulates along the chain.
    third_cfg = micro_config("student", "third", f"objective.teacher_checkpoint={run_dir_for(student_cfg)}", steps=2)
    third = train(third_cfg)
    assert third["flops"]["teacher_stage"] == pytest.approx(s["flops"]["total"])
    assert third["flops"]["total"] > s["flops"]["total"] > t["flops"]["total"] > 0


def test_teacher_shape_mismatch_names_the_tensor(micro_config):
    teacher_cfg = micro_config("teacher", "teacher", steps=1)
    train(teacher_cfg)
    deeper = micro_config("student", "s1", f"objective.teacher_checkpoint={run_dir_for(teacher_cfg)}",
                          "objective.teacher.size=tiny")
    with pytest.raises(RuntimeError, match=r"missing tensors \['blocks\.2\."):
        Trainer(deeper)
    other_patch = micro_config("student", "s2", f"objective.teacher_checkpoint={run_dir_for(teacher_cfg)}",
                               "objective.teacher.patch_size=8")
    with pytest.raises(RuntimeError, match=r"tensor 'patch_embed.weight' has shape"):
        Trainer(other_patch)


def test_metrics_log_and_schedules(micro_config):
    cfg = micro_config("teacher", "t", "optim.lr=0.002", "optim.start_lr=0.0", "optim.warmup_steps=2", steps=5)
    train(cfg)
    records = read_metrics(run_dir_for(cfg) / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["lr"] == 0.0 and records[1]["lr"] == pytest.approx(0.001) and records[2]["lr"] == 0.002
    flops = [r["flops"] for r in records]
    assert all(b > a for a, b in zip(flops, flops[1:]))
    assert {"loss", "grad_norm", "weight_decay", "mean_prediction_loss"} <= set(records[0])


def test_plateau_warning_reaches_the_user(micro_config):
    cfg = micro_config("teacher", "t", "objective.plateau_after=1", "objective.plateau_ratio=0.0", steps=2)
    with pytest.warns(UserWarning, match="mean-prediction plateau"):
        train(cfg)


def test_wandb_offline_run_is_written(micro_config, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = micro_config("teacher", "w", "wandb.enabled=true", steps=2)
    train(cfg)
    assert list((run_dir_for(cfg) / "wandb").glob("offline-run-*"))


def test_video_list_source_trains(tmp_path, micro_config):
    """The same loop on real mp4 files decoded by PyAV."""
    import av
    import numpy as np
    lines = []
    for i in range(4):
        path = tmp_path / f"clip{i}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("h264", rate=8)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            for t in range(12):
                img = np.zeros((32, 32, 3), np.uint8)
                img[:, (t * 2 + i) % 32] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        lines.append(f"{path.name} {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    cfg = micro_config("teacher", "video", "data.source=video_list", f"data.video.list_path={tmp_path / 'list.txt'}",
                       "data.video.frames_per_clip=4", "data.video.frame_step=2", "data.video.resolution=16",
                       "train.batch_size=2", "data.video.eval_clips=2", steps=2)
    summary = train(cfg)
    assert summary["decode_failures"] == 0 and summary["steps"] == 2
    # `python -m salt eval` on it: test clips carry a views axis ([N, clips, C, T, H, W]) that every part of the
    # evaluation handles (it once failed in the held-out loss)
    from salt.__main__ import main
    assert main(["eval", str(run_dir_for(cfg)), "--protocol", "smoke"]) == 0
    from salt.eval.record import load_records
    frame = load_records([run_dir_for(cfg)])
    assert len(frame) == 1 and frame["losses.heldout"].notna().all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_cuda_step(micro_config):
    cfg = micro_config("vjepa", "cuda", "train.device=cuda", "train.precision=bf16", steps=2)
    summary = train(cfg)
    assert summary["device"].startswith("cuda")


def test_cuda_request_without_cuda_is_a_clear_error(micro_config):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Trainer(micro_config("teacher", "c", "train.device=cuda"))


def test_rope_model_trains_end_to_end(micro_config):
    cfg = micro_config("vjepa", "rope", "model.pos_embed=rope", steps=2)
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["final_metrics"]["loss"] > 0


def test_a_zero_filled_latest_checkpoint_is_set_aside_and_the_one_before_loads(tmp_path):
    """A latest checkpoint of the right size but all zeros (a crash between a file's allocation and its data
    reaching the disk) is set aside like a truncated one, never deleted; the one before it loads."""
    for step in (2, 4):
        ckpt.save_checkpoint(tmp_path, ckpt.Checkpoint(step=step, run_id="r", config={},
                                                       models={"m": {"w": torch.full((8,), float(step))}}), keep=2)
    layout = RunLayout(tmp_path)
    latest = layout.checkpoint(4)
    latest.write_bytes(bytes(latest.stat().st_size))
    with pytest.warns(ckpt.CheckpointFallbackWarning, match="step_00000004.pt.*moved to step_00000004.pt.unreadable"):
        path, state = ckpt.load_latest(tmp_path)
    assert path == layout.checkpoint(2) and state["step"] == 2 and layout.set_aside(latest).is_file()
