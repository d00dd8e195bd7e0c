"""analysis.collect: a study folder -> one tidy frame; incomplete folders are refused with the runs named."""
import json
import shutil
import warnings

import numpy as np
import pytest

from analysis.collect import (StudyDataError, check_complete, config_columns, final_records, label_column,
                              load_study, seed_mean)
from analysis.synthetic import TARGET, SyntheticSpec, write_synthetic_study

SPEC = SyntheticSpec(budgets=(1000, 2000), shares=(0.1, 0.4), seeds=2, checkpoints=(0.5, 1.0))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_synthetic_study(tmp_path_factory.mktemp("study") / "s", SPEC)


def test_frame_has_one_row_per_record_with_labels_and_derived_columns(study):
    frame = load_study(study)
    n_runs = len(json.loads((study / "study.json").read_text())["runs"])
    assert frame["run_id"].nunique() == n_runs
    assert len(frame) == len(list(study.rglob("evals/*.json")))
    assert {"group", "teacher_share", "label.seed", "label.teacher_run_id", "role", "budget", "run_key",
            "teacher_key", "gpu_hours", "cpu_hours", "gpu_hours_total", "losses.train", "losses.train_early"
            } <= set(frame.columns)
    students = frame[frame["group"] == "salt"]
    assert np.allclose(students["teacher_flops_share"], students["flops_teacher_stage"] / students["flops_total"])
    assert (frame.loc[frame["group"] == "pixel", "teacher_flops_share"] == 0).all()
    assert (students["budget"] == students["total_steps"]).all()
    assert (students["teacher_key"] == str(study) + "::" + students["label.teacher_run_id"]).all()
    # done.json: device cuda -> GPU-hours = wall hours, CPU-hours NaN; a student's total adds its teacher's
    s = students.iloc[0]
    teacher = frame[frame["run_id"] == s["label.teacher_run_id"]].iloc[0]
    assert s["gpu_hours"] == pytest.approx(s["train_hours"]) and np.isnan(s["cpu_hours"])
    assert s["gpu_hours_total"] == pytest.approx(s["gpu_hours"] + teacher["gpu_hours"])
    assert np.isfinite(s["losses.train_early"])   # not in these records: filled from the run's metrics.jsonl
    baseline = frame[frame["role"] == "baseline"]
    assert list(baseline["group"]) == ["random_init"] and not baseline["done"].any()


def test_cpu_runs_have_cpu_hours_and_no_gpu_hours(study, tmp_path):
    copy = shutil.copytree(study, tmp_path / "cpu")
    for done in copy.rglob("done.json"):
        data = json.loads(done.read_text())
        done.write_text(json.dumps({**data, "device": "cpu"}))
    frame = load_study(copy)
    trained = frame[frame["role"] != "baseline"]
    assert trained["gpu_hours"].isna().all()
    assert np.allclose(trained["cpu_hours"], trained["train_hours"])


def test_label_columns_are_prefixed_only_on_collision():
    assert label_column("group") == "group"
    assert label_column("teacher_share") == "teacher_share"
    assert label_column("seed") == "label.seed"                   # a record field
    assert label_column("teacher_run_id") == "label.teacher_run_id"
    assert label_column("budget") == "label.budget"               # a derived column


def test_final_records_keep_the_last_checkpoint_of_each_run(study):
    frame = load_study(study)
    final = final_records(frame)
    assert len(final) == frame["run_key"].nunique()
    last = frame.groupby("run_key")["checkpoint_step"].max()
    assert (final.set_index("run_key")["checkpoint_step"] == last.loc[final["run_key"]].to_numpy()).all()


def test_seed_mean_averages_over_seeds_only(study):
    final = final_records(load_study(study))
    salt = final[final["group"] == "salt"]
    means = seed_mean(salt, TARGET)
    assert len(means) == len(SPEC.budgets) * len(SPEC.shares)
    assert (means["n_seeds"] == SPEC.seeds).all()
    assert "teacher_share" in config_columns(salt) and "label.seed" not in config_columns(salt)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StudyDataError, match="no study.json"):
        load_study(tmp_path)
    with pytest.raises(StudyDataError, match="no such study folder"):
        load_study(tmp_path / "absent")
    (tmp_path / "study.json").write_text(json.dumps({"study": "x", "runs": []}))
    with pytest.raises(StudyDataError, match="lists no runs"):
        load_study(tmp_path)


def test_planned_but_unrun_study_names_every_run(tmp_path):
    runs = [{"run_id": f"run-{i}", "method": "salt", "role": "student", "labels": {}} for i in range(3)]
    (tmp_path / "study.json").write_text(json.dumps({"study": "x", "runs": runs}))
    with pytest.raises(StudyDataError) as info:
        load_study(tmp_path, allow_partial=True)   # nothing to analyse even when partial is allowed
    message = str(info.value)
    assert "no evaluation records" in message
    for i in range(3):
        assert f"run-{i}: lacks done.json, evaluation records" in message


def test_partial_study_names_the_runs_and_what_they_lack(tmp_path):
    spec = SyntheticSpec(budgets=(1000,), shares=(0.2,), seeds=1, checkpoints=(1.0,))
    study = write_synthetic_study(tmp_path / "p", spec, skip_done=("salt-tiny-b1000-r0.2-s0",),
                                  skip_records=("vjepa-b1000-s0",))
    with pytest.raises(StudyDataError) as info:
        load_study(study)
    message = str(info.value)
    assert "salt-tiny-b1000-r0.2-s0: lacks done.json" in message
    assert "vjepa-b1000-s0: lacks evaluation records" in message
    assert "pixel-tiny-b1000-r0.2-s0" not in message
    with pytest.warns(UserWarning, match="2 run\\(s\\) incomplete"):
        frame = load_study(study, allow_partial=True)
    assert "vjepa-b1000-s0" not in set(frame["run_id"])
    check = check_complete(study, target="probe.attentive.tokens.nothing.all")
    assert not check.ok
    assert "pixel-tiny-b1000-r0.2-s0: lacks probe.attentive.tokens.nothing.all in its final record" in check.message


def test_check_complete_of_a_complete_study(study):
    check = check_complete(study, target=TARGET, evaluation=SPEC.evaluation)
    assert check.ok and check.message.endswith("complete")
    assert not check_complete(study, evaluation="systematic").ok


def test_method_mismatch_between_plan_and_record_is_refused(study, tmp_path):
    copy = shutil.copytree(study, tmp_path / "mismatch")
    plan = json.loads((copy / "study.json").read_text())
    plan["runs"][0]["method"] = "salt" if plan["runs"][0]["method"] != "salt" else "pixel"
    (copy / "study.json").write_text(json.dumps(plan))
    with pytest.raises(StudyDataError, match="in study.json but its record"):
        load_study(copy)


def test_several_study_folders_keep_runs_apart(study, tmp_path):
    other = shutil.copytree(study, tmp_path / "other")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = load_study([study, other])
    one = load_study(study)
    assert len(frame) == 2 * len(one)
    assert frame["run_key"].nunique() == 2 * one["run_key"].nunique()   # same run ids, different studies
    assert set(frame["study_dir"]) == {str(study), str(other)}
