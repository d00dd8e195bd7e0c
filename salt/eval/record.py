"""Evaluation records: one JSON file per (run, checkpoint, evaluation), read back into pandas.

The study and analysis layers only ever see these files, so the writer validates a record before it writes
it (a record that was written can always be read), writes atomically (a reader never sees half a file), and
the reader refuses anything it does not understand instead of guessing. Schema, units and versioning rule:
docs/records.md.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, get_args, get_origin, get_type_hints

from salt.identity import BASELINE_KINDS   # evaluated-only; trained runs name a registered method
from salt.io import atomic_write_bytes
from salt.layout import DEFAULT_BENCHMARK, EVALUATION_NAME, RunLayout, is_record_file

# 2: benchmark, selection, encoder (version-1 files read as the default benchmark, strict selection, and the
# encoder earlier code probed: the trained one)
SCHEMA_VERSION = 2

STAGES = ("teacher", "student", "baseline")
PROBES = ("linear", "attentive", "knn")
SELECTIONS = ("strict", "paper")            # salt.eval.probes.check_selection says what each means
ENCODERS = ("online", "ema", "")             # the trained encoder, V-JEPA's EMA target, none (baselines)
POOLINGS = ("time", "mean", "tokens", "pixels")

# Standard JSON has no NaN/Infinity: NaN is written as null, +-infinity as these strings.
_INFINITIES = {"Infinity": math.inf, "-Infinity": -math.inf}
_KEY_PART = re.compile(r"^[^.#\s]+$")    # probe/pooling/label become parts of a dotted column name


class RecordError(ValueError):
    """A record file that cannot be used: torn, invalid, or from a newer schema. The message names the file."""


def _check_key_part(name: str, value: str) -> None:
    if not isinstance(value, str) or not _KEY_PART.match(value):
        raise ValueError(f"{name} must be a non-empty string without '.', '#' or spaces, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_fraction_or_nan(name: str, value: float) -> None:
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1] (or nan), got {value}")


@dataclass
class ProbeScore:
    probe: str            # "linear" | "attentive" | "knn"
    pooling: str          # "time" (per-time-step pooled, concatenated) | "mean" | "tokens" (attentive) | "pixels"
    label: str            # e.g. "appearance", "motion", "label"
    shots: int            # labelled clips per class; 0 = all labels
    protocol: str         # e.g. "lbfgs", "fast", "systematic", "k=20"
    test_accuracy: float
    test_std: float = 0.0                  # over low-shot draws
    selection_score: float = math.nan      # held-out (train-split) score of the selected hyperparameters
    draws: int = 1
    details: dict[str, Any] = field(default_factory=dict)   # JSON-able extras (per-head scores, chosen lr/wd)

    def __post_init__(self):
        _check_choice("probe", self.probe, PROBES)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_key_part("label", self.label)
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0 (0 = all labels), got {self.shots}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        _check_fraction_or_nan("test_accuracy", self.test_accuracy)
        if not (math.isnan(self.test_std) or self.test_std >= 0):
            raise ValueError(f"test_std must be >= 0 (or nan), got {self.test_std}")

    @property
    def column(self) -> str:
        """The wide-frame column of this score: probe.<probe>.<pooling>.<label>.<shots or 'all'>."""
        shots = "all" if self.shots == 0 else str(self.shots)
        return f"probe.{self.probe}.{self.pooling}.{self.label}.{shots}"


@dataclass
class EvalRecord:
    run_id: str
    method: str                   # a method of salt.objectives.registry (pixel, salt, vjepa, ...) or a baseline
    stage: str                    # teacher | student | baseline
    checkpoint_step: int
    steps_total: int
    evaluation: str               # name of the evaluation protocol, e.g. "fast" / "systematic"
    seed: int = 0
    config_hash: str = ""
    code_version: str = ""        # git commit (salt.provenance.code_version)
    model_size: str = ""
    params: dict[str, int] = field(default_factory=dict)
    teacher_run_id: str = ""
    teacher_step: int = -1
    flops_teacher_stage: float = 0.0
    flops_run: float = 0.0
    flops_total: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    probes: list[ProbeScore] = field(default_factory=list)
    wall_time_s: float = 0.0
    hardware: str = ""
    created_at: str = ""          # ISO-8601 UTC, filled by write_record if empty
    benchmark: str = DEFAULT_BENCHMARK   # what was probed: "default" (the run's own data) or a benchmark's name
    selection: str = "strict"     # strict (chosen on a train holdout) | paper (best of the grid on test: optimistic)
    encoder: str = "online"       # online | ema (V-JEPA's target encoder) | "" (baselines)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not self.run_id:
            raise ValueError("run_id must be a non-empty string")
        # Any method name: the registry (salt.objectives, which needs torch) decides what trains, and a record
        # of a method defined elsewhere (a test, a plugin) must still read back here.
        if not isinstance(self.method, str) or not self.method.isidentifier():
            raise ValueError(f"method must be a method's name (an identifier), got {self.method!r}")
        _check_choice("stage", self.stage, STAGES)
        if (self.stage == "baseline") != (self.method in BASELINE_KINDS):
            raise ValueError(f"stage 'baseline' goes with the methods {BASELINE_KINDS} and only those; "
                             f"got method {self.method!r} with stage {self.stage!r}")
        for name in ("evaluation", "benchmark"):
            if not isinstance(getattr(self, name), str) or not EVALUATION_NAME.match(getattr(self, name)):
                raise ValueError(f"{name} must be a file-name-safe name ([A-Za-z0-9_.-], not starting with "
                                 f"'.', '-' or '_'), got {getattr(self, name)!r}")
        _check_choice("selection", self.selection, SELECTIONS)
        _check_choice("encoder", self.encoder, ENCODERS)
        for name in ("checkpoint_step", "steps_total"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.teacher_step < -1:
            raise ValueError(f"teacher_step must be >= 0, or -1 for no teacher; got {self.teacher_step}")
        for name in ("flops_teacher_stage", "flops_run", "flops_total", "wall_time_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for name, count in self.params.items():
            if count < 0:
                raise ValueError(f"params[{name!r}] must be >= 0, got {count}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version must be {SCHEMA_VERSION} for a record built by this code, "
                             f"got {self.schema_version}")
        seen = set()
        for score in self.probes:
            if not isinstance(score, ProbeScore):
                raise ValueError(f"probes must hold ProbeScore objects, got {type(score).__name__}")
            if score.column in seen:
                raise ValueError(f"probes has two scores for {score.column} (probe, pooling, label, shots "
                                 f"must be unique within a record)")
            seen.add(score.column)


# ---------------------------------------------------------------------------------------------------------
# JSON encoding

def _encode_json(value: Any, where: str) -> Any:
    """Plain JSON data: non-finite floats as null/"Infinity"/"-Infinity", numpy/torch scalars unwrapped."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where} has a non-string key {bad[0]!r}; JSON object keys must be strings")
        return {k: _encode_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:   # numpy / torch scalar
        return _encode_json(value.item(), where)
    raise TypeError(f"{where} holds a {type(value).__name__}, which is not JSON-able")


def _decode_float(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str) and value in _INFINITIES:
        return _INFINITIES[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{where} must be a number (null = nan), got {value!r}")


def _decode(value: Any, hint: Any, where: str) -> Any:
    """Check one JSON value against a dataclass field type and build the Python value."""
    if hint is float:
        return _decode_float(value, where)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"{where} must be an integer, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where} must be a string, got {value!r}")
    origin, args = get_origin(hint), get_args(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be an object, got {value!r}")
        if args[1] is Any:
            return value
        return {k: _decode(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"{where} must be a list, got {value!r}")
        return [_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _decode_dataclass(hint, value, where)
    raise TypeError(f"no decoder for {where} of type {hint}")   # a field type this module does not support


@lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _decode_dataclass(cls, data: Any, where: str):
    where = where or "record"
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TypeError(f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [n for n, f in known.items()
               if n not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise TypeError(f"{where} lacks required field(s) {', '.join(missing)}")
    hints = _hints(cls)
    prefix = "" if where == "record" else f"{where}."
    return cls(**{name: _decode(value, hints[name], prefix + name) for name, value in data.items()})


def record_to_json(record: EvalRecord) -> dict:
    """The record as standard JSON data (what write_record stores)."""
    return _encode_json(asdict(record), "record")


def record_from_json(data: Any) -> EvalRecord:
    """Validate JSON data and build the record. Raises ValueError/TypeError naming the bad field."""
    if not isinstance(data, dict):
        raise TypeError(f"a record must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", MISSING)
    if version is MISSING:
        raise TypeError("schema_version is missing")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is newer than this code reads ({SCHEMA_VERSION}); "
                         f"update salt to read it")
    if version == 1:   # version 1 lacks benchmark, selection and encoder: their defaults are what it measured
        added = sorted({"benchmark", "selection", "encoder"} & set(data))
        if added:
            raise TypeError(f"a schema version 1 record has no field(s) {', '.join(added)}")
        data = {**data, "schema_version": SCHEMA_VERSION}
    return _decode_dataclass(EvalRecord, data, "")


# ---------------------------------------------------------------------------------------------------------
# files

def record_path(run_dir: str | Path, checkpoint_step: int, evaluation: str, benchmark: str = DEFAULT_BENCHMARK) -> Path:
    """run_dir/evals/step_{step:08d}_{evaluation}[@benchmark].json (salt.layout owns the name)."""
    return RunLayout(run_dir).record(checkpoint_step, evaluation, benchmark)


def write_record(run_dir: str | Path, record: EvalRecord) -> Path:
    """Validate and atomically write the record; returns its path. An empty created_at is filled with the
    current UTC time in the written file (the passed record is not modified). Rewriting replaces the file."""
    if not isinstance(record, EvalRecord):
        raise TypeError(f"record must be an EvalRecord, got {type(record).__name__}")
    if not record.created_at:
        record = replace(record, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = record_path(run_dir, record.checkpoint_step, record.evaluation, record.benchmark)
    try:
        data = record_to_json(record)
        record_from_json(data)   # the types dataclasses do not check: what is written must read back
    except (TypeError, ValueError) as e:
        raise type(e)(f"refusing to write an invalid record to {path}: {e}") from e
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path


def read_record(path: str | Path) -> EvalRecord:
    """Read and validate one record file; any problem is a RecordError (FileNotFoundError if absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"record {path} is not valid JSON (torn or corrupt file?): {e}") from e
    try:
        return record_from_json(data)
    except (TypeError, ValueError) as e:
        raise RecordError(f"record {path}: {e}") from e


def _as_path_list(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def find_records(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Record files under run dirs / study dirs (every evals/*.json below them) or named directly; sorted,
    without duplicates. A path that does not exist is an error."""
    found: set[Path] = set()
    for path in _as_path_list(paths):
        if path.is_file():
            if path.suffix != ".json":
                raise ValueError(f"{path} is not a record file (expected .json)")
            found.add(path)
        elif path.is_dir():
            found.update(p for p in path.rglob("*.json") if is_record_file(p))
        else:
            raise FileNotFoundError(f"no such record file or folder: {path}")
    return sorted(found)


SCALAR_COLUMNS = [f.name for f in fields(EvalRecord) if _hints(EvalRecord)[f.name] in (str, int, float)] + ["path"]
ID_COLUMNS = ["run_id", "method", "stage", "seed", "checkpoint_step", "steps_total", "evaluation", "benchmark",
              "flops_total", "path"]
PROBE_COLUMNS = ["probe", "pooling", "label", "shots", "protocol", "test_accuracy", "test_std",
                 "selection_score", "draws", "details"]


def _read_all(paths) -> list[tuple[Path, EvalRecord]]:
    return [(p, read_record(p)) for p in find_records(paths)]


def _sorted_frame(rows: list[dict], leading: list[str], sort_by: list[str]):
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=leading)
    frame = pd.DataFrame(rows)
    rest = sorted(c for c in frame.columns if c not in leading)
    return frame[leading + rest].sort_values(sort_by, kind="stable").reset_index(drop=True)


def load_records(paths):
    """One row per record: the scalar fields, params.<name>, losses.<k>, metrics.<k>, and per probe score
    probe.<probe>.<pooling>.<label>.<shots|all> (test accuracy) with #std and #selection companions.
    Rows sorted by run_id, checkpoint_step, evaluation, benchmark. No records -> an empty frame with SCALAR_COLUMNS."""
    rows = []
    for path, record in _read_all(paths):
        row = {name: getattr(record, name) for name in SCALAR_COLUMNS if name != "path"}
        row["path"] = str(path)
        for group in ("params", "losses", "metrics"):
            row.update({f"{group}.{k}": v for k, v in getattr(record, group).items()})
        for score in record.probes:
            row[score.column] = score.test_accuracy
            row[score.column + "#std"] = score.test_std
            row[score.column + "#selection"] = score.selection_score
        rows.append(row)
    return _sorted_frame(rows, SCALAR_COLUMNS, ["run_id", "checkpoint_step", "evaluation", "benchmark", "path"])


def load_probe_scores(paths):
    """Tidy long form: one row per (record, probe score) with the record's ID_COLUMNS and PROBE_COLUMNS."""
    rows = []
    for path, record in _read_all(paths):
        ids = {name: getattr(record, name) for name in ID_COLUMNS if name != "path"}
        ids["path"] = str(path)
        rows.extend({**ids, **{name: getattr(score, name) for name in PROBE_COLUMNS}} for score in record.probes)
    return _sorted_frame(rows, ID_COLUMNS + PROBE_COLUMNS,
                         ["run_id", "checkpoint_step", "evaluation", "benchmark", "probe", "pooling", "label",
                          "shots"])
