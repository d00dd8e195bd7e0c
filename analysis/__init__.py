"""Analysis of study folders: fits with bootstrap intervals, compute allocation, teacher-selection metrics,
figures and a Markdown report (docs/analysis.md). `python -m analysis STUDY_DIR` writes the report."""
from analysis.collect import StudyDataError, check_complete, final_records, load_study
from analysis.fits import FitError, PowerLawFit, fit_power_law
from analysis.report import analyze, run, summarize

__all__ = ["StudyDataError", "FitError", "PowerLawFit", "analyze", "check_complete", "final_records",
           "fit_power_law", "load_study", "run", "summarize"]
