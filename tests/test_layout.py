"""salt.layout: the one owner of run- and study-folder file names, and the versioned done marker."""
from __future__ import annotations

import json

import pytest

from salt.identity import ID_SCHEME
from salt.layout import DONE_SCHEMA_VERSION, LayoutError, RunLayout, StudyLayout


def test_run_and_study_layouts_name_every_file(tmp_path):
    run = RunLayout.of(tmp_path / "runs", "r1")
    assert run.root == tmp_path / "runs" / "r1"
    assert run.checkpoint(250) == run.root / "checkpoints" / "step_00000250.pt"
    assert run.record(250, "fast") == run.root / "evals" / "step_00000250_fast.json"
    assert (run.config.name, run.metrics.name, run.done.name, run.job.name, run.attempts.name) == (
        "config.yaml", "metrics.jsonl", "done.json", "job.json", "attempts.jsonl")
    study = StudyLayout(tmp_path / "s")
    assert study.run("r1").root == study.runs / "r1"
    assert study.baseline("b1").root == study.runs / "baselines" / "b1" == RunLayout.baseline(study.runs, "b1").root
    assert (study.plan.name, study.results.name, study.report) == ("study.json", "results.csv",
                                                                   study.root / "analysis" / "report.md")
    with pytest.raises(ValueError, match="checkpoint_step must be an integer >= 0"):
        run.checkpoint(-1)
    with pytest.raises(ValueError, match="file-name-safe"):
        run.record(1, "../x")


def test_checkpoints_are_listed_by_step_and_temp_files_ignored(tmp_path):
    run = RunLayout(tmp_path / "r")
    assert run.checkpoints() == [] and run.latest_checkpoint() is None
    run.checkpoints_dir.mkdir(parents=True)
    for name in ("step_00000010.pt", "step_00000002.pt", ".step_00000020.pt.abc.tmp", "notes.txt"):
        (run.checkpoints_dir / name).write_bytes(b"")
    assert [s for s, _ in run.checkpoints()] == [2, 10]
    assert run.latest_checkpoint() == run.checkpoint(10)


def test_done_marker_is_versioned_and_a_newer_version_is_refused_by_name(tmp_path):
    run = RunLayout(tmp_path / "r")
    assert not run.is_done()
    written = run.write_done({"run_id": "r", "steps": 3})
    assert written == run.read_done() == {"run_id": "r", "steps": 3, "schema_version": DONE_SCHEMA_VERSION,
                                          "id_scheme": ID_SCHEME}   # the run id scheme: tests/test_run_ids.py
    # done.json written before it carried a version has the same fields: read as version 1
    run.done.write_text(json.dumps({"run_id": "r", "steps": 3}))
    assert run.read_done()["steps"] == 3
    run.done.write_text(json.dumps({"run_id": "r", "schema_version": DONE_SCHEMA_VERSION + 1}))
    with pytest.raises(LayoutError, match=rf"{run.done}.*schema version {DONE_SCHEMA_VERSION + 1}.*newer salt"):
        run.read_done()
    run.done.write_text("{torn")
    with pytest.raises(LayoutError, match="not readable JSON"):
        run.read_done()


def test_a_run_trained_before_done_json_was_versioned_still_loads(micro_config):
    """An existing run folder (done.json without a version) is returned as done, not retrained."""
    from salt.train.loop import run_layout, train
    cfg = micro_config("teacher", "old", steps=2)
    first = train(cfg)
    layout = run_layout(cfg)
    legacy = {k: v for k, v in first.items() if k != "schema_version"}
    layout.done.write_text(json.dumps(legacy))
    assert train(cfg) == legacy


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    """Not mkstemp's 0600: results and prepared videos on a shared filesystem are readable as the umask allows."""
    import os
    from salt.io import atomic_write_text
    saved = os.umask(0o022)
    try:
        for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            os.umask(umask)
            atomic_write_text(tmp_path / f"f{umask:o}.txt", "x")
            assert (tmp_path / f"f{umask:o}.txt").stat().st_mode & 0o777 == mode
    finally:
        os.umask(saved)
