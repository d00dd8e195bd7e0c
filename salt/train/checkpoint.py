"""Atomic checkpoints by step. A crash mid-write never leaves a torn file under a checkpoint's name."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    path = checkpoint_path(run_dir, step)
    atomic_write_bytes(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True; a missing or unreadable file is an error naming it (never swallowed)."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in run folder {path} (looked in {path / 'checkpoints'})")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from e
    if state.get("format_version") != FORMAT_VERSION:
        raise RuntimeError(f"checkpoint {path} has format version {state.get('format_version')!r}, "
                           f"this code reads {FORMAT_VERSION}")
    return state


def load_matching(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """load_state_dict, but a missing, extra or wrongly shaped tensor is an error naming it."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    if missing or extra:
        raise RuntimeError(f"{what}: checkpoint does not match the config: "
                           f"missing tensors {missing[:5]}, unexpected tensors {extra[:5]}")
    for k, v in own.items():
        if tuple(v.shape) != tuple(state_dict[k].shape):
            raise RuntimeError(f"{what}: tensor {k!r} has shape {tuple(state_dict[k].shape)} in the checkpoint "
                               f"but {tuple(v.shape)} in the model built from the config")
    module.load_state_dict(state_dict)
