"""One run, one writer (salt.runlock): real processes on one run folder. A second `python -m salt` exits naming the
job that holds the run; a SIGKILLed holder does not block the next one; a waiting job starts when the holder is
done; training processes of one job lock once; a study invocation submits nothing for a run another job holds,
and two concurrent invocations train every run once."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from salt.layout import RunLayout
from salt.runlock import RunLockedError, hold, held_by, overlaps, read_log
from salt.train.loop import run_dir_for, train
from tests.conftest import micro_overrides

REPO = Path(__file__).resolve().parents[1]
HOLDER = textwrap.dedent("""
    import sys, time
    from salt.runlock import hold
    with hold(sys.argv[1], "holder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _events(run_dir: Path) -> list[dict]:
    events = read_log(run_dir)
    assert overlaps(events) == [], events   # one holder at a time, or a dead one named by the next
    return events


def test_the_log_check_finds_two_holders_at_once():
    a, b = {"host": "n1", "pid": 1}, {"host": "n2", "pid": 2}
    good = [{"event": "acquire", **a}, {"event": "acquire", **b, "previous_unreleased": a}, {"event": "release", **b}]
    assert overlaps(good) == []
    bad = [{"event": "acquire", **a}, {"event": "acquire", **b}, {"event": "release", **a}]
    assert overlaps(bad) == ["event 1: pid 2 on n2 acquired while pid 1 on n1 held the lock",
                             "event 2: pid 1 on n1 released a lock it did not hold"]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def holder(tmp_path):
    """holder(run_dir, seconds) -> a process (no torch) holding the run folder's lock, started and holding."""
    started = []

    def start(run_dir: Path, seconds: float) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(seconds)], cwd=REPO,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_cli_run_exits_naming_the_holder_and_a_killed_holder_never_blocks(tmp_path):
    cli = [sys.executable, "-m", "salt", "teacher", "--config", "micro_teacher", *micro_overrides(tmp_path, "twin"),
           "train.checkpoint_every=100000", "--resume"]
    run_dir = tmp_path / "runs" / "twin"
    first = subprocess.Popen([*cli, "train.steps=100000"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (held_by(run_dir) or {}).get("pid") == first.pid, 120, "the first run to hold the lock")
        second = subprocess.run([*cli, "train.steps=100000"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {run_dir} is in use: held by 'train' (pid {first.pid} on host "), line
        assert str(RunLayout(run_dir).lock) in line and "command: " in line
        evaluation = subprocess.run([sys.executable, "-m", "salt", "eval", str(run_dir)], cwd=REPO,
                                    capture_output=True, text=True, timeout=300)   # nor may it be evaluated
        assert evaluation.returncode == 2 and f"held by 'train' (pid {first.pid}" in evaluation.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = subprocess.run([*cli, "train.steps=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert RunLayout(run_dir).is_done() and held_by(run_dir) is None
    events = _events(run_dir)
    assert [(e["event"], e["pid"]) for e in events] == [("acquire", first.pid), ("acquire", events[1]["pid"]),
                                                         ("release", events[1]["pid"])]
    assert events[1]["previous_unreleased"]["pid"] == first.pid   # the killed holder, reported, not waited for


def test_a_job_waits_for_the_holder_or_fails_naming_it(tmp_path, holder):
    run_dir = tmp_path / "run"
    process = holder(run_dir, 3)
    assert held_by(run_dir)["pid"] == process.pid
    with pytest.raises(RunLockedError, match=rf"held by 'holder' \(pid {process.pid} on host .*lock file") as error:
        with hold(run_dir, "train"):
            pass
    assert isinstance(error.value, OSError) and error.value.errno == 16   # EBUSY: reported as one line
    start = time.monotonic()
    with hold(run_dir, "train", wait_s=30):   # bounded wait: the holder exits after 3 s
        assert time.monotonic() - start > 0.5 and held_by(run_dir)["what"] == "train"
        with hold(run_dir, "evaluate"):   # nested in one process (periodic evaluation): the outer lock
            pass
    assert held_by(run_dir) is None
    assert [(e["event"], e["what"]) for e in _events(run_dir)] == [
        ("acquire", "holder"), ("release", "holder"), ("acquire", "train"), ("release", "train")]


def _rank_main(rank, port, cfg, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        train(cfg)
        (out / f"rank{rank}").write_text("trained")
    except RunLockedError as error:
        (out / f"rank{rank}").write_text(str(error))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_training_processes_of_one_job_lock_once_and_stop_together(micro_config, tmp_path, holder):
    from tests.test_distributed import _free_port
    cfg = micro_config("teacher", "ddp", steps=2)
    run_dir = run_dir_for(cfg)
    process = holder(run_dir, 600)
    mp.start_processes(_rank_main, args=(_free_port(), cfg, tmp_path), nprocs=2, start_method="spawn")
    assert f"pid {process.pid}" in (tmp_path / "rank0").read_text()   # rank 0 names the holder
    assert "rank 0 could not lock" in (tmp_path / "rank1").read_text()   # rank 1 stops too, no hang
    process.kill()
    process.wait()
    mp.start_processes(_rank_main, args=(_free_port(), cfg, tmp_path), nprocs=2, start_method="spawn")
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text() == "trained"
    events = _events(run_dir)   # the killed holder's acquire, then one acquire and release by rank 0's process
    assert [(e["event"], e["what"]) for e in events] == [("acquire", "holder"), ("acquire", "train"),
                                                         ("release", "train")]
    assert events[1]["previous_unreleased"]["pid"] == process.pid


# -- studies ---------------------------------------------------------------------------------------------------

def _plan(tmp_path, baselines=False):
    from tests.test_study import smoke_plan
    return smoke_plan(tmp_path / "s", tmp_path / "cache", total_steps=[6], teacher_steps=[2], methods=("salt",),
                      baselines=baselines)


def test_a_study_submits_nothing_for_a_run_whose_folder_another_job_holds(tmp_path, holder):
    from salt.study import LaunchOptions, run_plan
    plan = _plan(tmp_path)
    teacher, student = plan.runs
    process = holder(teacher.run_dir, 600)   # e.g. a job of another host, or a user's own run on the folder
    states = run_plan(plan, LaunchOptions(executor="debug"))
    assert states[teacher.run_id]["state"] == "running" and states[teacher.run_id]["attempts"] == 0
    assert f"pid {process.pid}" in states[teacher.run_id]["reason"]
    assert states[student.run_id]["state"] == "not started"   # waits for its teacher
    assert not teacher.layout.job.exists()


@pytest.mark.slow
def test_two_concurrent_study_invocations_train_every_run_once(tmp_path):
    """Invocation B starts while A's first job (the teacher) trains: B runs the baselines (independent of the
    teacher) and A, reaching them, submits neither again (before, A went by the states it read at its start: each
    baseline counted 2 tries). Each run's lock log shows one job at a time."""
    plan = _plan(tmp_path, baselines=True)
    code = textwrap.dedent(f"""
        from salt.study import LaunchOptions, run_plan
        from tests.test_run_lock import _plan
        from pathlib import Path
        states = run_plan(_plan(Path({str(tmp_path)!r}), baselines=True), LaunchOptions(executor="local", threads=1))
        print({{run_id: str(s["state"]) for run_id, s in states.items()}})
    """)
    first = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    teacher = plan.runs[0]
    _wait_for(lambda: held_by(teacher.run_dir) is not None or first.poll() is not None, 180, "the first job")
    second = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    from salt.study import run_states
    states = run_states(plan.runs)
    assert {str(s["state"]) for s in states.values()} == {"done"}, states
    tries = {spec.run_id: json.loads(spec.layout.job.read_text())["attempts"] for spec in plan.runs}
    assert tries == {spec.run_id: 1 for spec in plan.runs}
    for spec in plan.runs:
        events = _events(spec.run_dir)
        assert [e["event"] for e in events] == ["acquire", "release"], events
        assert events[0]["what"] == ("evaluate baseline" if spec.role == "baseline" else "study job")


@pytest.mark.slurm
def test_a_slurm_job_holds_its_run_and_a_cancelled_one_never_blocks_the_next(slurm_cluster, tmp_path):
    """The lock file names the SLURM job that trains the run; a second invocation while it runs submits nothing;
    once it is cancelled (killed: no release) the resubmitted job takes the lock and logs the dead holder."""
    from salt.study import LaunchOptions, run_plan, run_states
    from studies.compute_allocation import PRESETS, AllocationDials, build
    dials = AllocationDials(**{**PRESETS["smoke"].__dict__, "total_steps": [3001], "teacher_steps": [3000],
                               "methods": ("pixel",), "baselines": False})
    plan = build(dials, "smoke", tmp_path / "s", [f"data.moving_digits.cache_dir={tmp_path / 'cache'}"])
    options = LaunchOptions(executor="slurm", partition=slurm_cluster.partition, cpus_per_task=1, threads=1,
                            time_min=10, wait=False)
    (teacher,) = plan.runs

    def holding_job():
        return (held_by(teacher.run_dir) or {}).get("slurm_job_id", "")

    first = run_plan(plan, options)[teacher.run_id]["job_id"]
    _wait_for(lambda: holding_job() == first, 120, f"job {first} to hold the run's lock")
    again = run_plan(plan, options)[teacher.run_id]   # a second invocation while it runs: nothing submitted
    assert again["job_id"] == first and again["attempts"] == 1 and again["state"] == "running"
    slurm_cluster.run("scancel", first)
    _wait_for(lambda: held_by(teacher.run_dir) is None, 120, "the cancelled job's lock to go")
    _wait_for(lambda: run_states([teacher])[teacher.run_id]["state"].is_failed, 60, "the cancelled job to leave")
    second = run_plan(plan, options)[teacher.run_id]["job_id"]   # resubmitted: the dead holder does not block
    assert second != first
    _wait_for(lambda: holding_job() == second, 120, f"job {second} to hold the run's lock")
    slurm_cluster.run("scancel", second)
    events = _events(teacher.run_dir)
    assert [(e["event"], e["slurm_job_id"]) for e in events] == [("acquire", first), ("acquire", second)]
    assert events[1]["previous_unreleased"]["slurm_job_id"] == first
    assert json.loads(teacher.layout.job.read_text())["attempts"] == 2
