"""A run's (or a worker's) state, and where it comes from: the run folder, SLURM (squeue while the job is known to
the controller, sacct after it left), or the process table for local jobs.

One type, `RunState`, so that every reader (the launcher, `status`, the exit code, HPO) asks the same two
questions: `is_active` (queued or running: never submit it again) and `is_failed` (finished without a result:
may be resubmitted). Its values are the names the status table prints.
"""
from __future__ import annotations

import shutil
import subprocess
from enum import Enum

from salt.runlock import process_alive  # noqa: F401  (the launcher's and HPO's: one definition)
from salt.study.spec import StudyError


class RunState(str, Enum):
    """What a run is doing. A `str`, so it compares equal to its name ("done") and serialises as one.

    SLURM's job state codes (squeue %T, sacct State) map onto these (`from_slurm`); where SLURM has more states
    than a study needs to tell apart, the choice is:
      CONFIGURING (nodes booting for an allocated job) and RESV_DEL_HOLD (held after its reservation was
        deleted) -> pending: queued, not yet computing;
      RESIZING and SIGNALING (being resized / signalled) -> running;
      STAGE_OUT (burst-buffer stage-out after the job ran) -> completing;
      REQUEUE_HOLD, REQUEUE_FED and SPECIAL_EXIT (requeued, possibly held for an admin or a federation sibling)
        -> requeued: the job is still in the queue, so resubmitting would run the run twice; release it with
        `scontrol release`;
      STOPPED (SIGSTOP'ed, keeps its resources) -> suspended;
      BOOT_FAIL (its node failed to boot) -> node_fail; DEADLINE (killed at its --deadline) -> timeout;
      REVOKED (a federation sibling runs it on another cluster; this one will not) -> cancelled;
      COMPLETED -> done; the launcher still calls a run done only when its folder says so (done.json and
        records), so a COMPLETED job without them is a failed run.
    """

    NOT_STARTED = "not started"
    PENDING = "pending"
    RUNNING = "running"
    REQUEUED = "requeued"
    COMPLETING = "completing"
    SUSPENDED = "suspended"
    PREEMPTED = "preempted"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    OUT_OF_MEMORY = "out_of_memory"
    DONE = "done"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_active(self) -> bool:
        """Queued or running (possibly again, after a requeue): its job will still produce a result."""
        return self in _ACTIVE

    @property
    def is_failed(self) -> bool:
        """Finished without a result (an error, or killed by SLURM): the run may be submitted again."""
        return self in _FAILED

    @property
    def is_healthy(self) -> bool:
        """Done or on its way: what a study's exit code 0 means."""
        return self is RunState.DONE or self.is_active

    @classmethod
    def from_slurm(cls, code: str) -> RunState:
        """The state of a SLURM job state code: squeue's %T (`PENDING`) or sacct's State, which may carry a
        suffix (`CANCELLED by 1000`, `CANCELLED+`). An unknown code is an error that names it."""
        name = code.strip().split(" ")[0].rstrip("+").upper()
        try:
            return SLURM_STATES[name]
        except KeyError:
            raise StudyError(f"unknown SLURM job state {code!r} (known: {', '.join(sorted(SLURM_STATES))})") from None


_ACTIVE = frozenset({RunState.PENDING, RunState.RUNNING, RunState.REQUEUED, RunState.COMPLETING,
                     RunState.SUSPENDED})
_FAILED = frozenset({RunState.FAILED, RunState.TIMEOUT, RunState.CANCELLED, RunState.NODE_FAIL,
                     RunState.OUT_OF_MEMORY, RunState.PREEMPTED})

# every job state code of SLURM (squeue(1) "JOB STATE CODES", sacct(1) "JOB STATE CODES"); why each maps
# where it does: RunState's docstring
SLURM_STATES: dict[str, RunState] = {
    "PENDING": RunState.PENDING, "CONFIGURING": RunState.PENDING, "RESV_DEL_HOLD": RunState.PENDING,
    "RUNNING": RunState.RUNNING, "RESIZING": RunState.RUNNING, "SIGNALING": RunState.RUNNING,
    "REQUEUED": RunState.REQUEUED, "REQUEUE_HOLD": RunState.REQUEUED, "REQUEUE_FED": RunState.REQUEUED,
    "SPECIAL_EXIT": RunState.REQUEUED,
    "COMPLETING": RunState.COMPLETING, "STAGE_OUT": RunState.COMPLETING,
    "SUSPENDED": RunState.SUSPENDED, "STOPPED": RunState.SUSPENDED,
    "PREEMPTED": RunState.PREEMPTED,
    "FAILED": RunState.FAILED,
    "TIMEOUT": RunState.TIMEOUT, "DEADLINE": RunState.TIMEOUT,
    "CANCELLED": RunState.CANCELLED, "REVOKED": RunState.CANCELLED,
    "NODE_FAIL": RunState.NODE_FAIL, "BOOT_FAIL": RunState.NODE_FAIL,
    "OUT_OF_MEMORY": RunState.OUT_OF_MEMORY,
    "COMPLETED": RunState.DONE,
}


def slurm_queue(job_ids: list[str]) -> dict[str, tuple[RunState, str]]:
    """{job id: (state, SLURM's reason)} for the jobs the controller still lists (squeue: no accounting needed).
    A job missing from the answer has left the queue. Array tasks are listed one by one (`-r`: otherwise squeue
    folds pending tasks into `<id>_[0-3]`). No squeue on PATH, or a controller that does not answer, is an error:
    never "every job left", which would resubmit them all."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise StudyError(f"squeue is not on PATH: cannot tell whether SLURM jobs {', '.join(job_ids)} are still "
                         "queued (run this where the cluster's client commands are)")
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T|%r"], capture_output=True,
                         text=True)
    if out.returncode != 0 and "Invalid job id" not in out.stderr:   # one id, purged: squeue exits 1 with this
        raise StudyError(f"squeue failed (rc {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = line.split("|", 2)
        states[job_id] = (RunState.from_slurm(state), reason)
    return states


def slurm_outcome(job_ids: list[str]) -> dict[str, RunState]:
    """{job id: how it failed} from sacct, for jobs that left the queue, when the cluster keeps accounting: one
    of the failed states (failed, timeout, cancelled, node_fail, out_of_memory, preempted). Jobs sacct does not
    know, or whose recorded state is not a failure (accounting lags behind the queue), are left out: the caller
    falls back to `failed`."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State"],
                         capture_output=True, text=True)
    if out.returncode != 0:   # no accounting storage: fall back
        return {}
    outcome = {}
    for line in out.stdout.splitlines():
        job_id, _, code = line.partition("|")
        try:
            state = RunState.from_slurm(code)
        except StudyError:
            continue
        if job_id in job_ids and state.is_failed:
            outcome[job_id] = state
    return outcome
