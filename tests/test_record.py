"""Evaluation records (salt.eval.record): round trip, validation, the pandas loaders, concurrency."""

import json
import math
import multiprocessing
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from salt.eval.record import (
    SCALAR_COLUMNS,
    SCHEMA_VERSION,
    EvalRecord,
    ProbeScore,
    RecordError,
    find_records,
    load_probe_scores,
    load_records,
    read_record,
    record_path,
    write_record,
)

def make_record(run_id="teacher-a", step=100, evaluation="fast", **changes) -> EvalRecord:
    record = EvalRecord(
        run_id=run_id, method="pixel", stage="teacher", checkpoint_step=step, steps_total=200, evaluation=evaluation,
        seed=3, config_hash="abc123", code_version="f" * 40, model_size="tiny",
        params={"encoder": 1000, "predictor": 250}, flops_run=2.5e12, flops_total=2.5e12,
        losses={"train": 0.5, "heldout": 0.625}, metrics={"rankme": 12.5},
        probes=[
            ProbeScore("linear", "time", "motion", 0, "lbfgs", 0.75, selection_score=0.5,
                       details={"weight_decay": 1e-3}),
            ProbeScore("linear", "mean", "appearance", 5, "lbfgs", 0.5, test_std=0.125, draws=4),
        ],
        wall_time_s=12.0, hardware="cpu x2 threads", created_at="2025-01-02T03:04:05+00:00",
    )
    return replace(record, **changes)


def strict_json(path: Path):
    """Parse as standard JSON: NaN/Infinity literals are rejected."""
    def refuse(literal):
        raise ValueError(f"non-standard JSON literal {literal}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_round_trip_keeps_every_field_including_nan_and_nested_details(tmp_path):
    record = make_record(
        losses={"train": 0.5, "heldout": math.inf},
        metrics={"rankme": 12.5, "alpha_req_r2": -math.inf},
        probes=[ProbeScore("attentive", "tokens", "label", 0, "systematic", 0.875, selection_score=math.nan,
                           details={"per_head": [{"lr": 1e-3, "wd": 0.01, "val": 0.5}, {"lr": 1e-4, "ok": True}],
                                    "chosen": {"lr": 1e-3}, "note": "x", "nothing": None}),
                ProbeScore("knn", "mean", "label", 10, "k=20", 0.25, test_std=0.0625, draws=3)],
    )
    path = write_record(tmp_path / "run", record)
    assert path == tmp_path / "run" / "evals" / "step_00000100_fast.json"
    back = read_record(path)
    assert math.isnan(back.probes[0].selection_score)
    assert back.losses["heldout"] == math.inf and back.metrics["alpha_req_r2"] == -math.inf
    # NaN != NaN, so compare with the nan replaced on both sides
    assert replace(back, probes=[replace(back.probes[0], selection_score=-1.0), back.probes[1]]) == \
        replace(record, probes=[replace(record.probes[0], selection_score=-1.0), record.probes[1]])
    data = strict_json(path)
    assert data["probes"][0]["selection_score"] is None
    assert data["losses"]["heldout"] == "Infinity"
    json.dumps(data, allow_nan=False)


def test_nan_inside_details_is_stored_as_null_and_numpy_scalars_are_unwrapped(tmp_path):
    record = make_record(probes=[ProbeScore("linear", "time", "motion", 0, "lbfgs", 0.5,
                                            details={"val_loss": [0.25, math.nan], "wd": np.float32(0.5),
                                                     "head": np.int64(2)})])
    back = read_record(write_record(tmp_path, record))
    assert back.probes[0].details == {"val_loss": [0.25, None], "wd": 0.5, "head": 2}


def test_created_at_is_filled_in_the_file_but_the_record_passed_is_unchanged(tmp_path):
    record = make_record(created_at="")
    back = read_record(write_record(tmp_path, record))
    assert record.created_at == ""
    written = datetime.fromisoformat(back.created_at)
    assert written.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - written).total_seconds()) < 3600


def test_record_path_layout():
    assert record_path("runs/x", 42, "systematic") == Path("runs/x/evals/step_00000042_systematic.json")
    with pytest.raises(ValueError, match="evaluation must be a file-name-safe name"):
        record_path("runs/x", 42, "../escape")
    with pytest.raises(ValueError, match="checkpoint_step must be an integer >= 0"):
        record_path("runs/x", -1, "fast")


def write_three_records(root: Path) -> list[Path]:
    """Two runs: a teacher evaluated at two steps (the later one without metrics) and a student."""
    return [
        write_record(root / "teacher-a", make_record(step=200, metrics={}, flops_run=5e12, flops_total=5e12)),
        write_record(root / "teacher-a", make_record(step=100)),
        write_record(root / "nested" / "student-b", make_record(
            run_id="student-b", method="salt", stage="student", step=50, evaluation="systematic",
            teacher_run_id="teacher-a", teacher_step=200, flops_teacher_stage=5e12, flops_run=1e12,
            flops_total=6e12, params={"encoder": 3000},
            probes=[ProbeScore("linear", "time", "motion", 0, "lbfgs", 0.875, selection_score=0.75)])),
    ]


def test_load_records_one_row_per_record_with_known_columns_and_values(tmp_path):
    write_three_records(tmp_path / "study")
    frame = load_records([tmp_path / "study"])
    assert list(frame.columns[:len(SCALAR_COLUMNS)]) == SCALAR_COLUMNS
    assert list(frame["run_id"]) == ["student-b", "teacher-a", "teacher-a"]
    assert list(frame["checkpoint_step"]) == [50, 100, 200]
    assert list(frame["flops_total"]) == [6e12, 2.5e12, 5e12]
    assert list(frame["teacher_run_id"]) == ["teacher-a", "", ""]
    assert list(frame["params.encoder"]) == [3000, 1000, 1000]
    assert frame["params.predictor"].isna().tolist() == [True, False, False]
    assert frame["metrics.rankme"].iloc[:2].tolist() == [12.5, 12.5] and math.isnan(frame["metrics.rankme"].iloc[2])
    assert list(frame["losses.heldout"]) == [0.625] * 3
    motion = "probe.linear.time.motion.all"
    assert list(frame[motion]) == [0.875, 0.75, 0.75]
    assert list(frame[motion + "#selection"]) == [0.75, 0.5, 0.5]
    assert list(frame[motion + "#std"]) == [0.0] * 3
    few_shot = "probe.linear.mean.appearance.5"
    assert frame[few_shot].isna().tolist() == [True, False, False]
    assert frame[few_shot + "#std"].iloc[2] == 0.125
    assert math.isnan(frame[few_shot + "#selection"].iloc[2])
    assert Path(frame["path"].iloc[0]).name == "step_00000050_systematic.json"
    probe_columns = sorted(c for c in frame.columns if c.startswith("probe."))
    assert probe_columns == sorted([motion, motion + "#std", motion + "#selection",
                                    few_shot, few_shot + "#std", few_shot + "#selection"])


def test_load_probe_scores_is_tidy_long_form(tmp_path):
    write_three_records(tmp_path / "study")
    scores = load_probe_scores(tmp_path / "study")
    assert len(scores) == 5   # 2 + 2 + 1 probe scores
    assert list(scores.columns[:6]) == ["run_id", "method", "stage", "seed", "checkpoint_step", "steps_total"]
    student = scores[scores["run_id"] == "student-b"]
    assert student[["method", "probe", "pooling", "label", "shots", "test_accuracy", "flops_total"]].values.tolist() \
        == [["salt", "linear", "time", "motion", 0, 0.875, 6e12]]
    late = scores[(scores["run_id"] == "teacher-a") & (scores["checkpoint_step"] == 200)]
    assert sorted(late["label"]) == ["appearance", "motion"]
    assert late.set_index("label").loc["appearance", "draws"] == 4
    assert late.set_index("label").loc["motion", "details"] == {"weight_decay": 1e-3}


def test_empty_input_gives_an_empty_frame_with_the_fixed_columns(tmp_path):
    for source in ([], [tmp_path]):
        frame = load_records(source)
        assert frame.empty and list(frame.columns) == SCALAR_COLUMNS
        assert load_probe_scores(source).empty


def test_find_records_accepts_runs_studies_and_files_without_duplicates(tmp_path):
    paths = write_three_records(tmp_path / "study")
    (tmp_path / "study" / "teacher-a" / "config.json").write_text("{}")          # not under evals/: ignored
    assert find_records([tmp_path / "study"]) == sorted(paths)
    assert find_records([tmp_path / "study" / "teacher-a", paths[0]]) == sorted(paths[:2])
    assert find_records(str(paths[2])) == [paths[2]]
    with pytest.raises(FileNotFoundError, match="no-such-run"):
        find_records([tmp_path / "no-such-run"])


def test_a_newer_schema_version_is_refused_naming_the_file_and_versions(tmp_path):
    path = write_record(tmp_path, make_record())
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{re.escape(str(path))}.*version {SCHEMA_VERSION + 1} is newer than "
                                          rf"this code reads \({SCHEMA_VERSION}\)"):
        read_record(path)
    with pytest.raises(RecordError, match=re.escape(str(path))):
        load_records([tmp_path])


def test_a_torn_file_is_an_error_naming_it(tmp_path):
    path = write_record(tmp_path, make_record())
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(RecordError, match=rf"{re.escape(str(path))} is not valid JSON"):
        read_record(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("run_id"), "lacks required field.*run_id"),
    (lambda d: d.pop("schema_version"), "schema_version is missing"),
    (lambda d: d.update(checkpoint_step="100"), "checkpoint_step must be an integer"),
    (lambda d: d.update(flops_total=True), "flops_total must be a number"),
    (lambda d: d.update(surprise=1), "unknown field.*surprise"),
    (lambda d: d["params"].update(encoder=1.5), "params.encoder must be an integer"),
    (lambda d: d["probes"][1].update(shots="five"), r"probes\[1\].shots must be an integer"),
    (lambda d: d.update(method="not a name"), "method must be a method's name"),
    (lambda d: d.update(method="random_init"), "stage 'baseline' goes with the methods"),
    (lambda d: d.update(probes={}), "probes must be a list"),
])
def test_invalid_fields_are_errors_naming_file_and_field(tmp_path, edit, message):
    path = write_record(tmp_path, make_record())
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{re.escape(str(path))}: .*{message}"):
        read_record(path)


def test_records_validate_on_construction():
    with pytest.raises(ValueError, match="stage must be one of"):
        make_record(stage="final")
    with pytest.raises(ValueError, match="test_accuracy must be a fraction"):
        ProbeScore("linear", "time", "motion", 0, "lbfgs", 87.5)   # percent, not a fraction
    with pytest.raises(ValueError, match="label must be a non-empty string without '.'"):
        ProbeScore("linear", "time", "motion.v2", 0, "lbfgs", 0.5)
    with pytest.raises(ValueError, match="two scores for probe.linear.time.motion.all"):
        make_record(probes=[ProbeScore("linear", "time", "motion", 0, "lbfgs", 0.5),
                            ProbeScore("linear", "time", "motion", 0, "fast", 0.6)])
    with pytest.raises(ValueError, match="flops_total must be finite"):
        make_record(flops_total=math.nan)


def test_write_refuses_what_json_cannot_hold_and_leaves_no_file(tmp_path):
    record = make_record(probes=[ProbeScore("linear", "time", "motion", 0, "lbfgs", 0.5, details={"f": object()})])
    with pytest.raises(TypeError, match=r"refusing to write .*record.probes\[0\].details.f holds a object"):
        write_record(tmp_path, record)
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "evals"])
    with pytest.raises(TypeError, match="steps_total must be an integer"):
        write_record(tmp_path, make_record(steps_total=200.0))


def write_many(run_dir: str, writer: int, count: int, rewrites: int) -> None:
    for _ in range(rewrites):
        for i in range(count):
            write_record(run_dir, make_record(run_id=f"run-{writer}", step=writer * 1000 + i))


def test_concurrent_writers_never_interfere_and_readers_never_see_partial_files(tmp_path):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=write_many, args=(str(tmp_path), w, 20, 3)) for w in range(2)]
    for process in writers:
        process.start()
    while any(process.is_alive() for process in writers):   # read while they write: every file is whole
        for path in find_records([tmp_path]):
            read_record(path)
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    frame = load_records([tmp_path])
    assert len(frame) == 40
    assert sorted(frame["checkpoint_step"]) == sorted([w * 1000 + i for w in range(2) for i in range(20)])
    assert list((tmp_path / "evals").glob(".*")) == []   # no temp files left behind
