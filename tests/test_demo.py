"""The demo is a small study plan (salt.demo.demo_plan) run by the study machinery (salt.study.launch.run_plan):
its plan is pure, re-running skips finished runs and resumes interrupted ones, the table is read back from the
records, and a failed run is one error, not a debugger prompt. (tests/test_cli.py runs it as a user would.)"""
import json
import pdb

import pytest

from salt.demo import ROWS, demo_plan, run_demo
from salt.errors import UserError
from salt.layout import StudyLayout


def _small_data(tmp_path) -> list[str]:
    return [f"data.moving_digits.cache_dir={tmp_path / 'cache'}", "data.moving_digits.num_train=64",
            "data.moving_digits.num_test=32"]


def _text(rows: list[dict]) -> str:
    """Rows compared as text: NaN (a baseline has no held-out loss) equals itself."""
    return json.dumps(rows, sort_keys=True)


def test_the_demo_plan_is_pure(tmp_path):
    plan = demo_plan("smoke", tmp_path / "demo", _small_data(tmp_path))
    assert not (tmp_path / "demo").exists()   # no files, no jobs
    teacher, student, vjepa, raw, random = plan.runs
    assert [s.method for s in plan.runs] == ["pixel", "salt", "vjepa", "raw_pixels", "random_init"]
    assert sorted(ROWS) == sorted(s.method for s in plan.runs)   # one table row per run
    assert [s.config.train.steps for s in (teacher, student, vjepa)] == [4, 4, 4]
    assert student.depends_on == [teacher.run_id] and student.config.objective.teacher_checkpoint == str(teacher.run_dir)
    assert {s.evaluation for s in plan.runs} == {"smoke"}
    assert raw.config == teacher.config and random.config == teacher.config   # the teacher's data and size
    assert all(s.run_dir.parent.parent == StudyLayout(tmp_path / "demo").runs.resolve() for s in (raw, random))
    assert not teacher.config.train.progress   # micro.yaml turns progress bars off; the demo keeps each config's
    assert demo_plan("tiny", tmp_path / "t").runs[0].config.train.progress
    with pytest.raises(ValueError, match="'huge'"):
        demo_plan("huge", tmp_path / "demo")


def test_the_demo_reruns_and_resumes_like_a_study(tmp_path, capsys, one_thread):
    out = tmp_path / "demo"
    rows = run_demo("smoke", out, _small_data(tmp_path))
    assert [r["encoder"] for r in rows] == ["raw pixels", "random init", "pixel teacher", "SALT student", "V-JEPA"]
    table = _text(rows)
    assert _text(json.loads((out / "demo_results.json").read_text())["rows"]) == table
    assert "| SALT student | 4 |" in capsys.readouterr().out
    plan = demo_plan("smoke", out, _small_data(tmp_path))
    attempts = {s.run_id: json.loads(s.layout.job.read_text())["attempts"] for s in plan.runs}
    assert set(attempts.values()) == {1}

    assert _text(run_demo("smoke", out, _small_data(tmp_path))) == table   # finished: nothing runs again
    assert {s.run_id: json.loads(s.layout.job.read_text())["attempts"] for s in plan.runs} == attempts

    student = plan.runs[1]   # interrupted after its last checkpoint, before done.json and its record
    student.layout.done.unlink()
    student.layout.record(4, "smoke").unlink()
    assert _text(run_demo("smoke", out, _small_data(tmp_path))) == table
    starts = [json.loads(line) for line in student.layout.attempts.read_text().splitlines()]
    assert [s["start_step"] for s in starts] == [0, 4]   # resumed from its checkpoint, not trained again
    assert json.loads(student.layout.job.read_text())["attempts"] == 2


def test_a_failed_run_is_an_error_not_a_debugger(tmp_path, capsys, monkeypatch, one_thread):
    """submitit's debug executor would open pdb on the failure (reading stdin); the demo reports it instead."""
    from salt.train.loop import Trainer

    def fail(self):
        raise RuntimeError("boom")
    monkeypatch.setattr(Trainer, "fit", fail)
    post_mortem = pdb.post_mortem
    with pytest.raises(UserError, match="did not finish"):
        run_demo("smoke", tmp_path / "demo", _small_data(tmp_path))
    assert pdb.post_mortem is post_mortem   # put back
    table = capsys.readouterr().out
    assert "RuntimeError: boom" in table and "not started" in table   # the student waits for its failed teacher
