"""What a run writes about itself, one writer for every kind of run (the training loop's and an imported
encoder's alike): its checkpoints (`Checkpoint`: atomic saves by step, names from salt.layout, `weights_only=True`
loads, loading that names every missing, unexpected or mis-shaped tensor) and its done.json summary (`RunSummary`,
`finish_run`; `write_run_config`). Below objectives, training and evaluation alike.

Checkpoint format versions (the file's `format_version`):
  1  the training loop's state, data counters at the top level (files from before `seek_fallbacks` or the
     collapse alarm lack them); the importer's files were pixel runs with a freshly initialised decoder and an
     `imported` flag. Read as version 2: a counter a file lacks is 0, the flag is dropped (such a run still loads
     and evaluates as the pixel run its config says it is).
  2  `data_counts` holds the counters; `optimizer`, `rng`, `data` and `masks` are null in a checkpoint nothing
     resumes (an imported encoder: `models` holds its encoder alone).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

import yaml

from salt.errors import UserError
from salt.io import atomic_write_bytes, atomic_write_text
from salt.layout import LayoutError, RunLayout

FORMAT_VERSION = 2
V1_DATA_COUNTERS = ("decode_failures", "seek_fallbacks")   # the counters of version-1 files (frozen with them)


class UnreadableCheckpointError(UserError, RuntimeError):
    """A checkpoint file that torch cannot read (truncated, corrupt): not a format this code refuses."""


class CheckpointMismatchError(UserError, RuntimeError):
    """A readable checkpoint this code refuses: another format version, a field missing or of the wrong type, or
    tensors missing, unexpected or of another shape than the model its config builds (e.g. a teacher whose
    config.yaml does not match its weights)."""


class CheckpointFallbackWarning(UserWarning):
    """A run's latest checkpoint could not be read: it was set aside and an earlier one is used."""


def _required(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _check_types(obj, where: str, kinds: dict) -> None:
    for name, kind in kinds.items():
        value = getattr(obj, name)
        if not isinstance(value, kind):
            raise CheckpointMismatchError(f"{where}: field {name!r} is {value!r} ({type(value).__name__})")


@dataclass(eq=False)   # (tensors have no single truth value to compare by)
class Checkpoint:
    """The state of a run about to compute step `step` (a trained run), or an encoder made elsewhere (an
    imported one: step 0, no optimiser, no RNG: nothing to resume)."""
    step: int
    run_id: str
    config: dict                                   # the run's resolved config (salt.config.to_dict)
    models: dict                                   # {network: state dict}: the objective's saved() modules
    flops: float = 0.0                             # this run's compute up to `step`
    flops_total: float = 0.0                       # ... plus its teacher chain's
    data_counts: dict = field(default_factory=dict)   # salt.data.DATA_COUNTERS so far
    optimizer: dict | None = None                  # the optimiser's state dict (None: nothing to resume)
    rng: dict | None = None                        # {"torch": the global RNG state}
    data: dict | None = None                       # {"seed", "next_step"}: data order is a pure function of them
    masks: dict | None = None                      # {"seed", "stream", "next_step"}: so are the masks
    watch: dict | None = None                      # the collapse alarm's state (salt.train.watch) when watched

    def to_dict(self) -> dict:
        """The file's content: plain containers and tensors, what `weights_only=True` loads (no `watch` key when
        the run is not watched)."""
        state = {"format_version": FORMAT_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}
        if self.watch is None:
            del state["watch"]
        return state

    @classmethod
    def from_dict(cls, state, where: str = "checkpoint") -> Checkpoint:
        """A version-2 state, or a version-1 one read as version 2; anything else is a CheckpointMismatchError
        naming the version or the field."""
        if not isinstance(state, dict):
            raise CheckpointMismatchError(f"{where} holds a {type(state).__name__}, not a checkpoint dict")
        version = state.get("format_version")
        if version == 1:
            state = _version_1_as_2(state)
        elif version != FORMAT_VERSION:
            raise CheckpointMismatchError(f"{where} has format version {version!r}; this code reads 1 and "
                                          f"{FORMAT_VERSION}")
        names = [f.name for f in fields(cls)]
        missing = [name for name in _required(cls) if name not in state]
        unknown = sorted(set(state) - set(names) - {"format_version"})
        if missing or unknown:
            raise CheckpointMismatchError(f"{where} (format version {version}): missing fields {missing}, unknown "
                                          f"fields {unknown}")
        checkpoint = cls(**{name: state[name] for name in names if name in state})
        _check_types(checkpoint, where, {"step": int, "run_id": str, "config": dict, "models": dict,
                                         "flops": (int, float), "flops_total": (int, float), "data_counts": dict,
                                         **{n: (dict, type(None)) for n in ("optimizer", "rng", "data", "masks",
                                                                            "watch")}})
        if not all(math.isfinite(v) and v >= 0 for v in (checkpoint.flops, checkpoint.flops_total)):
            raise CheckpointMismatchError(f"{where}: FLOPs must be finite and >= 0, got {checkpoint.flops}, "
                                          f"{checkpoint.flops_total}")
        return checkpoint


def _version_1_as_2(state: dict) -> dict:
    """Version 1: the counters at the top level (those a file lacks were not counted yet: 0); the importer's
    `imported` flag (its runs are pixel runs, decoder included, and load as such)."""
    counts = {key: int(state[key]) if key in state else 0 for key in V1_DATA_COUNTERS}
    rest = {k: v for k, v in state.items() if k not in (*V1_DATA_COUNTERS, "imported")}
    return {**rest, "data_counts": counts}


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint, keep: int) -> Path:
    """Write `checkpoint` atomically as the run's checkpoint of its step, then delete all but the newest `keep`."""
    layout = RunLayout(run_dir)
    path = layout.checkpoint(checkpoint.step)
    state = checkpoint.to_dict()
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    for _, old in layout.checkpoints()[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint as the current format's dict (`Checkpoint.to_dict()`; a version-1 file read as version 2;
    `Checkpoint.from_dict` of it for typed access). Loaded with weights_only=True; a missing or unreadable file is
    an error naming it (never swallowed), a field this code cannot use one naming the field. A run folder means
    its latest readable checkpoint (`load_latest`)."""
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
    return Checkpoint.from_dict(state, f"checkpoint {path}").to_dict()


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


# -- the run summary (done.json) -------------------------------------------------------------------------------

SUMMARY_KEYS = ("schema_version", "id_scheme")   # added by RunLayout.write_done, not part of the summary itself


@dataclass
class RunSummary:
    """A finished run's done.json: trained here (salt.train.loop) or an imported encoder (salt.importers). On
    disk flat, as it always was: the data counters at the top level, `flops_note` and `imported` only when set."""
    run_id: str
    method: str
    steps: int
    params: dict                                   # {network: parameter count}
    flops: dict                                    # {"run", "teacher_stage", "total"}: FLOPs, None when unknown
    wall_time_s: float
    device: str
    checkpoint: str                                # the last checkpoint written
    final_metrics: dict = field(default_factory=dict)   # the last step's logged metrics
    data_counts: dict = field(default_factory=dict)     # salt.data.DATA_COUNTERS over the run
    teacher_checkpoint: str = ""                   # a student's frozen teacher
    flops_note: str = ""                           # why `flops` are unknown (an imported encoder)
    imported: dict | None = None                   # an imported encoder's provenance (salt.importers)

    def to_dict(self) -> dict:
        summary = {"run_id": self.run_id, "method": self.method, "steps": self.steps,
                   "final_metrics": self.final_metrics, "flops": self.flops, "params": self.params,
                   **self.data_counts, "wall_time_s": self.wall_time_s, "device": self.device,
                   "checkpoint": self.checkpoint, "teacher_checkpoint": self.teacher_checkpoint}
        if self.flops_note:
            summary["flops_note"] = self.flops_note
        if self.imported is not None:
            summary["imported"] = self.imported
        return summary

    @classmethod
    def from_dict(cls, data: dict, where: str = "done.json") -> RunSummary:
        """A done.json of any version (RunLayout.read_done's): keys that are not fields are data counters (a
        number each); a missing field or a counter that is not a count is a LayoutError naming it."""
        names = {f.name for f in fields(cls)} - {"data_counts"}
        missing = [name for name in _required(cls) if name not in data]
        counts = {k: v for k, v in data.items() if k not in names and k not in SUMMARY_KEYS}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or isinstance(v, bool)}
        if missing or bad:
            raise LayoutError(f"{where} is not a run summary: missing fields {missing}, values that are neither a "
                              f"field nor a data count {sorted(bad)}")
        return cls(**{k: v for k, v in data.items() if k in names}, data_counts=counts)


def write_run_config(layout: RunLayout, config: dict) -> None:
    """The run's config.yaml (its resolved config, salt.config.to_dict), written atomically."""
    atomic_write_text(layout.config, yaml.safe_dump(config, sort_keys=False))


def finish_run(layout: RunLayout, summary: RunSummary) -> dict:
    """Mark the run finished: its summary as done.json (atomic, versioned: RunLayout.write_done); -> as written."""
    return layout.write_done(summary.to_dict())

