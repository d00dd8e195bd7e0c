"""Studies on a real single-node SLURM cluster (slurm/local_cluster.sh, started by the slurm_cluster fixture):
job arrays, the teacher -> student afterok dependency, a failed job resubmitted, a requeued job resuming from its
checkpoint, and resource requests the cluster rejects."""
import json
import pdb
from pathlib import Path
import subprocess
import time

import pytest

from salt.study import LaunchOptions, StudyError, run_plan, run_states
from salt.study.launch import wait_for
from salt.study.state import RunState
from studies.compute_allocation import PRESETS, AllocationDials, build

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def no_post_mortem(monkeypatch):
    monkeypatch.setattr(pdb, "post_mortem", lambda *args, **kwargs: None)


def small_plan(root, cache, *extra, **changes):
    dials = AllocationDials(**{**PRESETS["smoke"].__dict__, "total_steps": [6], "teacher_steps": [2],
                               "methods": ("salt", "vjepa"), "baselines": False, **changes})
    return build(dials, "smoke", root, [f"data.moving_digits.cache_dir={cache}", *extra])


def slurm_options(cluster, **changes):
    return LaunchOptions(**{"executor": "slurm", "partition": cluster.partition, "cpus_per_task": 1, "threads": 1,
                            "time_min": 10, "poll_s": 0.5, **changes})


def test_study_on_slurm_arrays_dependency_and_rerun(slurm_cluster, tmp_path):
    plan = small_plan(tmp_path / "s", tmp_path / "cache")
    teacher, student, vjepa = (next(s for s in plan.runs if s.method == m) for m in ("pixel", "salt", "vjepa"))
    states = run_plan(plan, slurm_options(slurm_cluster))
    assert {s["state"] for s in states.values()} == {"done"}, states
    # teacher and V-JEPA (no dependencies) went out as one job array; the student was submitted at the same
    # time, with afterok on the teacher's array task, and started only after the teacher had finished
    teacher_job, vjepa_job, student_job = (states[s.run_id]["job_id"] for s in (teacher, vjepa, student))
    assert teacher_job.split("_")[0] == vjepa_job.split("_")[0] and "_" in teacher_job
    submitted = json.loads((student.run_dir / "job.json").read_text())["jobs"][0]["submitted_at"]
    teacher_done = (teacher.run_dir / "done.json").stat().st_mtime
    assert submitted < teacher_done
    started = json.loads((student.run_dir / "attempts.jsonl").read_text().splitlines()[0])
    assert started["job_id"] == student_job
    assert time.mktime(time.strptime(started["time"], "%Y-%m-%dT%H:%M:%S%z")) >= int(teacher_done) - 1
    # a second invocation finds everything done and submits nothing
    t0 = time.perf_counter()
    again = run_plan(plan, slurm_options(slurm_cluster))
    assert {s["job_id"] for s in again.values()} == {s["job_id"] for s in states.values()}
    assert time.perf_counter() - t0 < 30


def test_failed_teacher_is_resubmitted_and_its_waiting_student_cancelled(slurm_cluster, tmp_path):
    plan = small_plan(tmp_path / "s", tmp_path / "cache", methods=("salt",))
    teacher, student = plan.runs
    teacher.run_dir.mkdir(parents=True)
    blocker = teacher.run_dir / "checkpoints"
    blocker.write_text("not a folder")   # the teacher's job fails
    states = run_plan(plan, slurm_options(slurm_cluster))
    assert states[teacher.run_id]["state"] == "failed"
    assert "Error" in states[teacher.run_id]["error"]
    # its afterok can never be met: cancelled (as sacct says, when the cluster keeps accounting), not left pending
    assert states[student.run_id]["state"] is (RunState.CANCELLED if slurm_cluster.accounting else RunState.FAILED)
    assert "teacher" in states[student.run_id]["error"]
    blocker.unlink()
    states = run_plan(plan, slurm_options(slurm_cluster))
    assert {s["state"] for s in states.values()} == {"done"}, states
    assert states[teacher.run_id]["attempts"] == 2


def test_requeued_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    plan = small_plan(tmp_path / "s", tmp_path / "cache", "train.checkpoint_every=20", methods=("pixel",),
                      teacher_steps=[3000], total_steps=[3001])
    (teacher,) = plan.runs
    options = slurm_options(slurm_cluster, wait=False)
    run_plan(plan, options)
    job_id = run_states(plan.runs)[teacher.run_id]["job_id"]
    deadline = time.time() + 120
    while not list((teacher.run_dir / "checkpoints").glob("*.pt")) if (teacher.run_dir / "checkpoints").exists() \
            else True:
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=slurm_cluster.env)
    wait_for(plan, [], LaunchOptions(executor="slurm", poll_s=0.5))
    starts = [json.loads(line) for line in (teacher.run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(starts) == 2, starts
    assert starts[0]["start_step"] == 0 and starts[1]["start_step"] > 0   # resumed, not restarted
    summary = json.loads((teacher.run_dir / "done.json").read_text())
    assert summary["steps"] == 3000
    log = [json.loads(line)["step"] for line in (teacher.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert log == sorted(set(log))   # no step logged twice across the requeue


def test_requeued_job_is_healthy_and_never_submitted_twice(slurm_cluster, tmp_path, capsys):
    """`scontrol requeue` a running study job: while SLURM kills it (completing) and while it waits to start again
    (pending), `status` exits 0 and a re-invocation of the study submits nothing. Cancelled, it is a failed run
    that sacct names (`cancelled`), and `status` exits 1."""
    from salt.study.cli import study_main
    from studies.compute_allocation import build
    dials = AllocationDials(**{**PRESETS["smoke"].__dict__, "total_steps": [3001], "teacher_steps": [3000],
                               "methods": ("pixel",), "baselines": False})
    out = tmp_path / "s"

    def cli(action):
        argv = [action, "--preset", "smoke", "--out", str(out), "--executor", "slurm", "--partition",
                slurm_cluster.partition, "--cpus-per-task", "1", "--threads", "1", "--time", "10", "--no-wait",
                "--set", f"data.moving_digits.cache_dir={tmp_path / 'cache'}"]
        code = study_main("compute_allocation", {"smoke": dials}, build, argv)
        return code, capsys.readouterr().out

    def squeue_state(job_id):
        return slurm_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip()

    assert cli("run")[0] == 0
    (teacher,) = build(dials, "smoke", out).runs
    job_id = run_states([teacher])[teacher.run_id]["job_id"]
    deadline = time.time() + 60
    while not (teacher.run_dir / "attempts.jsonl").exists():   # running, and training (its start is logged)
        assert time.time() < deadline, f"job {job_id} not training within 60 s: {squeue_state(job_id)!r}"
        time.sleep(0.2)
    assert squeue_state(job_id) == "RUNNING"
    slurm_cluster.run("scontrol", "requeue", job_id)
    code, table = cli("status")   # SLURM is killing it (KillWait), then holds it for cred_expire seconds
    state = run_states([teacher])[teacher.run_id]["state"]
    assert code == 0 and state in (RunState.COMPLETING, RunState.PENDING, RunState.REQUEUED), table
    assert f" {state} " in table and f"1 {state}" in table
    while squeue_state(job_id) != "PENDING":
        assert time.time() < deadline, f"job {job_id} not pending again after its requeue: {squeue_state(job_id)!r}"
        time.sleep(0.2)
    slurm_cluster.run("scontrol", "hold", job_id)   # keep it waiting for the checks below (released or not, same)
    code, table = cli("status")
    assert code == 0 and run_states([teacher])[teacher.run_id]["state"] is RunState.PENDING, table
    assert "1 pending" in table
    code, table = cli("run")   # a second invocation during the requeue: nothing submitted
    assert code == 0, table
    job = json.loads((teacher.run_dir / "job.json").read_text())
    assert job["attempts"] == 1 and [j["job_id"] for j in job["jobs"]] == [job_id]
    assert [p.name for p in (out / "logs").iterdir() if p.is_dir()] == [job_id]   # submitit: a folder per job
    slurm_cluster.run("scancel", job_id)
    expected = RunState.CANCELLED if slurm_cluster.accounting else RunState.FAILED
    while (state := run_states([teacher])[teacher.run_id]["state"]) is not expected:   # sacct may lag a moment
        assert time.time() < deadline + 30, f"{state} after scancel, expected {expected}"
        time.sleep(0.2)
    code, table = cli("status")
    assert code == 1 and f"1 {expected}" in table, table


def test_rejected_gpu_request_fails_before_anything_is_submitted(slurm_cluster, tmp_path):
    plan = small_plan(tmp_path / "s", tmp_path / "cache")
    with pytest.raises(StudyError, match="SLURM rejects") as error:
        run_plan(plan, slurm_options(slurm_cluster, gpus_per_node=1))
    print(error.value)
    assert not any(spec.run_dir.exists() for spec in plan.runs)
    with pytest.raises(StudyError, match="SLURM rejects"):
        run_plan(plan, slurm_options(slurm_cluster, partition="no-such-partition"))


def test_hpo_trials_run_as_a_slurm_job_array_sharing_one_journal(slurm_cluster, tmp_path):
    from salt.study.hpo import best_trial_table, storage_path
    from studies import hpo_student
    argv = ["--preset", "smoke", "--executor", "slurm", "--partition", slurm_cluster.partition, "--cpus-per-task", "1",
            "--threads", "1", "--time", "10", "--trials", "4", "--workers", "2", "--out", str(tmp_path / "h"),
            "--set", f"data.moving_digits.cache_dir={tmp_path}/c"]
    assert hpo_student.main(argv) == 0
    table = best_trial_table(storage_path(tmp_path / "h" / "hpo"))
    assert sorted(table["number"]) == [0, 1, 2, 3]
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    workers = list((tmp_path / "h" / "logs").glob("*_*"))   # array task folders: <array id>_<index>
    assert {w.name.split("_")[0] for w in workers} and len({w.name for w in workers}) >= 2


def test_hpo_survives_a_killed_worker_and_finishes_a_preempted_one(slurm_cluster, tmp_path, monkeypatch):
    """Two workers, one trial each. Mid-trial, worker 1 gets SLURM's preemption signal (USR2): submitit checkpoints
    it and requeues the job, which finishes that same trial from its run folder. Worker 0 is cancelled (scancel):
    the invocation fails its trial, enqueues its parameters again and exits 1. The next invocation runs the retry
    only: two finished trials, the lost one failed, the best value read from the finished ones. A third finds
    nothing missing."""
    import threading

    import optuna
    from salt.study.hpo import LOST_ATTR, RETRY_ATTR, WORKER_ATTR, best_trial_table, create_storage, storage_path
    from studies import hpo_student
    # trials of several seconds: scancel's SIGTERM is ignored by submitit, SIGKILL comes KillWait (3 s) later
    monkeypatch.setitem(hpo_student.PRESETS, "long", hpo_student.HpoDials(
        **{**hpo_student.PRESETS["smoke"].__dict__, "student_steps": 600}))
    profile = tmp_path / "profile.yaml"
    profile.write_text("executor: slurm\npoll_s: 0.5\n")
    argv = ["--preset", "long", "--profile", str(profile), "--partition", slurm_cluster.partition,
            "--cpus-per-task", "1", "--threads", "1", "--time", "10", "--trials", "2", "--workers", "2",
            "--out", str(tmp_path / "h"), "--set", f"data.moving_digits.cache_dir={tmp_path}/c",
            "--set", "train.checkpoint_every=50", "--set", "train.log_every=10"]
    storage = storage_path(tmp_path / "h" / "hpo")

    def trials_now(*states):
        try:
            study = optuna.load_study(study_name="hpo", storage=create_storage(storage))
        except KeyError:   # not created yet
            return []
        return study.get_trials(states=states or None)

    def under_way(task, step):   # the RUNNING trial of worker `task`, once it has reported a loss at `step`
        for t in trials_now(optuna.trial.TrialState.RUNNING) if Path(storage).exists() else []:
            if t.user_attrs.get(WORKER_ATTR, {}).get("job_id", "").endswith(f"_{task}") and \
                    max(t.intermediate_values, default=-1) >= step:
                return t
        return None

    first: dict = {}
    run = threading.Thread(target=lambda: first.update(code=hpo_student.main(argv)))
    run.start()
    deadline = time.time() + 120
    while (killed := under_way(0, 0)) is None:
        assert time.time() < deadline and run.is_alive(), f"worker 0 not under way: {trials_now()}"
        time.sleep(0.1)
    slurm_cluster.run("scancel", killed.user_attrs[WORKER_ATTR]["job_id"])
    while (preempted := under_way(1, 60)) is None:   # past its first checkpoint (step 50)
        assert time.time() < deadline and run.is_alive(), f"worker 1 not under way: {trials_now()}"
        time.sleep(0.1)
    slurm_cluster.run("scancel", "--signal=USR2", preempted.user_attrs[WORKER_ATTR]["job_id"])
    run.join(timeout=240)
    assert first.get("code") == 1   # a worker was lost: said so, and its trial is ready to run again
    trials = trials_now()
    assert len(trials) == 3, trials   # the requeued worker started no new trial
    assert trials[killed.number].state.name == "FAIL" and "cancelled" in trials[killed.number].user_attrs[LOST_ATTR]
    resumed = trials[preempted.number]
    assert resumed.state.name in ("COMPLETE", "PRUNED") and resumed.user_attrs["resumed_at_step"] >= 50, resumed
    assert resumed.user_attrs[WORKER_ATTR]["job_id"] == preempted.user_attrs[WORKER_ATTR]["job_id"]
    assert trials[2].state.name == "WAITING" and trials[2].user_attrs[RETRY_ATTR] == killed.number

    assert hpo_student.main(argv) == 0
    trials = trials_now()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(trials) == 3 and len(finished) == 2 and trials[killed.number].state.name == "FAIL", trials
    assert trials[2] in finished and trials[2].params == killed.params
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    for t in complete:   # the value: mean loss of the last 3 logged steps, across the requeue for the resumed one
        losses = [json.loads(line)["loss"] for line in (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").open()]
        assert len(losses) == 61, t.number   # steps 0, 10, ..., 590 and the last, 599: none twice, none lost
        assert t.value == pytest.approx(sum(losses[-3:]) / 3, rel=1e-12), t.number
    table = best_trial_table(storage)
    best = optuna.load_study(study_name="hpo", storage=create_storage(storage)).best_value
    assert table["value"].iloc[0] == min(t.value for t in complete) == best
    assert table["state"].iloc[-1] == "FAIL" and table["number"].iloc[-1] == killed.number
    assert hpo_student.main(argv) == 0 and len(trials_now()) == 3   # nothing missing: nothing submitted
