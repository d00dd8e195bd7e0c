"""RunState: every SLURM job state code maps to one state, and active / failed / healthy are what the launcher and
the exit code rely on (no SLURM needed: the mapping is pure)."""
import os
import socket
import subprocess
import sys

import pytest

from salt.study.spec import StudyError
from salt.study.state import SLURM_STATES, RunState, process_alive

# squeue(1)/sacct(1) "JOB STATE CODES" of SLURM 22.05-24.x, each with the state a study must see
EXPECTED = {
    "PENDING": "pending", "CONFIGURING": "pending", "RESV_DEL_HOLD": "pending",
    "RUNNING": "running", "RESIZING": "running", "SIGNALING": "running",
    "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued", "SPECIAL_EXIT": "requeued",
    "COMPLETING": "completing", "STAGE_OUT": "completing",
    "SUSPENDED": "suspended", "STOPPED": "suspended",
    "PREEMPTED": "preempted", "FAILED": "failed", "TIMEOUT": "timeout", "DEADLINE": "timeout",
    "CANCELLED": "cancelled", "REVOKED": "cancelled", "NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail",
    "OUT_OF_MEMORY": "out_of_memory", "COMPLETED": "done",
}


def test_every_slurm_state_code_maps():
    assert set(SLURM_STATES) == set(EXPECTED)
    for code, name in EXPECTED.items():
        assert RunState.from_slurm(code) is RunState(name), code
    # sacct's decorations: "CANCELLED by <uid>", a trailing "+" when the name was cut, any case
    assert RunState.from_slurm("CANCELLED by 1000") is RunState.CANCELLED
    assert RunState.from_slurm("OUT_OF_MEMORY+") is RunState.OUT_OF_MEMORY
    assert RunState.from_slurm(" running\n") is RunState.RUNNING
    with pytest.raises(StudyError, match="unknown SLURM job state 'WEIRD'.*PENDING"):
        RunState.from_slurm("WEIRD")


def test_active_failed_and_healthy_partition_the_states():
    active = {s for s in RunState if s.is_active}
    failed = {s for s in RunState if s.is_failed}
    assert {s.value for s in active} == {"pending", "running", "requeued", "completing", "suspended"}
    assert {s.value for s in failed} == {"failed", "timeout", "cancelled", "node_fail", "out_of_memory", "preempted"}
    assert set(RunState) - active - failed == {RunState.DONE, RunState.NOT_STARTED}
    assert {s for s in RunState if s.is_healthy} == active | {RunState.DONE}
    # every SLURM code lands on a state the launcher can act on: active (leave it) or not (resubmit / done)
    assert all(RunState.from_slurm(code).is_active != (RunState.from_slurm(code).is_failed or code == "COMPLETED")
               for code in SLURM_STATES)


def test_a_state_is_its_name():
    """Older callers and job.json readers compare with strings; the status table prints the name."""
    assert RunState.DONE == "done" and {RunState.NOT_STARTED} == {"not started"}
    assert f"{RunState.OUT_OF_MEMORY:<15}|" == "out_of_memory  |" and str(RunState.REQUEUED) == "requeued"
    assert RunState("node_fail") is RunState.NODE_FAIL


def test_process_alive_sees_this_hosts_processes_only():
    host = socket.gethostname()
    assert process_alive(host, os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped: a zombie is not alive
    assert not process_alive(host, child.pid)
    child.wait()
    assert not process_alive(host, child.pid)
    assert not process_alive("another-host", os.getpid()) and not process_alive(host, "not a pid")
