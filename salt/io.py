"""Atomic file writes, below every layer (no torch): a crash mid-write never leaves a torn file under a
result's name. Checkpoints, evaluation records, done markers, job ledgers, plans and tables all go through here."""
from __future__ import annotations

import json
import os
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


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync, then rename it over `path` (with the mode a
    plain `open` would have given it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
