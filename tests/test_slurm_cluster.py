"""Real jobs on a SLURM cluster through submitit (the `slurm_cluster` fixture of tests/slurm_fixture.py),
and the cluster profiles under slurm/profiles/.

These check the cluster behaviours a study relies on: results come back, job arrays, a failing job is seen
as failed, afterok dependencies, GPU requests rejected with SLURM's message, `scontrol requeue` runs a job
again. Each test uses its own submitit folder (tmp_path): job ids restart when the cluster state is wiped.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
import yaml

from salt.config import load_config
from salt.study.launch import LaunchOptions, executor_parameters

# the job functions below travel by value: the job's python need not be able to import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---- job functions (run inside SLURM jobs) -------------------------------------------------------------

def add(a, b):
    env = submitit.JobEnvironment()
    return a + b, env.job_id, os.environ.get("SLURM_JOB_PARTITION")


def square(x):
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def boom():
    raise ValueError("boom from a SLURM job")


def timed_sleep(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def note_start_then_wait(path, wait_s):
    """Append a line per start; the first start waits (to be requeued), a later one returns the line count."""
    with open(path, "a") as f:
        f.write(f"start restart={os.environ.get('SLURM_RESTART_COUNT', '0')} job={os.environ.get('SLURM_JOB_ID')}\n")
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) == 1:
        time.sleep(wait_s)
    return len(lines)


class CountSteps(submitit.helpers.Checkpointable):
    """A resumable job: its state (self.step) is pickled by submitit on SIGUSR2 and restored on requeue."""

    def __init__(self):
        self.step = 0

    def __call__(self, path, steps):
        while self.step < steps:
            self.step += 1
            with open(path, "a") as f:
                f.write(f"step {self.step} restart={os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
            time.sleep(0.3)
        return self.step


PROFILES = sorted((Path(__file__).resolve().parents[1] / "slurm" / "profiles").glob("*.yaml"))
PROFILE_KEYS = {"executor", "partition", "account", "qos", "gpus_per_node", "nodes", "cpus_per_task", "mem_gb",
                "time_min", "array_parallelism", "additional_parameters", "setup"}


# ---- helpers ---------------------------------------------------------------------------------------------

def wait_for(predicate, timeout, what, interval=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sacct_state(job, want, timeout=20):
    """The job's state as sacct reports it, once it is `want` (the database may lag the job by a moment)."""
    def state():
        st = job.get_info(mode="force").get("State", "UNKNOWN")
        return st if st.split()[0] == want else None
    return wait_for(state, timeout, f"sacct state {want} of job {job.job_id}")


def squeue_field(cluster, job_id, fmt):
    return cluster.run("squeue", "-h", "-j", str(job_id), "-o", fmt, check=False).stdout.strip()


# ---- tests -----------------------------------------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_profile_loads_and_maps_onto_sbatch(path, tmp_path, slurm_cluster):
    """Each profile loads through the strict config path (LaunchOptions) and the study's own mapping
    (salt.study.launch.executor_parameters) writes an sbatch script with it (nothing is submitted).
    submitit's SLURM executor refuses to exist without `srun` on PATH: the cluster fixture installs SLURM
    first (on a fresh machine this test once ran before it and failed)."""
    assert set(yaml.safe_load(path.read_text())) == PROFILE_KEYS, path
    options = load_config(LaunchOptions, [path])
    assert options.executor == "slurm"
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    ex.update_parameters(**executor_parameters(options))
    script = ex._executor._make_submission_file_text("python -c pass", "uid")
    assert f"#SBATCH --partition={options.partition}" in script
    assert f"#SBATCH --time={options.time_min}" in script
    for line in options.setup:
        assert line in script
    if options.gpus_per_node:
        assert f"#SBATCH --ntasks-per-node={options.gpus_per_node}" in script   # one DDP process per GPU


@pytest.mark.slurm
def test_submit_returns_result(slurm_cluster, tmp_path):
    ex = slurm_cluster.executor(tmp_path)
    job = ex.submit(add, 2, 3)
    total, job_id, partition = job.result()
    assert total == 5
    assert job_id == job.job_id
    assert partition == slurm_cluster.partition
    if slurm_cluster.accounting:
        assert sacct_state(job, "COMPLETED")


@pytest.mark.slurm
def test_local_profile_submits(slurm_cluster, tmp_path):
    options = load_config(LaunchOptions, [PROFILES[0].parent / "local.yaml"], [f"partition={slurm_cluster.partition}"])
    job = slurm_cluster.executor(tmp_path, **executor_parameters(options)).submit(add, 20, 22)
    assert job.result()[0] == 42


@pytest.mark.slurm
def test_second_partition(slurm_cluster, tmp_path):
    parts = slurm_cluster.run("sinfo", "-h", "-o", "%P").stdout.split()
    if "cpu" not in parts:
        pytest.skip("no partition named cpu on this cluster")
    job = slurm_cluster.executor(tmp_path, slurm_partition="cpu").submit(add, 1, 1)
    assert job.result()[2] == "cpu"


@pytest.mark.slurm
def test_job_array_returns_all_results(slurm_cluster, tmp_path):
    ex = slurm_cluster.executor(tmp_path, slurm_array_parallelism=2)
    jobs = ex.map_array(square, [1, 2, 3, 4])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1          # one array: <array id>_<task>
    results = [j.result() for j in jobs]
    assert [r[0] for r in results] == [1, 4, 9, 16]
    assert [r[1] for r in results] == ["0", "1", "2", "3"]


@pytest.mark.slurm
def test_failing_job_is_failed(slurm_cluster, tmp_path):
    job = slurm_cluster.executor(tmp_path).submit(boom)
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom from a SLURM job"):
        job.result()
    assert isinstance(job.exception(), submitit.core.utils.FailedJobError)
    if slurm_cluster.accounting:
        assert sacct_state(job, "FAILED")


@pytest.mark.slurm
def test_afterok_dependency_orders_jobs(slurm_cluster, tmp_path):
    job_a = slurm_cluster.executor(tmp_path / "a").submit(timed_sleep, 3)
    ex_b = slurm_cluster.executor(tmp_path / "b", slurm_additional_parameters={"dependency": f"afterok:{job_a.job_id}"})
    job_b = ex_b.submit(timed_sleep, 0)
    reason = squeue_field(slurm_cluster, job_b.job_id, "%r")
    assert reason in ("Dependency", "None", ""), reason               # "" / None: A already done (slow submit)
    a_start, a_end = job_a.result()
    b_start, _ = job_b.result()
    assert b_start >= a_end


@pytest.mark.slurm
def test_afterok_on_failed_job_never_runs(slurm_cluster, tmp_path):
    job_a = slurm_cluster.executor(tmp_path / "a").submit(boom)
    ex_b = slurm_cluster.executor(tmp_path / "b", slurm_additional_parameters={"dependency": f"afterok:{job_a.job_id}"})
    job_b = ex_b.submit(timed_sleep, 0)
    with pytest.raises(submitit.core.utils.FailedJobError):
        job_a.result()
    # SLURM keeps B pending for ever (it is not cancelled: kill_invalid_depend is not set)
    assert wait_for(lambda: squeue_field(slurm_cluster, job_b.job_id, "%r") == "DependencyNeverSatisfied",
                    20, "B's reason DependencyNeverSatisfied")
    job_b.cancel()


@pytest.mark.slurm
def test_gpu_request_rejected_at_submission(slurm_cluster, tmp_path):
    t0 = time.monotonic()
    out = slurm_cluster.run("sbatch", "--gres=gpu:1", "--wrap", "true", check=False)
    assert out.returncode != 0
    assert "Batch job submission failed" in out.stderr, out.stderr
    ex = slurm_cluster.executor(tmp_path, gpus_per_node=1)
    with pytest.raises(submitit.core.utils.FailedJobError) as err:
        ex.submit(add, 1, 2)
    assert "Requested node configuration is not available" in str(err.value)
    assert time.monotonic() - t0 < 10                                   # rejected at once, nothing queued


@pytest.mark.slurm
def test_scontrol_requeue_runs_the_job_again(slurm_cluster, tmp_path):
    marker = tmp_path / "starts.txt"
    job = slurm_cluster.executor(tmp_path).submit(note_start_then_wait, str(marker), 120)
    wait_for(lambda: marker.exists() and len(marker.read_text().splitlines()) == 1, 30, "the first start")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=slurm_cluster.env, timeout=30)
    wait_for(lambda: len(marker.read_text().splitlines()) >= 2, 45, "the start after requeue", interval=0.5)
    assert job.result() == 2
    lines = marker.read_text().splitlines()
    assert lines[0].startswith("start restart=0") and lines[1].startswith("start restart=1"), lines
    # what the requeued run received: SLURM sends SIGCONT + SIGTERM (then SIGKILL after KillWait);
    # submitit's job process ignores SIGTERM ("Bypassing signal SIGTERM"): no checkpoint happens on requeue
    assert "Bypassing signal SIGTERM" in job.stderr()


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    """What a timeout warning or a preemption does: SIGUSR2 -> Checkpointable.checkpoint -> requeue -> resume."""
    log = tmp_path / "steps.txt"
    job = slurm_cluster.executor(tmp_path).submit(CountSteps(), str(log), 10)
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 30, "3 steps")
    job._interrupt(timeout=True)                       # scancel --signal=USR2, as SLURM does at --signal=USR2@<delay>
    assert job.result() == 10
    lines = log.read_text().splitlines()
    first_restarted = next(i for i, ln in enumerate(lines) if ln.endswith("restart=1"))
    assert 3 <= first_restarted < 10                   # resumed from the checkpoint, not from step 1
    assert lines[first_restarted].startswith(f"step {first_restarted + 1} ")
    assert "Caught signal SIGUSR2" in job.stderr()
