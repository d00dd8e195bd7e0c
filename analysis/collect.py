"""Read study folders into one tidy frame: one row per run x checkpoint x evaluation.

Everything downstream (fits, allocation, correlations, figures, the report) reads this frame, so the
joins (records + study.json labels + done.json costs; metrics.jsonl for records older than their training
losses) live here once. A folder that cannot
answer the study's questions (no study.json, runs without done.json or records) is refused with a
`StudyDataError` that names each run and what it lacks, instead of silently analysing part of a study.
Column contract: docs/analysis.md.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from salt.eval.record import SCALAR_COLUMNS, load_records
from salt.layout import DEFAULT_BENCHMARK, LayoutError, RunLayout, StudyLayout, read_metrics
from salt.losslog import train_losses

# Label keys the analysis uses; a missing key is a NaN column so code can rely on them existing.
LABEL_KEYS = ("group", "total_steps", "teacher_steps", "student_steps", "teacher_size", "student_size",
              "teacher_share", "teacher_mask", "teacher_lr", "teacher_run_id", "seed", "total_flops")
# Columns this module adds; a label with one of these names (or a record field's name) gets a "label." prefix.
DERIVED_COLUMNS = ("study", "study_dir", "run_key", "teacher_key", "role", "depends_on", "estimated_flops",
                   "estimated_flops_total", "budget", "teacher_flops_share", "done", "device", "train_hours", "gpu_hours", "cpu_hours",
                   "train_hours_total", "gpu_hours_total", "cpu_hours_total")
RESERVED = frozenset(SCALAR_COLUMNS) | frozenset(DERIVED_COLUMNS)
# Averaging over seeds keeps these design columns apart (those present in the frame).
CONFIG_COLUMNS = ("study_dir", "group", "method", "budget", "teacher_share", "teacher_steps", "student_steps",
                  "teacher_size", "student_size", "teacher_mask", "teacher_lr")
MAX_LISTED = 30            # runs named in an incompleteness message
TRAIN_LOSS_KEYS = ("train", "train_early")   # losses.* of salt.losslog.train_losses


class StudyDataError(ValueError):
    """A study folder that cannot be analysed as asked; the message names the runs and what they lack."""


def label_column(key: str) -> str:
    """The frame column of a study.json label: the key itself, or "label.<key>" when a record field or a
    derived column already has that name (e.g. seed, teacher_run_id)."""
    return f"label.{key}" if key in RESERVED else key


def _as_dirs(paths: str | os.PathLike | Iterable) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def read_study(study_dir: str | os.PathLike) -> dict:
    """study.json of a study folder, checked for the fields the analysis needs."""
    study_dir = Path(study_dir)
    path = StudyLayout(study_dir).plan
    if not study_dir.is_dir():
        raise StudyDataError(f"no such study folder: {study_dir}")
    if not path.is_file():
        raise StudyDataError(f"{study_dir} is not a study folder: it has no study.json")
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StudyDataError(f"{path} is not valid JSON: {e}") from e
    runs = study.get("runs")
    if not isinstance(runs, list) or not runs:
        raise StudyDataError(f"{path} lists no runs")
    bad = [i for i, r in enumerate(runs) if not isinstance(r, dict) or not r.get("run_id")]
    if bad:
        raise StudyDataError(f"{path}: runs[{bad[0]}] has no run_id")
    ids = [r["run_id"] for r in runs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise StudyDataError(f"{path} lists run_id(s) twice: {', '.join(dupes)}")
    return study


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _fill_train_losses(frame: pd.DataFrame, layouts: dict[str, RunLayout]) -> pd.DataFrame:
    """losses.train / losses.train_early of records written before evaluate_run recorded them: the same
    numbers (salt.losslog.train_losses) from the run's metrics.jsonl, where it is there."""
    columns = [f"losses.{k}" for k in TRAIN_LOSS_KEYS]
    for column in columns:
        if column not in frame:
            frame[column] = np.nan
    logs: dict[str, list[dict]] = {}
    for i in frame.index[frame[columns].isna().any(axis=1) & (frame["stage"] != "baseline")]:
        run_id = frame.at[i, "run_id"]
        layout = layouts.get(run_id)
        if layout is None or not layout.metrics.is_file():
            continue
        if run_id not in logs:
            logs[run_id] = read_metrics(layout.metrics)
        losses = train_losses(logs[run_id], int(frame.at[i, "checkpoint_step"]), int(frame.at[i, "steps_total"]))
        for key, value in losses.items():
            if np.isnan(frame.at[i, f"losses.{key}"]):
                frame.at[i, f"losses.{key}"] = value
    return frame


def run_layout(study_dir: Path, run: dict) -> RunLayout:
    """Where the study layer puts a run (salt.layout): runs/<id>, or runs/baselines/<id> for a baseline; an
    external run (an imported teacher) stays where it was made (its config's out_dir/name)."""
    if run.get("external"):
        return RunLayout.of(run["config"]["out_dir"], run["config"]["name"])
    layout = StudyLayout(study_dir)
    return layout.baseline(run["run_id"]) if run.get("role") == "baseline" else layout.run(run["run_id"])


def run_dir(study_dir: Path, run: dict) -> Path:
    return run_layout(study_dir, run).root


def _read_done(layout: RunLayout) -> dict | None:
    """A run's done marker, or None when it has none; a newer schema or a torn file is an error naming it."""
    if not layout.is_done():
        return None
    try:
        return layout.read_done()
    except LayoutError as e:
        raise StudyDataError(str(e)) from e


def _trained(run: dict) -> bool:
    """Baselines (random init, raw pixels) are evaluated, never trained: they have no done.json."""
    return run.get("role") != "baseline"


def _run_table(study_dir: Path, study: dict) -> pd.DataFrame:
    """One row per run listed in study.json: role, labels, planned FLOPs, done.json costs."""
    rows = []
    for run in study["runs"]:
        done = _read_done(run_layout(study_dir, run))
        labels = run.get("labels") or {}
        row = {label_column(k): v for k, v in labels.items()}
        row.update(run_id=run["run_id"], role=run.get("role"), study_method=run.get("method"),
                   depends_on=",".join(run.get("depends_on") or []), done=done is not None,
                   **{k: _number(run.get(k)) for k in ("estimated_flops", "estimated_flops_total")})
        wall = (done or {}).get("wall_time_s")
        device = str((done or {}).get("device", ""))
        hours = _number(wall) / 3600
        row.update(device=device or None, train_hours=hours,
                   gpu_hours=hours if device.startswith("cuda") else math.nan,
                   cpu_hours=hours if device == "cpu" else math.nan)
        rows.append(row)
    runs = pd.DataFrame(rows)
    # Costs including the upstream chain (a student's teacher, its teacher, ...), following depends_on.
    deps = {r["run_id"]: list(r.get("depends_on") or []) for r in study["runs"]}
    for col in ("train_hours", "gpu_hours", "cpu_hours"):
        own = dict(zip(runs["run_id"], runs[col]))
        runs[col + "_total"] = [sum(own.get(r, math.nan) for r in _chain(run_id, deps)) for run_id in runs["run_id"]]
    return runs


def _chain(run_id: str, deps: dict[str, list[str]]) -> list[str]:
    """run_id and every run it depends on, transitively (each once)."""
    seen, todo = [], [run_id]
    while todo:
        r = todo.pop()
        if r not in seen:
            seen.append(r)
            todo.extend(deps.get(r, []))
    return seen


def _records(study_dir: Path, study: dict) -> pd.DataFrame:
    """The records of the study's runs, and of its external runs (imported teachers) where they were evaluated."""
    roots = [StudyLayout(study_dir).runs, *(run_layout(study_dir, r).evals for r in study["runs"] if r.get("external"))]
    roots = [root for root in roots if root.is_dir()]
    return load_records(roots) if roots else pd.DataFrame(columns=SCALAR_COLUMNS)


def _load_one(study_dir: Path, allow_partial: bool) -> pd.DataFrame:
    study = read_study(study_dir)
    records = _records(study_dir, study)
    check = _check(study_dir, study, records)
    if not check.ok:
        if check.no_records or not allow_partial:
            raise StudyDataError(check.message)
        warnings.warn(check.message)
    runs = _run_table(study_dir, study)
    frame = records.merge(runs, on="run_id", how="left", validate="many_to_one")
    frame["role"] = frame["role"].fillna(frame["stage"])   # records of runs study.json does not list (baselines)
    frame["done"] = frame["done"].astype("boolean").fillna(False).astype(bool)
    mismatch = frame[frame["study_method"].notna() & (frame["study_method"] != frame["method"])]
    if not mismatch.empty:
        r = mismatch.iloc[0]
        raise StudyDataError(f"{study_dir}: run {r.run_id} is a {r.study_method} run in study.json but its "
                             f"record {r.path} says {r.method}")
    frame = frame.drop(columns=["study_method"])
    frame = _fill_train_losses(frame, {run["run_id"]: run_layout(study_dir, run) for run in study["runs"]})
    frame.insert(0, "study", study.get("study", study_dir.name))
    frame.insert(1, "study_dir", str(study_dir))
    return frame


def _add_derived(frame: pd.DataFrame) -> pd.DataFrame:
    for key in LABEL_KEYS:
        col = label_column(key)
        if col not in frame:
            frame[col] = np.nan
    frame["group"] = frame["group"].fillna(frame["method"])   # the curve a run is drawn on
    frame["run_key"] = frame["study_dir"] + "::" + frame["run_id"]
    teacher = frame["teacher_run_id"].fillna("").astype(str)
    frame["teacher_key"] = np.where(teacher != "", frame["study_dir"] + "::" + teacher, None)
    total = frame["flops_total"].astype(float)
    frame["teacher_flops_share"] = np.where(total > 0, frame["flops_teacher_stage"] / total.where(total > 0), np.nan)
    # A run's budget: the total_steps label (steps), else the total_flops label (a study budgeted in FLOPs),
    # else its own steps plus its teacher's.
    fallback = frame["steps_total"] + frame["teacher_step"].clip(lower=0)
    budget = (pd.to_numeric(frame["total_steps"], errors="coerce")
              .fillna(pd.to_numeric(frame["total_flops"], errors="coerce")).fillna(fallback))
    frame["budget"] = budget.astype("int64") if (budget == budget.round()).all() else budget
    return frame


def load_study(paths, *, allow_partial: bool = False) -> pd.DataFrame:
    """One or several study folders as one frame (one row per run x checkpoint x evaluation, sorted).

    Columns: the record columns of `salt.eval.record.load_records`, the study.json labels (see
    `label_column`; LABEL_KEYS always exist), and DERIVED_COLUMNS. A folder without records is an error; a
    run listed in study.json without done.json or without records is an error unless allow_partial (then a
    warning names them).
    """
    dirs = _as_dirs(paths)
    if not dirs:
        raise StudyDataError("no study folder given")
    frames = [_load_one(study_dir, allow_partial) for study_dir in dirs]
    frame = pd.concat(frames, ignore_index=True, sort=False)
    return _add_derived(frame).sort_values(["study_dir", "run_id", "checkpoint_step", "evaluation"],
                                           kind="stable").reset_index(drop=True)


def one_benchmark(frame: pd.DataFrame, benchmark: str | None = None) -> tuple[str, pd.DataFrame]:
    """The rows of one benchmark (records carry the benchmark each was probed on: "default" is the run's own
    data): `benchmark` if given, else "default" when present, else the one covering the most runs. Fits,
    figures and correlations are made per benchmark: scores of different benchmarks never share a curve."""
    names = frame.groupby("benchmark")["run_key"].nunique() if "benchmark" in frame else pd.Series(dtype=int)
    if benchmark is not None:
        if benchmark not in names:
            raise StudyDataError(f"no records on benchmark {benchmark!r}; there are: {', '.join(names.index)}")
    elif names.empty:
        return DEFAULT_BENCHMARK, frame
    else:
        benchmark = DEFAULT_BENCHMARK if DEFAULT_BENCHMARK in names else sorted(names.index,
                                                                             key=lambda b: (-names[b], b))[0]
    return benchmark, frame[frame["benchmark"] == benchmark].reset_index(drop=True)


def final_records(frame: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of each run, per evaluation and benchmark (a run's result is its final checkpoint)."""
    if frame.empty:
        return frame
    keys = ["run_key", "evaluation"] + (["benchmark"] if "benchmark" in frame else [])
    idx = frame.groupby(keys)["checkpoint_step"].idxmax()
    return frame.loc[sorted(idx)].reset_index(drop=True)


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The design columns present (non-empty) in frame: runs equal on all of them differ only by seed."""
    return [c for c in CONFIG_COLUMNS if c in frame and frame[c].notna().any()]


def seed_mean(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Mean over seeds of each configuration: accuracy, its std and count, mean total FLOPs."""
    keys = config_columns(frame)
    columns = dict(accuracy=(target, "mean"), accuracy_sd=(target, "std"), n_seeds=(target, "count"),
                   flops_total=("flops_total", "mean"))
    if "teacher_flops_share" in frame:
        columns["teacher_flops_share"] = ("teacher_flops_share", "mean")
    out = frame.groupby(keys, dropna=False, sort=True).agg(**columns).reset_index()
    return out[out["n_seeds"] > 0].reset_index(drop=True)


@dataclass
class StudyCheck:
    """What a study folder lacks. `problems` maps run_id -> what it lacks; `message` says it in words."""
    study_dir: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    no_records: bool = False
    fatal: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.fatal

    @property
    def message(self) -> str:
        if self.fatal:
            return self.fatal
        if self.ok:
            return f"{self.study_dir}: complete"
        items = sorted(self.problems.items())
        lines = [f"{self.study_dir}: {len(items)} run(s) incomplete:"]
        lines += [f"  {run_id}: lacks {', '.join(what)}" for run_id, what in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"  ... and {len(items) - MAX_LISTED} more run(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message


def check_complete(study_dir, target: str | None = None, evaluation: str | None = None,
                   benchmark: str | None = None) -> StudyCheck:
    """Which runs of a study lack done.json or the `target` column in their final record (trained runs only),
    or lack evaluation records (of `evaluation` if given). Never raises for a missing file: it reports it."""
    study_dir = Path(study_dir)
    try:
        study = read_study(study_dir)
    except StudyDataError as e:
        return StudyCheck(str(study_dir), fatal=str(e), no_records=True)
    records = _records(study_dir, study)
    if benchmark is not None and "benchmark" in records:
        records = records[records["benchmark"] == benchmark]
    return _check(study_dir, study, records, target, evaluation)


def _check(study_dir: Path, study: dict, records: pd.DataFrame, target: str | None = None,
           evaluation: str | None = None) -> StudyCheck:
    root = StudyLayout(study_dir).runs
    if evaluation is not None:
        records = records[records["evaluation"] == evaluation]
    check = StudyCheck(str(study_dir), no_records=records.empty)
    have = set(records["run_id"])
    last = records.sort_values("checkpoint_step").groupby("run_id").tail(1).set_index("run_id")
    for run in study["runs"]:
        run_id, what = run["run_id"], []
        if _trained(run) and not run_layout(study_dir, run).is_done():
            what.append("done.json")
        if run_id not in have and not run.get("external"):   # an imported teacher's evaluation is optional
            what.append("evaluation records" + (f" ({evaluation})" if evaluation else ""))
        elif (target is not None and _trained(run)   # baselines (raw pixels) may be probed differently
              and (target not in last or not np.isfinite(last.at[run_id, target]))):
            what.append(f"{target} in its final record")
        if what:
            check.problems[run_id] = what
    if check.no_records:
        check.fatal = (f"{study_dir}: no evaluation records" + (f" for evaluation {evaluation!r}" if evaluation else "")
                       + f" under {root} (runs listed: {len(study['runs'])})\n" + check.message)
    return check
