"""The checkpoint format: atomic saves by step (names from salt.layout), `weights_only=True` loads, and loading
that names every missing, unexpected or mis-shaped tensor. Below objectives, training and evaluation alike."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from salt.errors import UserError
from salt.io import atomic_write_bytes
from salt.layout import RunLayout

FORMAT_VERSION = 1


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write the checkpoint of `step` atomically, then delete all but the newest `keep`."""
    layout = RunLayout(run_dir)
    path = layout.checkpoint(step)
    atomic_write_bytes(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
    for _, old in layout.checkpoints()[:-keep]:
        old.unlink(missing_ok=True)
    return path


class UnreadableCheckpointError(UserError, RuntimeError):
    """A checkpoint file that torch cannot read (truncated, corrupt): not a format this code refuses."""


class CheckpointMismatchError(UserError, RuntimeError):
    """A readable checkpoint this code refuses: another format version, or tensors missing, unexpected or of
    another shape than the model its config builds (e.g. a teacher whose config.yaml does not match its weights)."""


class CheckpointFallbackWarning(UserWarning):
    """A run's latest checkpoint could not be read: it was set aside and an earlier one is used."""


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True; a missing or unreadable file is an error naming it (never swallowed).
    A run folder means its latest readable checkpoint (`load_latest`)."""
    path = Path(path)
    if path.is_dir():
        found = load_latest(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in run folder {path} (looked in {RunLayout(path).checkpoints_dir})")
        return found[1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} is neither a run folder nor a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e) or ("an empty file" if path.stat().st_size == 0 else type(e).__name__)
        raise UnreadableCheckpointError(f"cannot read checkpoint {path}: {reason}") from e
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointMismatchError(f"checkpoint {path} has format version {state.get('format_version')!r}, "
                                      f"this code reads {FORMAT_VERSION}")
    return state


def load_latest(run_dir: str | Path) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint of `run_dir` that can be read, None when it has none. A newer one
    that cannot be read (a truncated write of a full disk, a damaged file) is moved aside (RunLayout.set_aside:
    kept for inspection, never loaded again) with a CheckpointFallbackWarning naming it, and the one before it is
    tried; when none can be read, the error names every file set aside (rerunning then starts from step 0)."""
    layout, set_aside = RunLayout(Path(run_dir)), []
    for _, path in reversed(layout.checkpoints()):
        try:
            return path, load_checkpoint(path)
        except UnreadableCheckpointError as error:
            aside = layout.set_aside(path)
            try:
                path.rename(aside)
            except FileNotFoundError:   # another process of the run moved it first
                pass
            set_aside.append(str(aside))
            warnings.warn(f"{error}; moved to {aside.name}, trying the checkpoint before it",
                          CheckpointFallbackWarning, stacklevel=2)
    if set_aside:
        raise UnreadableCheckpointError(f"no readable checkpoint in {layout.checkpoints_dir}: set aside "
                                        f"{', '.join(set_aside)} (rerunning starts the run from step 0)")
    return None


def load_matching(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """load_state_dict, but a missing, extra or wrongly shaped tensor is an error naming it."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    if missing or extra:
        raise CheckpointMismatchError(f"{what}: checkpoint does not match the config: "
                                      f"missing tensors {missing[:5]}, unexpected tensors {extra[:5]}")
    for k, v in own.items():
        if tuple(v.shape) != tuple(state_dict[k].shape):
            raise CheckpointMismatchError(f"{what}: tensor {k!r} has shape {tuple(state_dict[k].shape)} in the "
                                          f"checkpoint but {tuple(v.shape)} in the model built from the config")
    module.load_state_dict(state_dict)
