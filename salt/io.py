"""Atomic file writes, below every layer (no torch): a crash mid-write never leaves a torn file under a
result's name. Checkpoints, evaluation records, done markers, job ledgers, plans and tables all go through here,
and logs append whole lines through `append_line` / `append_bytes`.

A write that runs out of space (ENOSPC; EDQUOT: over a quota) leaves the previous file as it was and no temp file
or partial line behind, and raises DiskFullError naming the file and the space left on its filesystem: once space
is freed, rerunning continues from the last good state (a training run from its last checkpoint, `--resume`)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, IO


def _file_mode() -> int:
    """The mode `open` would give a new file under the process's umask (mkstemp's temp files are 0600, which would
    leave results, checkpoints and prepared videos on a shared filesystem readable by their owner alone). The
    umask is read from /proc (Linux 4.7+); only without it is it read by setting it, which for an instant changes
    it for every thread of the process."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write ran out of space: `errno` is ENOSPC (or EDQUOT), the message names the file and the free space;
    the previous file under that name is unchanged and the temp file (or partial line) removed."""


def out_of_space(error: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind `error`, if any (torch.save reports a failed write as a RuntimeError
    raised while handling it)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL:
            return error
        error = error.__cause__ or error.__context__
    return None


def raise_if_full(path: str | Path, error: BaseException) -> None:
    """Raise DiskFullError (from `error`) naming `path` and its filesystem's free space when `error` is a full
    disk or quota; otherwise return (the caller re-raises `error`)."""
    full = out_of_space(error)
    if full is None:
        return
    path = Path(path)
    try:
        usage = shutil.disk_usage(path.parent)
        free = f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.1f} MiB"
    except OSError:
        free = "free space unknown"
    what = "over the disk quota" if full.errno == errno.EDQUOT else "no space left on the device"
    raise DiskFullError(full.errno, f"{what} writing {path} ({free} on its filesystem): the previous file is "
                                    "unchanged and the partial write was removed; free space and run again (a "
                                    "training run continues from its last checkpoint with --resume)") from error


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync, then rename it over `path` (with the mode a
    plain `open` would have given it). Out of space: DiskFullError, the temp file removed, `path` untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise_if_full(path, error)
        raise


def append_bytes(f: IO[bytes], path: str | Path, data: bytes) -> None:
    """Append `data` to `f`, an unbuffered file opened on `path` for appending, whole or not at all: a failed
    write (a full disk) cuts the file back to where it ended, so it keeps ending with its last whole line."""
    end = os.fstat(f.fileno()).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[f.write(view):]
    except OSError as error:
        f.truncate(end)
        raise_if_full(path, error)
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a JSON-lines log entry) to `path`, whole or not at all (`append_bytes`)."""
    with open(path, "ab", buffering=0) as f:
        append_bytes(f, path, (line.rstrip("\n") + "\n").encode())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
