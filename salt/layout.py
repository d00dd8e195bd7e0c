"""Where things live: the one owner of the layout of a run folder, a study folder and a prepared video collection
(no torch, so the analysis can use it). Every other module asks these objects for a path instead of joining names
itself.

    <run>/config.yaml                       the resolved config
    <run>/metrics.jsonl                     one JSON line per logged step
    <run>/checkpoints/step_XXXXXXXX.pt      atomic checkpoints (salt.checkpoint)
    <run>/done.json                         the done marker: the run's summary, versioned (DONE_SCHEMA_VERSION)
    <run>/evals/step_XXXXXXXX_<eval>.json   evaluation records (salt.eval.record) on the default benchmark;
    <run>/evals/step_XXXXXXXX_<eval>@<benchmark>.json    ... on a named benchmark (salt.eval.benchmark)
    <run>/features/<benchmark>-<split>-<key>/  a benchmark split's feature cache (salt.eval.cache): key.json,
                                            shard_XXXXX.pt, complete.json (written last)
    <run>/job.json, <run>/attempts.jsonl    a study's job ledger and the log of each start
    <run>/lock, <run>/lock.jsonl            one writer at a time (salt.runlock): the flock'ed file naming its
                                            holder, and the log of every acquire and release

    <study>/study.json                      the plan
    <study>/runs/<run id>/                  its runs (run folders as above)
    <study>/runs/baselines/<baseline id>/   evaluated-only baselines (random init, raw pixels)
    <study>/logs/                           submitit's logs
    <study>/results.csv                     the results table (a view of the records)
    <study>/analysis/report.md              the analysis report and its figures
    <study>/hpo/                            a hyperparameter search's storage and trials
    <study>/submit.lock                     one invocation at a time submits (salt.runlock.hold_study)

    <prepared>/videos/<stem>-<key>[_cNNN].mp4   a prepared collection (PrepareLayout, salt.data.prepare): the
    <prepared>/.prepare/<key>.json              re-encoded files, one record per input, options.json, lock, logs;
    <prepared>/<list name>, report.json         the new list and the report
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from salt.identity import ID_SCHEME, IdSchemeError, stored_scheme
from salt.io import atomic_write_json

DONE_SCHEMA_VERSION = 1
BASELINES = "baselines"
EVALS = "evals"
FEATURES = "features"
DEFAULT_BENCHMARK = "default"   # the run's own data (the embedded moving digits of the packaged configs)
ALL_BENCHMARKS = "all"           # not a benchmark: `python -m analysis --benchmark all` (every benchmark)
EVALUATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # an evaluation's name becomes part of a file name
_CHECKPOINT_NAME = re.compile(r"^step_(\d{8})\.pt$")


class LayoutError(ValueError):
    """A file of a run or study folder that this code cannot use (newer schema, corrupt); names the file."""


def _step_name(step: int) -> str:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"checkpoint_step must be an integer >= 0, got {step!r}")
    return f"step_{step:08d}"


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (a trained run, or an evaluated-only baseline)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, out_dir: str | Path, run_id: str) -> "RunLayout":
        return cls(Path(out_dir) / run_id)

    @classmethod
    def baseline(cls, out_dir: str | Path, run_id: str) -> "RunLayout":
        """Baselines are evaluated once per data/model and shared by every run in `out_dir`."""
        return cls(Path(out_dir) / BASELINES / run_id)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    # -- checkpoints -------------------------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{_step_name(step)}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint, oldest first (temp files of interrupted writes are not listed)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in self.checkpoints_dir.iterdir()
                      if (m := _CHECKPOINT_NAME.match(p.name)))

    def set_aside(self, checkpoint: Path) -> Path:
        """Where an unreadable checkpoint is moved: beside it, under a name `checkpoints()` does not list."""
        return checkpoint.with_name(checkpoint.name + ".unreadable")

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    # -- the done marker ---------------------------------------------------------------------------------------
    @property
    def done(self) -> Path:
        return self.root / "done.json"

    def is_done(self) -> bool:
        return self.done.is_file()

    def write_done(self, summary: dict) -> dict:
        """Mark the run finished; -> the summary as written (with its schema version and the run id scheme,
        salt.identity), as read_done returns it."""
        done = {**summary, "schema_version": DONE_SCHEMA_VERSION, "id_scheme": ID_SCHEME}
        atomic_write_json(self.done, done)
        return done

    def read_done(self) -> dict:
        """The run's summary. done.json files written before it carried a version have the same fields (read as
        version 1), and those written before it stored `id_scheme` are read with scheme 1; a newer version or
        scheme is refused by name rather than guessed at."""
        try:
            data = json.loads(self.done.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            raise LayoutError(f"{self.done} is not readable JSON (delete it to let the run finish again): {e}") from e
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > DONE_SCHEMA_VERSION:
            raise LayoutError(f"{self.done} has schema version {version!r}; this code reads up to "
                              f"{DONE_SCHEMA_VERSION} (written by a newer salt: update salt to read it)")
        try:
            return {**data, "id_scheme": stored_scheme(data, self.done)}
        except IdSchemeError as e:
            raise LayoutError(str(e)) from e

    # -- evaluation records ------------------------------------------------------------------------------------
    @property
    def evals(self) -> Path:
        return self.root / EVALS

    def record(self, step: int, evaluation: str, benchmark: str = DEFAULT_BENCHMARK) -> Path:
        """evals/step_XXXXXXXX_<evaluation>.json on the default benchmark, ..._<evaluation>@<benchmark>.json on
        another (so records of earlier code, all on the default benchmark, keep their names)."""
        if not isinstance(evaluation, str) or not EVALUATION_NAME.match(evaluation):
            raise ValueError(f"evaluation must be a file-name-safe name, got {evaluation!r}")
        if not isinstance(benchmark, str) or not EVALUATION_NAME.match(benchmark):
            raise ValueError(f"benchmark must be a file-name-safe name, got {benchmark!r}")
        suffix = "" if benchmark == DEFAULT_BENCHMARK else f"@{benchmark}"
        return self.evals / f"{_step_name(step)}_{evaluation}{suffix}.json"

    # -- feature caches ----------------------------------------------------------------------------------------
    @property
    def features(self) -> Path:
        return self.root / FEATURES

    def feature_cache(self, benchmark: str, split: str, key: str) -> "FeatureCacheLayout":
        name = f"{benchmark}-{split}-{key}"
        if not EVALUATION_NAME.match(name):
            raise ValueError(f"feature cache name must be file-name-safe, got {name!r}")
        return FeatureCacheLayout(self.features / name)

    # -- a study's bookkeeping ---------------------------------------------------------------------------------
    @property
    def job(self) -> Path:
        return self.root / "job.json"

    @property
    def attempts(self) -> Path:
        return self.root / "attempts.jsonl"

    # -- one writer at a time (salt.runlock) -------------------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def lock_log(self) -> Path:
        return self.root / "lock.jsonl"


@dataclass(frozen=True)
class FeatureCacheLayout:
    """The files of one feature cache (salt.eval.cache): what its key stands for, its shards, and the manifest
    written once every shard is there."""

    root: Path

    @property
    def key(self) -> Path:
        return self.root / "key.json"

    @property
    def manifest(self) -> Path:
        return self.root / "complete.json"

    def shard(self, index: int) -> Path:
        return self.root / f"shard_{index:05d}.pt"


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl log (one JSON object per logged step). A torn last line (a job killed
    mid-write, or one still writing) is skipped, so a log can be read while its run is going."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def is_record_file(path: Path) -> bool:
    """An evaluation record inside some run folder's evals/ (not a temp file of an interrupted write)."""
    return path.suffix == ".json" and path.parent.name == EVALS and not path.name.startswith(".") and path.is_file()


@dataclass(frozen=True)
class StudyLayout:
    """The files of one study folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def plan(self) -> Path:
        return self.root / "study.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, run_id: str) -> RunLayout:
        return RunLayout.of(self.runs, run_id)

    def baseline(self, run_id: str) -> RunLayout:
        return RunLayout.baseline(self.runs, run_id)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def results(self) -> Path:
        return self.root / "results.csv"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def report(self) -> Path:
        return self.analysis / "report.md"

    @property
    def hpo(self) -> Path:
        return self.root / "hpo"

    @property
    def submit_lock(self) -> Path:
        return self.root / "submit.lock"

    def records(self) -> list[Path]:
        """Every evaluation record of the study's runs and baselines."""
        return sorted(p for p in self.runs.glob(f"**/{EVALS}/*.json") if is_record_file(p))


@dataclass(frozen=True)
class PrepareLayout:
    """A prepared video collection's folder (`python -m salt prepare-videos LIST OUT_DIR`, salt.data.prepare)."""

    root: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def state(self) -> Path:
        return self.root / ".prepare"

    @property
    def options(self) -> Path:
        return self.state / "options.json"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    def output_list(self, list_path: str | Path) -> Path:
        return self.root / Path(list_path).name

    def record(self, source: str) -> Path:
        return self.state / f"{input_key(source)}.json"

    def chunk(self, source: str, index: int | None) -> Path:
        """videos/<readable stem>-<hash>.mp4, or ..._cNNN.mp4 for chunk `index` of a chunked preparation."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem)[:48] or "video"
        suffix = "" if index is None else f"_c{index:03d}"
        return self.videos / f"{stem}-{input_key(source)}{suffix}.mp4"

    def chunks_of(self, source: str) -> list[Path]:
        return sorted(self.videos.glob(f"*-{input_key(source)}*.mp4"))


def input_key(source: str) -> str:
    """16 hex digits of the input's absolute path: names its outputs and record (no collision in 10^8 files)."""
    return hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:16]
