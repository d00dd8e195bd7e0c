"""What the analysis computes and says for each question a study kind asks (analysis.kinds.QUESTIONS), and the
`Analysis` that holds it: `answer_of(kind)` gives the kind's answer (what `analyze` computes, the printed summary,
the report sections, the tables beside report.md, the headline of an index, the figures drawn)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis import forecast as forecast_
from analysis import report_curves, report_selection
from analysis.allocation import allocation_table, allocation_verdict, flops_to_match, optimal_share, share_comparisons
from analysis.collect import final_records
from analysis.correlate import rank_metrics, verdict
from analysis.diagnostics import diagnose
from analysis.fits import MIN_DISTINCT, FitError, curve_fits, fit_ld, fit_loss_vs_compute
from analysis.kinds import ALLOCATION, MIXED, SELECTION, TUNED, StudyKind
from analysis.markdown import bullets, markdown_table
from analysis.replicates import Replicates, replicate_means, setting_names, tuned_comparison
from analysis.resample import one_blas_thread
from analysis.words import column_name


@dataclass
class Analysis:
    """Everything the report and figures show, computed once."""
    target: str
    evaluation: str
    frame: pd.DataFrame                     # every checkpoint of the chosen evaluation (and benchmark)
    final: pd.DataFrame                     # last checkpoint per run, with compute > 0 and the target
    baselines: pd.DataFrame                 # zero-compute references (random init, raw pixels)
    curves: dict = field(default_factory=dict)        # group -> PowerLawFit | FitError (error vs FLOPs)
    loss_curves: dict = field(default_factory=dict)   # group -> fit of losses.heldout vs FLOPs
    ld: dict = field(default_factory=dict)            # group -> L(N, D) fit where sizes vary
    holdout: pd.DataFrame = field(default_factory=pd.DataFrame)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    shares: pd.DataFrame = field(default_factory=pd.DataFrame)
    match: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_boot: int = 0
    notes: list[str] = field(default_factory=list)
    kind: StudyKind = MIXED                 # analysis.kinds.of_frame: its question picks what is computed and shown
    replicates: Replicates | None = None    # setting means over seeds with intervals (analysis.replicates)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)   # allocation.share_comparisons
    verdict: list[str] = field(default_factory=list)                  # the study's verdict, in words
    diagnostics: dict = field(default_factory=dict)   # group -> FitDiagnostics of its error-vs-FLOPs fit
    benchmark: str = "default"              # the records' benchmark analysed (analysis.collect.one_benchmark)
    forecast: forecast_.Forecast | None = None   # at forecast_budget, both predictors (analysis.forecast)
    forecast_budget: float | int = math.nan
    rollout: pd.DataFrame = field(default_factory=pd.DataFrame)   # forecast_.rollout: largest budget held out
    choices: dict = field(default_factory=dict)   # criterion -> choice.Choice (checkpoints chosen by a loss)


def _try(fit, *args, **kwargs):
    try:
        return fit(*args, **kwargs)
    except FitError as e:
        return e


class CurvesAnswer:
    """ALLOCATION: accuracy vs compute per curve (fits, diagnostics, forecasts, L(N, D)), the candidate curve's
    teacher share per budget against the reference, FLOPs to match it, and the selection metrics."""
    figures: tuple[str, ...] | None = None   # analysis.figures.FIGURES to draw; None: every one
    share_note = "; * best teacher share in the budget"   # the summary's header: * marks the best share
    budgets_matter = True                    # the scope names the candidate's budgets (a compute curve needs 3+)

    def verdict(self, kind: StudyKind, rep: Replicates) -> list[str]:
        return allocation_verdict(rep, candidate=kind.candidate, reference=kind.reference)

    def analyze(self, out: Analysis, frame: pd.DataFrame, final: pd.DataFrame, *, n_boot: int, seed: int) -> None:
        target, kind = out.target, out.kind
        with one_blas_thread():
            out.curves = curve_fits(final, target, n_boot=n_boot, seed=seed)
            out.loss_curves = {g: _try(fit_loss_vs_compute, rows, n_boot=n_boot, seed=seed)
                               for g, rows in final.groupby("group")}
            for group, rows in frame[frame["flops_total"] > 0].groupby("group"):
                sizes = rows["params.encoder"].nunique() if "params.encoder" in rows else 0
                out.ld[group] = (_try(fit_ld, rows, target, "params.encoder", "checkpoint_step", n_boot=n_boot,
                                      seed=seed)
                                 if sizes >= MIN_DISTINCT
                                 else FitError(f"{sizes} encoder size(s): L(N, D) needs {MIN_DISTINCT} or more"))
            out.replicates = replicate_means(final, target, n_boot=n_boot, seed=seed)
            out.comparisons = share_comparisons(out.replicates, candidate=kind.candidate, reference=kind.reference)
            out.verdict = self.verdict(kind, out.replicates)
            out.diagnostics = {g: diagnose(out.curves[g], rows, target, curve=g, seed_sd=out.replicates.pooled_sd,
                                           setting_of=dict(zip(rows["run_key"], setting_names(rows))))
                               for g, rows in final.groupby("group")}
            out.holdout = pd.DataFrame([{"group": g, **d.holdout} for g, d in out.diagnostics.items()])
            out.table = allocation_table(frame[frame["flops_total"] > 0], target, out.replicates)
            out.shares = optimal_share(final, target, group=kind.candidate, n_boot=n_boot, seed=seed)
            out.match = flops_to_match(final, target, out.curves, reference=kind.reference, candidate=kind.candidate)
            out.selection = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
        if len(final):
            boot = min(n_boot, forecast_.REPORT_BOOT)
            out.forecast_budget = forecast_.as_budget(report_curves.FORECAST_FACTOR * float(final["budget"].max()))
            out.forecast = forecast_.forecast(frame, target, out.forecast_budget, n_boot=boot, seed=seed)
            out.rollout = forecast_.rollout(frame, target, n_boot=boot, seed=seed)

    def summary(self, frame: pd.DataFrame, target: str, evaluation: str, kind: StudyKind, *, n_boot: int,
                seed: int) -> str:
        """Accuracy @ total FLOPs per budget and curve (mean over seeds), the verdict and the study's scope."""
        frame = frame[frame["flops_total"] > 0]
        final = final_records(frame)
        rep = replicate_means(final[final[target].notna()], target, n_boot=n_boot, seed=seed)
        table = report_curves.summary_table(allocation_table(frame, target, rep))
        header = (f"{column_name(target)} = {target} ({evaluation}): mean over seeds [95% interval] @ total FLOPs"
                  + self.share_note)
        scope = report_curves.scope_lines(final, rep, kind, self.budgets_matter)
        return "\n\n".join([header + "\n" + table.to_string(index=False), "\n".join(self.verdict(kind, rep)),
                            "What this study can show:\n" + bullets(scope)])

    def sections(self, a: Analysis, study_dirs: list[str], completeness: list[str]) -> list[str]:
        return report_curves.sections(a, study_dirs, completeness)

    def tables(self, a: Analysis) -> dict[str, pd.DataFrame]:
        return report_curves.forecast_tables(a)

    def headline(self, a: Analysis) -> str:
        return markdown_table(report_curves.summary_table(a.table)) + "\n\n" + bullets(a.verdict)


class TunedAnswer(CurvesAnswer):
    """TUNED: the same fits; the verdict compares the kind's factor, each value at its best tuning value."""
    share_note = ""
    budgets_matter = False

    def verdict(self, kind: StudyKind, rep: Replicates) -> list[str]:
        return tuned_comparison(rep, kind.factor, kind.tuning, group=kind.candidate)


class SelectionAnswer:
    """SELECTION: which label-free metric predicts the student's accuracy; no compute curves are fitted."""
    figures = ("student_loss_vs_accuracy", "metric_panels")

    def analyze(self, out: Analysis, frame: pd.DataFrame, final: pd.DataFrame, *, n_boot: int, seed: int) -> None:
        with one_blas_thread():
            out.selection = rank_metrics(frame, out.target, n_boot=n_boot, n_perm=n_boot, seed=seed)

    def summary(self, frame: pd.DataFrame, target: str, evaluation: str, kind: StudyKind, *, n_boot: int,
                seed: int) -> str:
        """The verdict and the ranking (Spearman with its interval, permutation p, LOTO skill)."""
        with one_blas_thread():
            result = rank_metrics(frame, target, n_boot=n_boot, n_perm=n_boot, seed=seed)
        return report_selection.summary_text(result, target, evaluation)

    def sections(self, a: Analysis, study_dirs: list[str], completeness: list[str]) -> list[str]:
        return report_selection.sections(a, study_dirs, completeness)

    def tables(self, a: Analysis) -> dict[str, pd.DataFrame]:
        return {report_selection.RANKING_CSV: a.selection["ranking"], report_selection.R2_CSV: a.selection["r2"]}

    def headline(self, a: Analysis) -> str:
        return report_selection.verdict_text(verdict(a.selection), a.target)


ANSWERS = {ALLOCATION: CurvesAnswer(), TUNED: TunedAnswer(), SELECTION: SelectionAnswer()}   # one per kinds.QUESTIONS


def answer_of(kind: StudyKind) -> CurvesAnswer | SelectionAnswer:
    """The answer of a study kind's question."""
    return ANSWERS[kind.question]
