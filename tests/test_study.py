"""Studies: pure expansion into run specs, stable run ids, idempotent execution (debug and local executors),
resubmission of failed runs, clear errors before anything runs, and the paper grid's compute."""
import json
import pdb
import shutil

import pytest

from salt.config import load_config, resolve_config
from salt.schema import RunConfig
from salt.identity import run_id
from salt.study import LaunchOptions, StudyError, read_plan, run_plan, run_states
from salt.study.estimate import step_flops
from studies import compute_allocation
from studies.compute_allocation import PRESETS, AllocationDials, build

SMOKE = PRESETS["smoke"]


def smoke_plan(root, cache, **changes):
    dials = AllocationDials(**{**SMOKE.__dict__, **changes})
    return build(dials, "smoke", root, [f"data.moving_digits.cache_dir={cache}"])


@pytest.fixture(autouse=True)
def no_post_mortem(monkeypatch):
    """submitit's DebugExecutor opens pdb on a failed job; under pytest that would read stdin."""
    monkeypatch.setattr(pdb, "post_mortem", lambda *args, **kwargs: None)


# -- expansion -----------------------------------------------------------------------------------------------

def test_expansion_counts_sharing_and_dependencies(tmp_path):
    plan = smoke_plan(tmp_path / "s", tmp_path / "cache")
    roles = [spec.role for spec in plan.runs]
    teachers = [s for s in plan.runs if s.role == "teacher"]
    salt = [s for s in plan.runs if s.method == "salt"]
    vjepa = [s for s in plan.runs if s.method == "vjepa"]
    # teachers of 2 and 4 steps are shared by both budgets (8, 12): trained once each
    assert len(teachers) == len(SMOKE.teacher_steps) == 2
    assert len(salt) == len(SMOKE.total_steps) * len(SMOKE.teacher_steps) == 4
    assert len(vjepa) == len(SMOKE.total_steps)
    assert roles.count("baseline") == 2
    by_id = plan.by_id()
    for student in salt:
        (teacher_id,) = student.depends_on
        teacher = by_id[teacher_id]
        assert student.labels["teacher_steps"] == teacher.config.train.steps
        assert student.config.train.steps == student.labels["total_steps"] - teacher.config.train.steps
        assert student.config.objective.teacher_checkpoint == str(teacher.run_dir)
        assert student.estimated_flops_total == pytest.approx(student.estimated_flops + teacher.estimated_flops)
    assert [len(stage) for stage in plan.stages()] == [2 + 2 + 2, 4]


def test_expansion_is_pure_and_ids_do_not_depend_on_the_folder(tmp_path):
    a = smoke_plan(tmp_path / "a", tmp_path / "cache")
    b = smoke_plan(tmp_path / "b", tmp_path / "other-cache")
    assert [s.run_id for s in a.runs] == [s.run_id for s in b.runs]
    assert all(str(tmp_path / "a") in s.config.out_dir for s in a.runs)


def test_run_id_ignores_scheduling_keys_but_not_semantics():
    base = load_config(RunConfig, [resolve_config("tiny_teacher")])
    same = load_config(RunConfig, [resolve_config("tiny_teacher")],
                       ["train.log_every=3", "train.checkpoint_every=7", "train.progress=false", "out_dir=/x", "name=y"])
    other = load_config(RunConfig, [resolve_config("tiny_teacher")], ["optim.lr=0.002"])
    assert run_id(base, "study") == run_id(same, "study")
    assert run_id(base, "study") != run_id(other, "study")
    assert run_id(base, "study").startswith("pixel-tiny-600-")
    student = load_config(RunConfig, [resolve_config("tiny_student")], ["objective.teacher_checkpoint=/somewhere"])
    assert run_id(student, "study", teacher_id="teacher-a") != run_id(student, "study", teacher_id="teacher-b")


def test_an_empty_grid_is_refused(tmp_path):
    with pytest.raises(StudyError, match="has no runs"):
        smoke_plan(tmp_path, tmp_path / "cache", teacher_steps=[50], methods=("salt",), baselines=False)


def test_unknown_preset_and_unknown_override_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compute_allocation.main(["--preset", "huge", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path), "--set",
                                    "train.no_such_key=1"]) == 2   # one error line (salt.errors), no traceback
    assert "error: unknown config key 'train.no_such_key'" in capsys.readouterr().err


def test_slurm_without_sbatch_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    code = compute_allocation.main(["--preset", "smoke", "--executor", "slurm", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "needs sbatch on PATH" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_dry_run_prints_every_run_and_submits_nothing(tmp_path, capsys):
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    plan = build(SMOKE, "smoke", tmp_path / "s")
    for spec in plan.runs:
        assert spec.run_id in out
    assert "nothing was submitted" in out and "GPU-hours" in out
    assert "tokens kept per clip" in out   # what the masks keep and compute (docs/scaling.md)
    assert not (tmp_path / "s").exists()


# -- the paper's grid ----------------------------------------------------------------------------------------

def test_paper_step_flops_match_the_paper_accounting():
    """The SALT paper (arXiv 2509.24317): ViT-L student step ~5.95e15, teacher step ~3.0e15 FLOPs (predictor
    charged all tokens). The paper counts ~10% of a clip as context per mask config (~313 tokens in all), what the
    cut over the whole batch of 3072 keeps (mask.cut_group=0); the presets cut per 24 clips as V-JEPA's collator
    does, which keeps ~465 (docs/scaling.md), so their encoder term, and only it, is larger."""
    whole_batch_cut = ["mask.cut_group=0"]
    student = load_config(RunConfig, [resolve_config("paper_vitl_student")],
                          ["objective.teacher_checkpoint=t", *whole_batch_cut])
    teacher = load_config(RunConfig, [resolve_config("paper_vitl_teacher")], whole_batch_cut)
    assert step_flops(student, accounting="paper") == pytest.approx(5.95e15, rel=0.05)
    assert step_flops(teacher, accounting="paper") == pytest.approx(3.0e15, rel=0.05)
    # V-JEPA 2 baseline: 1.26e21 FLOPs over 160k steps in the paper, V-JEPA 2's 256 px recipe
    vjepa2 = load_config(RunConfig, [resolve_config("paper_vitl_vjepa2")], whole_batch_cut)
    assert step_flops(vjepa2, accounting="paper") == pytest.approx(1.26e21 / 160_000, rel=0.05)
    preset = load_config(RunConfig, [resolve_config("paper_vitl_student")], ["objective.teacher_checkpoint=t"])
    encoder_term = 6 * 0.30e9 * 3072   # per context token per clip (the paper's 6ND, N = 0.30e9)
    extra_context = step_flops(preset, accounting="paper") - step_flops(student, accounting="paper")
    assert 100 < extra_context / encoder_term < 200   # ~465 - ~314 context tokens per clip
    assert {student.model.pos_embed, teacher.model.pos_embed, vjepa2.model.pos_embed,
            student.objective.teacher.pos_embed} == {"rope"}
    # what this code computes is less: its masks cut the predictor's target lists to the batch minimum
    assert step_flops(teacher) < step_flops(teacher, accounting="paper")


# -- execution -----------------------------------------------------------------------------------------------

def test_debug_study_runs_everything_once_and_a_rerun_skips_it(tmp_path, capsys):
    """The study command end to end: every run trained and evaluated, the summary table and the analysis
    report; a second invocation submits nothing and rewrites nothing."""
    argv = ["--preset", "smoke", "--executor", "debug", "--out", str(tmp_path / "s"),
            "--set", f"data.moving_digits.cache_dir={tmp_path / 'cache'}"]
    assert compute_allocation.main(argv) == 0
    out = capsys.readouterr().out
    plan = read_plan(tmp_path / "s")
    assert f"{len(plan.runs)} done" in out
    assert "best teacher share" in out and (plan.root / "analysis" / "report.md").exists()
    assert (plan.root / "results.csv").exists()
    for spec in plan.runs:
        if spec.role != "baseline":
            summary = json.loads((spec.run_dir / "done.json").read_text())
            assert summary["run_id"] == spec.run_id
        assert list((spec.run_dir / "evals").glob("*_smoke.json"))
    student = next(s for s in plan.runs if s.method == "salt")
    record = json.loads(next((student.run_dir / "evals").glob("*.json")).read_text())
    assert record["teacher_run_id"] == student.depends_on[0]
    assert record["flops_teacher_stage"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in plan.root.rglob("*") if p.suffix in (".pt", ".json", ".md")}
    assert compute_allocation.main(argv) == 0
    states = run_states(plan.runs)
    assert all(s["attempts"] == 1 for s in states.values())   # nothing resubmitted
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes   # nothing rewritten (records, checkpoints, report)


def test_a_failed_run_blocks_its_students_and_is_resubmitted_on_the_next_invocation(tmp_path):
    plan = smoke_plan(tmp_path / "s", tmp_path / "cache", total_steps=[8], teacher_steps=[2],
                      methods=("salt",), baselines=False)
    teacher, student = plan.runs
    teacher.run_dir.mkdir(parents=True)
    blocker = teacher.run_dir / "checkpoints"
    blocker.write_text("not a folder")   # a transient failure: checkpoints cannot be written
    states = run_plan(plan, LaunchOptions(executor="debug"))
    assert states[teacher.run_id]["state"] == "failed" and states[teacher.run_id]["attempts"] == 1
    assert states[student.run_id]["state"] == "not started"   # blocked by its teacher, not run
    blocker.unlink()
    states = run_plan(plan, LaunchOptions(executor="debug"))
    assert {s["state"] for s in states.values()} == {"done"}
    assert states[teacher.run_id]["attempts"] == 2 and states[student.run_id]["attempts"] == 1


def test_a_run_that_keeps_failing_is_given_up_after_max_attempts(tmp_path):
    plan = smoke_plan(tmp_path / "s", tmp_path / "cache", total_steps=[8], teacher_steps=[2],
                      methods=("salt",), baselines=False)
    teacher = plan.runs[0]
    teacher.run_dir.mkdir(parents=True)
    (teacher.run_dir / "checkpoints").write_text("not a folder")
    for _ in range(3):
        states = run_plan(plan, LaunchOptions(executor="debug", max_attempts=2))
    assert states[teacher.run_id]["attempts"] == 2
    assert "Error" in states[teacher.run_id]["error"]


def test_local_executor_runs_teacher_then_student_in_subprocesses(tmp_path):
    plan = smoke_plan(tmp_path / "s", tmp_path / "cache", total_steps=[6], teacher_steps=[2],
                      methods=("salt",), baselines=False)
    states = run_plan(plan, LaunchOptions(executor="local", threads=1))
    assert {s["state"] for s in states.values()} == {"done"}, states
    teacher, student = plan.runs
    attempts = [json.loads(line) for line in (student.run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 1 and attempts[0]["start_step"] == 0 and attempts[0]["job_id"]
    assert run_states(plan.runs)[student.run_id]["job_id"] == attempts[0]["job_id"]


# -- the other studies -------------------------------------------------------------------------------------------

def test_teacher_selection_students_start_from_kept_teacher_checkpoints(tmp_path):
    from studies import teacher_selection
    dials = teacher_selection.PRESETS["smoke"]
    dials = teacher_selection.TeacherSelectionDials(**{**dials.__dict__, "teacher_masks": ["multiblock"]})
    plan = teacher_selection.build(dials, "smoke", tmp_path / "s", [f"data.moving_digits.cache_dir={tmp_path}/c"])
    teacher, *students = plan.runs
    assert teacher.eval_steps == [2, 4] and len(students) == 2
    assert students[0].config.objective.teacher_checkpoint.endswith("checkpoints/step_00000002.pt")
    assert students[0].estimated_flops_total == pytest.approx(students[0].estimated_flops + teacher.estimated_flops / 2)
    states = run_plan(plan, LaunchOptions(executor="debug"))
    assert {s["state"] for s in states.values()} == {"done"}
    records = sorted(p.name for p in (teacher.run_dir / "evals").iterdir())
    assert records == ["step_00000002_smoke.json", "step_00000004_smoke.json"]   # every teacher checkpoint measured
    early = json.loads(next((students[0].run_dir / "evals").glob("*.json")).read_text())
    assert (early["teacher_run_id"], early["teacher_step"]) == (teacher.run_id, 2)


def test_scaling_grid_is_sizes_times_budgets(tmp_path):
    from studies import scaling
    dials = scaling.PRESETS["default"]
    plan = scaling.build(dials, "default", tmp_path)
    salt = [s for s in plan.runs if s.method == "salt"]
    assert len(salt) == len(dials.student_sizes) * len(dials.student_steps)
    assert len([s for s in plan.runs if s.method == "vjepa"]) == len(salt)
    assert {s.depends_on[0] for s in salt} == {plan.runs[0].run_id}
    sizes = {(s.config.model.size, s.config.train.steps) for s in salt}
    assert sizes == {(size, steps) for size in dials.student_sizes for steps in dials.student_steps}


def test_hpo_student_trains_its_teacher_once_then_runs_trials(tmp_path, capsys):
    from salt.study.hpo import best_trial_table, storage_path
    from studies import hpo_student
    argv = ["--preset", "smoke", "--executor", "debug", "--trials", "2", "--out", str(tmp_path / "h"),
            "--set", f"data.moving_digits.cache_dir={tmp_path}/c"]
    assert hpo_student.main(argv) == 0
    table = best_trial_table(storage_path(tmp_path / "h" / "hpo"))
    assert sorted(table["number"]) == [0, 1] and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    teacher_dirs = [p for p in (tmp_path / "h" / "runs").iterdir() if p.name.startswith("pixel-")]
    assert len(teacher_dirs) == 1 and (teacher_dirs[0] / "done.json").exists()


def test_wandb_one_group_per_study_one_run_per_training_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    plan = build(AllocationDials(**{**SMOKE.__dict__, "total_steps": [6], "teacher_steps": [2],
                                    "methods": ("salt",), "baselines": False}), "smoke", tmp_path / "s",
                 [f"data.moving_digits.cache_dir={tmp_path}/c", "wandb.enabled=true"])
    assert {spec.config.wandb.group for spec in plan.runs} == {"compute_allocation-smoke"}
    run_plan(plan, LaunchOptions(executor="debug"))
    for spec in plan.runs:
        (offline,) = (spec.run_dir / "wandb").glob("offline-run-*")
        (log,) = offline.glob("*.wandb")
        blob = log.read_bytes()
        assert b"compute_allocation-smoke" in blob and spec.run_id.encode() in blob


def test_a_run_another_invocation_is_running_locally_is_not_submitted_again(tmp_path):
    import os
    import socket
    from salt.io import atomic_write_json
    plan = smoke_plan(tmp_path / "s", tmp_path / "cache", total_steps=[6], teacher_steps=[2],
                      methods=("salt",), baselines=False)
    teacher, student = plan.runs
    teacher.run_dir.mkdir(parents=True)
    atomic_write_json(teacher.run_dir / "job.json", {"attempts": 1, "jobs": [
        {"job_id": str(os.getpid()), "executor": "local", "host": socket.gethostname()}]})   # a live process
    states = run_plan(plan, LaunchOptions(executor="debug"))
    assert states[teacher.run_id]["state"] == "running" and states[teacher.run_id]["attempts"] == 1
    assert states[student.run_id]["state"] == "not started"   # waits for its teacher


# -- imported teachers ---------------------------------------------------------------------------------------

def test_a_study_names_an_imported_teacher_never_runs_it_and_analyses_its_students(tmp_path, micro_config, capsys):
    """A finished run made outside the study (here a micro pixel run; `python -m salt import-encoder` writes the
    same kind of folder) teaches the study's students: never submitted, no FLOPs charged, its folder untouched."""
    from analysis.collect import load_study
    from salt.eval.evaluate import evaluate_run
    from salt.train.loop import run_dir_for, train
    from studies import teacher_selection
    outside = micro_config("teacher", "released", steps=2)
    train(outside)
    evaluate_run(run_dir_for(outside), protocol="smoke")   # the user evaluates it: its metrics enter the analysis
    before = sorted(p.name for p in run_dir_for(outside).rglob("*"))
    argv = ["--preset", "smoke", "--out", str(tmp_path / "s"), "--executor", "debug", "--imported-teacher",
            str(run_dir_for(outside)), "--set", f"data.moving_digits.cache_dir={tmp_path / 'cache'}"]
    dials = {"smoke": teacher_selection.TeacherSelectionDials(
        teacher_sizes=[], teacher_steps=2, teacher_checkpoints=[2], student_size="micro", student_steps=2,
        student_eval_points=1, teacher_config="micro_teacher", student_config="micro_student",
        overrides=["data.moving_digits.num_train=64", "data.moving_digits.num_test=32"])}
    teacher_selection.PRESETS, original = dials, teacher_selection.PRESETS
    try:
        assert teacher_selection.main(argv) == 0
    finally:
        teacher_selection.PRESETS = original
    plan = read_plan(tmp_path / "s")
    imported, student = plan.runs
    assert imported.external and imported.run_dir == run_dir_for(outside) and imported.estimated_flops_total == 0
    assert student.depends_on == [imported.run_id] and student.config.objective.teacher_checkpoint == str(imported.run_dir)
    assert not imported.layout.job.exists()                            # never submitted
    assert sorted(p.name for p in run_dir_for(outside).rglob("*")) == before   # nothing written into it
    frame = load_study(tmp_path / "s")
    assert set(frame["run_id"]) == {imported.run_id, student.run_id}
    (run_dir_for(outside) / "done.json").unlink()
    with pytest.raises(StudyError, match="imported runs are not finished run folders"):
        run_plan(read_plan(tmp_path / "s"), LaunchOptions(executor="debug"))
    teacher_selection.PRESETS = dials   # planning it again is refused by name, before anything runs
    try:
        capsys.readouterr()
        assert teacher_selection.main([*argv, "--dry-run"]) == 2
    finally:
        teacher_selection.PRESETS = original
    assert "released is not a finished run folder (needs config.yaml and done.json)" in capsys.readouterr().err


# -- replicates, budgets in FLOPs, the teacher-mask study ---------------------------------------------------------

def test_seeds_dial_adds_replicates_and_keeps_the_seed_zero_run_ids(tmp_path, capsys):
    from salt.study.cli import with_seeds
    one = smoke_plan(tmp_path / "s", tmp_path / "cache")
    two = build(with_seeds(SMOKE, 2), "smoke", tmp_path / "s", [f"data.moving_digits.cache_dir={tmp_path / 'cache'}"])
    assert [s.run_id for s in build(with_seeds(SMOKE, 1), "smoke", tmp_path / "s",
                                    [f"data.moving_digits.cache_dir={tmp_path / 'cache'}"]).runs] == [s.run_id for s in one.runs]
    trained = [s for s in one.runs if s.role != "baseline"]
    assert {s.run_id for s in one.runs} < {s.run_id for s in two.runs}     # seed 0 keeps its ids: nothing renamed
    assert len([s for s in two.runs if s.role != "baseline"]) == 2 * len(trained)
    seed1 = [s for s in two.runs if s.labels.get("seed") == 1]
    assert {s.config.train.seed for s in seed1} == {1} and len(seed1) == len(trained)
    # seed 0 is the default train.seed: a seed-0 run's id is that of its config without any seed override
    teacher = next(s for s in one.runs if s.role == "teacher")
    plain = load_config(RunConfig, [resolve_config("micro_teacher")],
                        [f"model.size=micro", f"train.steps={teacher.config.train.steps}",
                         f"data.moving_digits.cache_dir={tmp_path / 'cache'}"])
    assert run_id(plain, "study") == teacher.run_id
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--seeds", "2", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert all(s.run_id in out for s in seed1) and "estimated wall time on a CPU" in out
    assert compute_allocation.main(["--preset", "smoke", "--dry-run", "--seeds", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err


def test_hpo_has_no_seeds_dial_and_says_so(tmp_path, capsys):
    from studies import hpo_student
    assert hpo_student.main(["--preset", "smoke", "--dry-run", "--seeds", "2", "--out", str(tmp_path / "h")]) == 2
    assert "have no seeds" in capsys.readouterr().err


def test_budgets_in_flops_give_every_curve_the_same_compute(tmp_path):
    """The small preset: each FLOPs budget split 10-60% to the teacher, V-JEPA at the same compute, 2 seeds."""
    dials = PRESETS["small"]
    plan = build(dials, "small", tmp_path / "s")
    salt = [s for s in plan.runs if s.method == "salt"]
    vjepa = [s for s in plan.runs if s.method == "vjepa"]
    teachers = [s for s in plan.runs if s.role == "teacher"]
    budgets, seeds = len(dials.total_flops), 2
    assert len(salt) == len(dials.teacher_shares) * budgets * seeds and len(vjepa) == budgets * seeds
    # every share trains its own teacher; budgets share one where a share of one is a share of another
    # (20% of 6.25e12 = 10% of 1.25e13)
    assert len(teachers) == len({(s.labels["teacher_steps"], s.labels["seed"]) for s in salt}) < len(salt)
    for spec in salt + vjepa:   # steps from seed 0's estimate; another seed's 16 sampled multiblock steps differ ~5%
        total = spec.labels["total_flops"]
        assert total in dials.total_flops
        assert spec.estimated_flops_total == pytest.approx(total, rel=0.03 if spec.labels["seed"] == 0 else 0.07)
    by_id = plan.by_id()
    for student in salt:
        teacher = by_id[student.depends_on[0]]
        assert teacher.estimated_flops / student.labels["total_flops"] == pytest.approx(
            student.labels["teacher_share"], rel=0.03)
    steps = {(s.labels["total_flops"], s.labels["teacher_share"], s.labels["seed"]):
             (s.labels["teacher_steps"], s.config.train.steps) for s in salt}
    assert all(steps[(total, share, 0)] == steps[(total, share, 1)]     # seeds: same design
               for total in dials.total_flops for share in dials.teacher_shares)
    assert max(t.config.train.steps for t in teachers) > 400 * 2                 # teachers well past the plateau
    with pytest.raises(StudyError, match="not both"):
        build(AllocationDials(total_steps=[8], teacher_steps=[2], total_flops=[1e9], teacher_shares=[0.5]), "x",
              tmp_path / "x")


def test_teacher_masks_study_gives_each_mask_the_same_teacher_compute(tmp_path):
    from studies import teacher_masks
    dials = teacher_masks.PRESETS["default"]
    plan = teacher_masks.build(dials, "default", tmp_path / "m")
    teachers = [s for s in plan.runs if s.role == "teacher"]
    students = [s for s in plan.runs if s.method == "salt"]
    assert len(teachers) == len(students) == 2 * 2 * 2                           # masks x learning rates x seeds
    assert {(t.config.mask.kind, t.config.optim.lr) for t in teachers} == {
        (m, lr) for m in ("multiblock", "random") for lr in dials.teacher_lrs}
    for t in teachers:          # steps from seed 0's estimate; another seed's 16 sampled multiblock steps differ ~5%
        assert t.estimated_flops == pytest.approx(dials.teacher_flops, rel=0.03 if t.labels["seed"] == 0 else 0.07)
    steps = {t.config.mask.kind: t.config.train.steps for t in teachers}
    assert steps["multiblock"] != steps["random"]                                # a multiblock step costs more
    assert {s.config.train.steps for s in students} == {dials.student_steps}
    assert {s.config.mask.kind for s in students} == {"multiblock"}              # one student recipe
