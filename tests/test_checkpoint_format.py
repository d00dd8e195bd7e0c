"""The checkpoint and the run summary are typed and written by one writer (salt.checkpoint) for trained and imported
runs alike. Format version 2; version-1 files (the writer before it, reproduced here as plain dicts) still load:
a trained run resumes from one bit for bit, and an imported encoder of version 1 (a `pixel` run with a made-up
decoder) still teaches and evaluates as before."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from salt.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointMismatchError, RunSummary, load_checkpoint,
                             save_checkpoint)
from salt.layout import LayoutError, RunLayout
from salt.train.loop import Trainer, run_dir_for, train
from tests.test_train import _assert_same_models, _crash_after, _weights


def as_version_1(state: dict, *, counters=("decode_failures", "seek_fallbacks")) -> dict:
    """A version-2 state as the writer before it saved it: {"format_version": 1, **state} with the data counters
    at the top level (older files had only some of them)."""
    v1 = {"format_version": 1, **{k: v for k, v in state.items() if k not in ("format_version", "data_counts")}}
    v1.update({k: state["data_counts"][k] for k in counters})
    return v1


@pytest.mark.parametrize("counters", [("decode_failures", "seek_fallbacks"), ("decode_failures",)])
def test_a_version_1_checkpoint_loads_and_resumes_bit_identically(micro_config, counters):
    straight = micro_config("teacher", "straight", steps=6)
    train(straight)
    interrupted = micro_config("teacher", "v1", steps=6)
    _crash_after(Trainer(interrupted), 3)
    path = RunLayout(run_dir_for(interrupted)).checkpoint(2)
    torch.save(as_version_1(load_checkpoint(path), counters=counters), path)
    state = load_checkpoint(path)
    assert state["format_version"] == FORMAT_VERSION and state["step"] == 2
    assert state["data_counts"] == {"decode_failures": 0, "seek_fallbacks": 0}   # a counter it lacks: 0
    assert train(interrupted, resume=True)["steps"] == 6
    _assert_same_models(_weights(run_dir_for(straight)), _weights(run_dir_for(interrupted)))
    assert torch.equal(load_checkpoint(run_dir_for(straight))["rng"]["torch"],
                       load_checkpoint(run_dir_for(interrupted))["rng"]["torch"])
    assert load_checkpoint(run_dir_for(interrupted))["format_version"] == 2   # written back in the new format


def test_a_checkpoint_this_code_cannot_use_is_named(tmp_path):
    good = Checkpoint(step=3, run_id="r", config={}, models={"encoder": {"w": torch.zeros(2)}})
    path = save_checkpoint(tmp_path, good, keep=1)
    back = Checkpoint.from_dict(load_checkpoint(path))
    assert (back.step, back.run_id, back.optimizer) == (3, "r", None)
    assert torch.equal(back.models["encoder"]["w"], good.models["encoder"]["w"])
    for state, message in [({**good.to_dict(), "format_version": 3}, "format version 3; this code reads 1 and 2"),
                           ({k: v for k, v in good.to_dict().items() if k != "models"}, r"missing fields \['models'\]"),
                           ({**good.to_dict(), "extra": 1}, r"unknown fields \['extra'\]"),
                           ({**good.to_dict(), "step": "3"}, "field 'step' is '3'"),
                           ({**good.to_dict(), "flops": float("nan")}, "FLOPs must be finite"),
                           ([1, 2], "holds a list, not a checkpoint dict")]:
        torch.save(state, path)
        with pytest.raises(CheckpointMismatchError, match=f"checkpoint {path}.*{message}"):
            load_checkpoint(path)


def test_the_run_summary_is_typed_and_old_done_files_load(micro_config):
    cfg = micro_config("teacher", "summary", steps=2)
    done = train(cfg)
    summary = RunSummary.from_dict(done)
    assert summary.data_counts == {"decode_failures": 0, "seek_fallbacks": 0} and summary.method == "pixel"
    assert summary.to_dict() == {k: v for k, v in done.items() if k not in ("schema_version", "id_scheme")}
    # done.json as written before seek_fallbacks, versions and id schemes: still a summary
    old = {k: v for k, v in done.items() if k not in ("seek_fallbacks", "schema_version", "id_scheme")}
    layout = RunLayout(run_dir_for(cfg))
    layout.done.write_text(json.dumps(old))
    assert RunSummary.from_dict(layout.read_done()).data_counts == {"decode_failures": 0}
    with pytest.raises(LayoutError, match=r"missing fields \['params'\]"):
        RunSummary.from_dict({k: v for k, v in old.items() if k != "params"})


def test_an_imported_method_is_never_trained(micro_config):
    from salt.__main__ import main
    cfg = micro_config("teacher", "imported", "objective.method=imported", steps=2)
    with pytest.raises(ValueError, match="objective.method=imported is not trained here"):
        Trainer(cfg)
    with pytest.raises(SystemExit):   # no command trains it
        main(["imported", "--help"])


# -- an imported encoder of version 1 (method pixel, a made-up decoder) -------------------------------------------

def test_a_version_1_imported_run_still_teaches_and_evaluates_as_before(tmp_path, one_thread):
    from salt.config import from_dict, to_dict
    from salt.data import clip_geometry
    from salt.eval.evaluate import evaluate_run
    from salt.importers import import_encoder
    from salt.objectives import build_objective
    from salt.schema import RunConfig
    from tests.test_import_encoder import (VIDEO_OVERRIDES, assert_same_outputs, clips, imported_teacher,
                                           vjepa2)
    from tests.test_video_data import write_video
    rng = np.random.default_rng(0)
    for i in range(4):
        write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "list.txt").write_text("".join(f"v{i}.mp4 {i % 2}\n" for i in range(4)))
    ref = vjepa2()
    ref.save_pretrained(tmp_path / "hf")
    done = import_encoder("vjepa2", tmp_path / "hf", tmp_path / "run", overrides=[
        *VIDEO_OVERRIDES, f"data.video.list_path={tmp_path / 'list.txt'}", "data.video.frame_step=1"])
    # The folder as the importer before format 2 wrote it: a pixel run, its decoder freshly initialised
    layout = RunLayout(tmp_path / "run")
    new = load_checkpoint(layout.checkpoint(0))
    cfg = from_dict(RunConfig, new["config"])
    cfg.objective.method = "pixel"
    torch.manual_seed(cfg.train.seed)
    objective = build_objective(cfg, clip_geometry(cfg.data))
    objective.encoder.load_state_dict(new["models"]["encoder"])
    old = {"format_version": 1, "step": 0, "run_id": cfg.name, "config": to_dict(cfg),
           "models": {name: m.state_dict() for name, m in objective.saved().items()}, "optimizer": {},
           "flops": 0.0, "flops_total": 0.0, "decode_failures": 0, "rng": {"torch": torch.get_rng_state()},
           "data": {"seed": cfg.train.seed, "next_step": 0}, "masks": {"seed": cfg.train.seed, "next_step": 0},
           "imported": True}
    torch.save(old, layout.checkpoint(0))
    (tmp_path / "run" / "config.yaml").write_text((tmp_path / "run" / "config.yaml").read_text().replace(
        "method: imported", "method: pixel"))
    old_done = {**{k: v for k, v in done.items() if k not in ("seek_fallbacks", "schema_version", "id_scheme")},
                "method": "pixel", "params": {name: sum(p.numel() for p in m.parameters())
                                             for name, m in objective.saved().items()}}
    old_done["imported"] = {**done["imported"], "decoder": "the checkpoint's pixel decoder is freshly initialised"}
    layout.done.write_text(json.dumps(old_done))
    assert RunSummary.from_dict(layout.read_done()).method == "pixel"
    # a teacher as before: the released model's outputs
    assert set(load_checkpoint(layout.root)["models"]) == {"encoder", "decoder"}
    assert_same_outputs(imported_teacher(layout.root), ref, clips())
    # an evaluation target as before: a pixel teacher's record, held-out loss included
    record = evaluate_run(layout.root, protocol="smoke")
    assert (record.method, record.stage) == ("pixel", "teacher") and np.isfinite(record.losses["heldout"])


def test_an_imported_encoder_teaches_in_a_study_plan(tmp_path):
    """PlanBuilder.imported: the run keeps its own kind (method `imported`, no FLOPs); the dry run lists it as made
    outside the study, and its student's line as any student's."""
    from salt.importers import import_encoder
    from salt.study.cli import describe
    from salt.study.launch import LaunchOptions
    from salt.study.spec import PlanBuilder
    from tests.test_import_encoder import VIDEO_OVERRIDES, vjepa2
    vjepa2().save_pretrained(tmp_path / "hf")
    import_encoder("vjepa2", tmp_path / "hf", tmp_path / "released")
    b = PlanBuilder("t", "smoke", tmp_path / "study", evaluation="smoke")
    teacher = b.imported(tmp_path / "released", labels={"group": "imported"})
    student = b.student("micro_student", teacher, ["data.source=video_list", *VIDEO_OVERRIDES])
    assert (teacher.method, teacher.role, teacher.estimated_flops_total) == ("imported", "teacher", 0.0)
    assert student.depends_on == [teacher.run_id] and student.estimated_flops_total == student.estimated_flops
    text = describe(b.plan(), LaunchOptions(executor="debug"), gpu_tflops=100.0)
    assert f"{teacher.run_id:<38} teacher  custom  made outside the study, not trained here" in text
    assert student.run_id in text
