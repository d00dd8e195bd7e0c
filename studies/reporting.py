"""What a study does with its records: the results table, the printed summary and the analysis report.

These use the analysis library, so they live here and reach `salt.study.cli.study_main` as `StudyHooks`
(salt/ never imports analysis). The records are the source of truth; results.csv and the report are views,
rewritten atomically (results) or only when a record is newer (report)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from analysis import kinds
from analysis.collect import StudyDataError, load_study
from salt.io import atomic_write_text
from salt.layout import StudyLayout
from salt.study.cli import StudyHooks
from salt.study.spec import StudyPlan


def write_results(plan: StudyPlan) -> Path | str:
    """STUDY_DIR/results.csv: one row per run x checkpoint x evaluation, with the plan's labels and roles."""
    try:
        with warnings.catch_warnings():   # mid-study, incomplete runs are expected: the status table shows them
            warnings.simplefilter("ignore", UserWarning)
            frame = load_study(plan.root, allow_partial=True)
    except StudyDataError as error:
        return f"no results table yet ({error})"
    path = StudyLayout(plan.root).results
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def write_report(root: Path) -> Path:
    """analysis/report.md and figures of a finished study, rewritten only when a record is newer than them."""
    from analysis.report import run as analysis_report
    layout = StudyLayout(root)
    newest = max((p.stat().st_mtime for p in layout.records()), default=0.0)
    if layout.report.exists() and layout.report.stat().st_mtime >= newest:
        return layout.report
    return analysis_report(root)


def summarize(root: Path) -> str:
    """The study's printed answer (`analysis.report.summarize`, which gives the summary of the study's kind,
    analysis.kinds: the teacher-selection verdict and ranking, or accuracy @ FLOPs per budget)."""
    from analysis.report import summarize as analysis_summary
    return analysis_summary(root)


def study_hooks(kind: str, summarize: Callable[[Path], str] | None = None) -> StudyHooks:
    """The hooks of a study of `kind` (its STUDY, study.json "study"): the results table after every invocation;
    with `summarize`, the summary and the report once all is done. The kind must be one the analysis knows
    (analysis.kinds: its question, its curves): an unknown one fails here, by name, before anything runs."""
    kinds.get(kind)
    return StudyHooks(results=write_results, summarize=summarize, report=write_report if summarize else None)
