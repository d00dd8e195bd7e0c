"""The study's results table, rebuilt from the run folders' records (the records are the source of truth;
results.csv is a convenience view, rewritten atomically, so concurrent jobs can never tear it)."""
from __future__ import annotations

from pathlib import Path

from salt.study.spec import StudyPlan
from salt.io import atomic_write_bytes


def write_results(plan: StudyPlan) -> Path | str:
    """STUDY_DIR/results.csv: one row per run x checkpoint x evaluation, with the plan's labels and roles."""
    import warnings

    from analysis.collect import StudyDataError, load_study
    try:
        with warnings.catch_warnings():   # mid-study, incomplete runs are expected: the status table shows them
            warnings.simplefilter("ignore", UserWarning)
            frame = load_study(plan.root, allow_partial=True)
    except StudyDataError as error:
        return f"no results table yet ({error})"
    path = plan.root / "results.csv"
    atomic_write_bytes(path, lambda f: f.write(frame.to_csv(index=False).encode()))
    return path
