"""The command line, run as a user would (subprocesses)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import micro_overrides


def _salt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "salt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_unknown_key_is_a_clear_error_before_work():
    r = _salt("teacher", "--config", "tiny_teacher", "train.stepz=3")
    assert r.returncode == 2
    assert "train.stepz" in r.stderr and "Traceback" not in r.stderr


def test_wrong_type_and_missing_teacher_are_clear_errors():
    r = _salt("teacher", "--config", "tiny_teacher", "train.steps=many")
    assert r.returncode == 2 and "train.steps" in r.stderr
    r = _salt("student", "--config", "tiny_student")
    assert r.returncode == 2 and "teacher_checkpoint" in r.stderr


def test_print_config_resolves_layers():
    r = _salt("vjepa", "--config", "tiny_vjepa", "--print-config", "train.steps=7")
    assert r.returncode == 0, r.stderr
    assert "steps: 7" in r.stdout and "method: vjepa" in r.stdout


def test_teacher_then_student_from_the_cli(tmp_path):
    t = _salt("teacher", "--config", "micro_teacher", *micro_overrides(tmp_path, "t", steps=2))
    assert t.returncode == 0, t.stderr
    s = _salt("student", "--config", "micro_student", *micro_overrides(tmp_path, "s", steps=2),
              f"objective.teacher_checkpoint={tmp_path / 'runs' / 't'}")
    assert s.returncode == 0, s.stderr
    done = json.loads((tmp_path / "runs" / "s" / "done.json").read_text())
    assert done["method"] == "salt" and done["flops"]["teacher_stage"] > 0
    # Resume of a finished run returns its summary without training again.
    again = _salt("student", "--config", "micro_student", *micro_overrides(tmp_path, "s", steps=2),
                  f"objective.teacher_checkpoint={tmp_path / 'runs' / 't'}", "--resume")
    assert again.returncode == 0 and json.loads((tmp_path / "runs" / "s" / "done.json").read_text()) == done


def test_smoke_demo_prints_the_table(tmp_path):
    import os
    env = {**os.environ, "SALT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "salt", "demo", "--preset", "smoke", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    for name in ("raw pixels", "random init", "pixel teacher", "SALT student", "V-JEPA", "motion 10-shot",
                 "attentive motion", "LiDAR"):
        assert name in r.stdout
    result = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert [row["encoder"] for row in result["rows"]] == ["raw pixels", "random init", "pixel teacher",
                                                           "SALT student", "V-JEPA"]
    assert all(0.0 <= row["linear_motion_all"] <= 1.0 for row in result["rows"])
    # Every row comes from a record on disk that the study/analysis layers read.
    from salt.eval.record import load_records
    frame = load_records([tmp_path / "demo"])
    assert set(frame["method"]) == {"raw_pixels", "random_init", "pixel", "salt", "vjepa"}


def test_eval_command_writes_a_record(tmp_path):
    t = _salt("teacher", "--config", "micro_teacher", *micro_overrides(tmp_path, "t", steps=2))
    assert t.returncode == 0, t.stderr
    r = _salt("eval", str(tmp_path / "runs" / "t"), "--checkpoint", "2", "--protocol", "smoke")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "t" / "evals" / "step_00000002_smoke.json").exists()
    assert "probe.linear.time.motion.10" in r.stdout and "lidar" in r.stdout
    bad = _salt("eval", str(tmp_path / "runs" / "t"), "--protocol", "thorough")
    assert bad.returncode == 2 and "thorough" in bad.stderr
    missing = _salt("eval", str(tmp_path / "runs" / "nope"))
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_overrides_may_follow_options_and_runtime_errors_are_one_line(tmp_path):
    """`key=value` after an option joins the overrides (as Hydra and torchrun users type them); a missing video
    list, a run folder that needs --resume and a run whose checkpoints are all unreadable end in one `error:` line,
    no traceback."""
    overrides = micro_overrides(tmp_path, "mixed", steps=2)
    r = _salt("teacher", "--config", "micro_teacher", *overrides[:2], "--resume", *overrides[2:])
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "runs" / "mixed" / "done.json").read_text())["steps"] == 2
    assert _salt("teacher", "--config", "micro_teacher", "--resume", "--bogus").returncode == 2   # still refused
    missing = _salt("teacher", "--config", "micro_teacher", *overrides[:2], "name=v", "data.source=video_list",
                    "data.video.list_path=/nope.csv")
    assert missing.returncode == 2 and "error: video list not found: /nope.csv" in missing.stderr
    assert "Traceback" not in missing.stderr
    checkpoints = tmp_path / "runs" / "mixed" / "checkpoints"
    (tmp_path / "runs" / "mixed" / "done.json").unlink()
    again = _salt("teacher", "--config", "micro_teacher", *overrides)
    assert again.returncode == 2 and "pass --resume" in again.stderr and "Traceback" not in again.stderr
    for path in checkpoints.glob("*.pt"):
        path.write_bytes(b"damaged")
    damaged = _salt("teacher", "--config", "micro_teacher", *overrides, "--resume")
    assert damaged.returncode == 2 and "error: no readable checkpoint" in damaged.stderr
    assert "Traceback" not in damaged.stderr


def _one_error_line(result, *names):
    """Exit status 2, no traceback, and exactly one `error:` line, which names each of `names`."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr[-3000:]
    assert all(name in errors[0] for name in names), errors[0]


def test_debug_and_salt_debug_restore_the_traceback():
    import os
    r = _salt("teacher", "--config", "tiny_teacher", "train.stepz=3", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError: unknown config key 'train.stepz'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "salt", "teacher", "--config", "tiny_teacher", "train.stepz=3"],
                       capture_output=True, text=True, env={**os.environ, "SALT_DEBUG": "1"}, timeout=600)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_teacher_benchmark_and_nan_errors_are_one_line(tmp_path, micro_config):
    """An unfinished teacher folder, a teacher whose config.yaml does not match its weights (the tensor is named),
    a benchmark whose val labels the train list lacks, and a loss that becomes NaN after training started."""
    import shutil
    from salt.train.loop import train
    train(micro_config("teacher", "t", steps=2))   # the finished teacher the bad inputs are made from
    runs = tmp_path / "runs"
    shutil.copytree(runs / "t", runs / "unfinished")
    (runs / "unfinished" / "done.json").unlink()
    shutil.copytree(runs / "t", runs / "mismatch")
    config = runs / "mismatch" / "config.yaml"
    config.write_text(config.read_text().replace("size: micro", "size: tiny"))
    student = ["student", "--config", "micro_student", *micro_overrides(tmp_path, "s", steps=2)]
    _one_error_line(_salt(*student, "--teacher", str(runs / "unfinished")), "unfinished", "not a finished run folder")
    _one_error_line(_salt(*student, "--teacher", str(runs / "mismatch")), "mismatch", "missing tensors ['blocks.")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "train.txt").write_text("a.mp4 0\nb.mp4 1\n")
    (bench / "val.txt").write_text("c.mp4 0\nd.mp4 2\n")
    (bench / "b.yaml").write_text("name: b\ntrain_list: train.txt\nval_list: val.txt\n"
                                  "clip: {frames_per_clip: 8, frame_step: 2, resolution: 32}\n")
    _one_error_line(_salt("eval", str(runs / "t"), "--benchmark", str(bench / "b.yaml"), "--protocol", "smoke"),
                    "label(s) 2", "val.txt", "train.txt")
    nan = _salt("teacher", "--config", "micro_teacher", *micro_overrides(tmp_path, "nan", steps=4), "optim.lr=1e30")
    _one_error_line(nan, "loss is nan at step", "step_00000002.pt")


def test_study_and_analysis_errors_are_one_line(tmp_path):
    study = subprocess.run([sys.executable, "studies/compute_allocation.py", "--preset", "smoke", "--dry-run",
                            "--out", str(tmp_path / "s"), "--set", "train.stepz=3"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent, timeout=600)
    _one_error_line(study, "train.stepz")
    (tmp_path / "empty").mkdir()
    analysis = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "empty"), "--no-figures"],
                              capture_output=True, text=True, timeout=600)
    _one_error_line(analysis, "empty", "study.json")
