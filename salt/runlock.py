"""One run, one writer: an exclusive `flock` on RUN_DIR/lock (RunLayout.lock) while a job trains or evaluates a
run. The kernel drops it when the holding process dies, however it dies (SIGKILL, OOM, a node's processes
killed), so a stale lock never blocks; what is left is the holder's description in the file, which the next
holder reports as the previous holder that did not release. The file says who holds it (pid, host, SLURM job,
since when, the command), so a second job for the same run exits naming that job, or waits up to `wait_s`.

Every acquire and release is appended to RUN_DIR/lock.jsonl (RunLayout.lock_log), written while the lock is
held, so the log is ordered and shows whether two writers ever overlapped.

Under several training processes of one job (salt.train.distributed) rank 0 alone takes the lock and every rank
learns whether it did (`hold(..., dist=context)`), so all of them stop together when another job holds it.
Nested holds in one process (a training job's periodic evaluation) share the outer lock.

Shared filesystems: Linux NFS clients turn flock into a POSIX lock on the server (NFSv3 with lockd, NFSv4), so
jobs on different nodes exclude each other; a crashed node's locks go when the server's lease expires (NFSv4:
about 90 s). Lustre needs the `flock` mount option (without it flock fails, and this says so).

No torch: the study launcher asks `held_by` whether a run's job is running.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

from salt.io import append_line, raise_if_full
from salt.layout import RunLayout, StudyLayout

GRACE_S = 2.0   # every acquire retries this long: a launcher's `held_by` probe holds a shared lock for an instant
DEAD_HOLDER_S = 30.0   # ... and this much longer when the named holder is a dead process of this host: its forked
# children (DataLoader workers) share its open lock file until they notice and exit (within seconds)
POLL_S = 0.2


class RunLockedError(OSError):
    """Another job holds the run folder's lock: the message names it (pid, host, SLURM job, since when). An
    OSError with errno EBUSY: a command line reports it as one line, like any other file it cannot use."""

    def __init__(self, message: str):
        super().__init__(errno.EBUSY, message)


def job_identity(what: str) -> dict:
    """Who is asking: written into the lock file and the lock log."""
    slurm = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        slurm = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": slurm,
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", ""),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "time": time.time(), "command": " ".join(sys.argv)[:500]}


_LOGGED = ("what", "pid", "host", "slurm_job_id", "slurm_restart_count")   # who, in each lock.jsonl line


def process_alive(host: str, pid: int | str) -> bool:
    """A process of this host is alive (a local job, an HPO worker); a zombie (exited, not yet reaped by its
    parent) is not. Another host's process cannot be seen from here: False, so a caller that must not call a
    remote process dead compares `host` with `socket.gethostname()` first."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    if not os.path.isdir("/proc"):   # not Linux: kill(0) is all there is
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:   # exited since
        return False


def describe(holder: dict | None) -> str:
    """"'train' (pid 123 on host n1, SLURM job 456, since 2026-..., command: ...)" for a message."""
    if not holder:
        return "a job that has not written its name yet"
    slurm = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return (f"{holder.get('what', 'a job')!r} (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{slurm}, "
            f"since {holder.get('since', '?')}, command: {holder.get('command', '?')})")


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):   # being written this instant
        return None


class _Lock:
    """One held lock: the open file (the flock belongs to it) and who holds it."""

    def __init__(self, path: Path, log: Path | None, fd: int, holder: dict):
        self.path, self.log, self.fd, self.holder, self.depth = path, log, fd, holder, 1

    def append_log(self, event: str, **extra) -> None:
        if self.log is None:
            return
        who = {key: self.holder[key] for key in _LOGGED}   # one short line per event, written under the lock
        append_line(self.log, json.dumps({"event": event, "time": time.time(), **who, **extra}, sort_keys=True))

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)   # no holder any more (a holder that dies leaves its name: reported as stale)
            self.append_log("release")
        except OSError as error:   # a full disk must not keep the lock: the kernel would drop it at exit anyway
            warnings.warn(f"could not log the release of {self.path}: {error}", RuntimeWarning, stacklevel=3)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


_held: dict[str, _Lock] = {}   # lock file path -> this process's lock on it (keyed by pid too: see _mine)


def _key(path: Path) -> str:
    return f"{os.getpid()}:{os.path.realpath(path)}"


def acquire(path: Path, log: Path | None, what: str, wait_s: float = 0.0) -> _Lock:
    """flock `path` exclusively, waiting up to max(wait_s, GRACE_S); RunLockedError naming the holder after that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline, extended = time.monotonic() + max(wait_s, GRACE_S), False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    if (holder and not extended and holder.get("host") == socket.gethostname()
                            and not process_alive(holder["host"], holder.get("pid", ""))):
                        deadline, extended = deadline + DEAD_HOLDER_S, True
                        continue
                    waited = f" (waited {wait_s:g} s)" if wait_s else ""
                    raise RunLockedError(f"{path.parent} is in use{waited}: held by {describe(holder)} "
                                         f"(lock file {path}). One job at a time trains or evaluates a run: wait "
                                         "for that job to finish, or stop it; a dead job's lock is released by "
                                         "the kernel") from None
                time.sleep(POLL_S)
            except OSError as error:
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise OSError(error.errno, f"the filesystem of {path} does not support flock ({error.strerror});"
                                               " on Lustre mount it with -o flock") from error
                raise
        previous = _read_holder(fd)   # a holder that did not release: it died (the kernel dropped its lock)
        holder = job_identity(what)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder, sort_keys=True) + "\n").encode(), 0)
        except OSError as error:
            raise_if_full(path, error)
            raise
        lock = _Lock(path, log, fd, holder)
        stale = {"previous_unreleased": {key: previous.get(key, "") for key in _LOGGED}} if previous else {}
        lock.append_log("acquire", **stale)
        return lock
    except BaseException:
        os.close(fd)   # closing drops the flock too
        raise


@contextlib.contextmanager
def hold_lock(path: Path, log: Path | None, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock on `path` for the block; nested holds in one process share the outer one."""
    key = _key(path)
    if key in _held:
        _held[key].depth += 1
        try:
            yield
        finally:
            _held[key].depth -= 1
        return
    _held[key] = acquire(path, log, what, wait_s)
    try:
        yield
    finally:
        _held.pop(key).release()


@contextlib.contextmanager
def hold(run_dir: str | Path, what: str, *, wait_s: float = 0.0, dist=None, create: bool = True) -> Iterator[None]:
    """Hold RUN_DIR's lock while the block trains or evaluates it. `dist` (a salt.train.distributed context):
    rank 0 alone locks, and every rank raises RunLockedError if it could not (checked with one collective).
    `create=False` (evaluating an existing run): a folder that does not exist is not made, and the block runs
    unlocked (it fails naming the missing folder)."""
    layout = RunLayout(Path(run_dir))
    if not create and not layout.root.is_dir():
        yield
        return
    if dist is None or not dist.enabled:
        with hold_lock(layout.lock, layout.lock_log, what, wait_s):
            yield
        return
    with contextlib.ExitStack() as stack:
        error = None
        if dist.is_main:
            try:
                stack.enter_context(hold_lock(layout.lock, layout.lock_log, what, wait_s))
            except RunLockedError as e:
                error = e
        try:
            dist.check_same(0 if error else 1, "whether rank 0 holds the run folder's lock")
        except RuntimeError:
            if error is not None:
                raise error from None
            raise RunLockedError(f"rank 0 could not lock {layout.root}: another job holds it (its error names "
                                 "the job)") from None
        yield


def held_by(run_dir: str | Path) -> dict | None:
    """The holder of RUN_DIR's lock ({} when it has not written its name yet), None when no process holds it.
    Probes with a shared lock for an instant (a job acquiring at that moment retries for GRACE_S)."""
    return _probe(RunLayout(Path(run_dir)).lock)


def _probe(path: Path) -> dict | None:
    if _key(path) in _held:
        return _held[_key(path)].holder
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_log(run_dir: str | Path) -> list[dict]:
    """RUN_DIR/lock.jsonl's events, oldest first ([] without one)."""
    path = RunLayout(Path(run_dir)).lock_log
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def overlaps(events: list[dict]) -> list[str]:
    """What in a lock log would mean two holders at once (a fault harness's check): an acquire while another holder
    neither released nor is named as the dead holder before it, or a release by a process that did not hold it."""
    problems, holder = [], None
    for i, event in enumerate(events):
        who = (event["host"], event["pid"])
        if event["event"] == "acquire":
            previous = event.get("previous_unreleased")
            if holder is not None and (previous is None or (previous["host"], previous["pid"]) != holder):
                problems.append(f"event {i}: pid {event['pid']} on {event['host']} acquired while pid {holder[1]} "
                                f"on {holder[0]} held the lock")
            holder = who
        else:
            if who != holder:
                problems.append(f"event {i}: pid {event['pid']} on {event['host']} released a lock it did not hold")
            holder = None
    return problems


@contextlib.contextmanager
def hold_study(root: str | Path, wait_s: float = 600.0) -> Iterator[None]:
    """A study invocation's submission pass (deciding what to submit, submitting, recording it in job.json) is
    done by one invocation at a time, so a second one sees the first one's jobs and submits none of them again."""
    layout = StudyLayout(Path(root))
    with hold_lock(layout.submit_lock, None, "study submission", wait_s):
        yield
