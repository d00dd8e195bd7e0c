"""Publish a study's results as data: the files its analysis reads, copied into a folder small enough to keep in a
repository (`results/<study>/`), so anyone can rerun `python -m analysis results/<study>` on them.

    python -m analysis.publish STUDY_DIR DEST

Copied, per run and baseline folder: config.yaml, done.json, evals/*.json (the records) and the step and loss of
each metrics.jsonl line (what the analysis reads from it: the training losses of records written before they
carried them); and study.json. Left behind:
checkpoints, feature caches, locks, job ledgers, logs, the report. The copy is checked before it is kept: the
analysis' frame of DEST must equal the frame of STUDY_DIR column for column (else nothing is written), so a
published folder never answers differently from the study it came from. A study with external runs (an imported
teacher living elsewhere) is refused: its records are not the study's to publish.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from analysis.collect import StudyDataError, load_study, read_study
from salt.errors import DEBUG_FLAG, DEBUG_HELP, report_errors
from salt.io import atomic_write_text
from salt.layout import RunLayout, StudyLayout, read_metrics

RUN_FILES = ("config.yaml", "done.json")
LOG_KEYS = ("step", "loss")      # of metrics.jsonl
RECORDS = "evals"


def _run_folders(study_dir: Path) -> list[Path]:
    """Every folder under runs/ holding an evals/ folder or a done.json (runs and baselines alike)."""
    runs = StudyLayout(study_dir).runs
    return sorted({p.parent for p in runs.rglob("*") if p.name in (RECORDS, "done.json") and p.parent != runs})


def _copy(study_dir: Path, dest: Path) -> int:
    """Copy the analysis' inputs of `study_dir` into `dest` (a fresh folder); -> bytes copied."""
    shutil.copy2(StudyLayout(study_dir).plan, StudyLayout(dest).plan)
    for folder in _run_folders(study_dir):
        target = dest / folder.relative_to(study_dir)
        (target / RECORDS).mkdir(parents=True, exist_ok=True)
        sources = [folder / name for name in RUN_FILES if (folder / name).is_file()]
        sources += sorted((folder / RECORDS).glob("*.json")) if (folder / RECORDS).is_dir() else []
        for source in sources:
            shutil.copy2(source, target / source.relative_to(folder))
        log = RunLayout(folder).metrics
        if log.is_file():
            lines = [json.dumps({k: row[k] for k in LOG_KEYS if k in row}) for row in read_metrics(log)]
            atomic_write_text(RunLayout(target).metrics, "".join(line + "\n" for line in lines))
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def _comparable(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The frame with the folder it was read from written as "STUDY" (paths and run keys name it)."""
    frame = frame.copy()
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].map(
                lambda v: str(v).replace(str(root), "STUDY") if isinstance(v, (str, Path)) else v)
    return frame.reset_index(drop=True)


def publish(study_dir: str | Path, dest: str | Path) -> int:
    """Copy a finished study's records into `dest` (which must not exist yet), after checking that the analysis
    reads the copy exactly as it reads the study; -> bytes published."""
    study_dir, dest = Path(study_dir), Path(dest)
    study = read_study(study_dir)
    external = [r["run_id"] for r in study["runs"] if r.get("external")]
    if external:
        raise StudyDataError(f"{study_dir}: runs {', '.join(external)} are external (they live outside the study "
                             "folder); publish their own study instead")
    if dest.exists():
        raise StudyDataError(f"{dest} exists: publish into a new folder (delete it to publish again)")
    expected = load_study(study_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        size = _copy(study_dir, staging)
        pd.testing.assert_frame_equal(_comparable(load_study(staging), staging), _comparable(expected, study_dir),
                                      check_like=True)
        staging.rename(dest)
    except AssertionError as e:
        raise StudyDataError(f"the published copy of {study_dir} reads differently from the study: {e}") from e
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return size


def main(argv: list[str] | None = None) -> int:
    return report_errors(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.publish", description=(
        "Copy a finished study's records (study.json, each run's config, done.json, metrics and evaluation "
        "records; no checkpoints or caches) into DEST, checked to read exactly as the study does."))
    parser.add_argument("study_dir", metavar="STUDY_DIR")
    parser.add_argument("dest", metavar="DEST")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    size = publish(args.study_dir, args.dest)
    print(f"published {args.study_dir} -> {args.dest} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
