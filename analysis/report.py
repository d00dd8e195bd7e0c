"""The whole analysis of a study, and its Markdown report.

`analyze` runs every fit, interval and correlation its study kind's question asks for on a loaded frame (the
benchmark times it; what each question computes and shows: analysis.answers, the kinds: analysis.kinds);
`write_report` renders an `Analysis` as report.md, its tables and figures; `run` does load + analyze + write for
the CLI; `summarize` is the short answer the study command prints (no bootstrap for curves, so it is quick).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import choice as choice_
from analysis.answers import Analysis, answer_of
from analysis.collect import StudyDataError, check_complete, final_records, load_study, one_benchmark
from analysis.kinds import of_frame
from analysis.markdown import bullets, markdown_table
from analysis.words import column_name
from salt.io import atomic_write_text
from salt.layout import ALL_BENCHMARKS

DEFAULT_TARGET = "probe.linear.time.motion.10"   # the headline on the embedded moving-digits data
EVALUATION_PREFERENCE = ("systematic", "fast")
CHOICE_CSV = "checkpoint_choice.csv"   # beside report.md


def probe_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("probe.") and "#" not in c)


def choose_target(frame: pd.DataFrame, target: str | None = None) -> str:
    """The accuracy column to analyse: `target` if given, else DEFAULT_TARGET, else the first attentive
    probe column; an error lists the probe columns there are."""
    available = [c for c in probe_columns(frame) if frame[c].notna().any()]
    if target is not None:
        if target not in available:
            raise StudyDataError(f"target column {target!r} has no values; probe columns with values: "
                                 f"{', '.join(available) or 'none'}")
        return target
    if DEFAULT_TARGET in available:
        return DEFAULT_TARGET
    attentive = [c for c in available if c.startswith("probe.attentive.")]
    if attentive:
        return attentive[0]
    raise StudyDataError(f"no {DEFAULT_TARGET} and no probe.attentive.* column; pass a target. Probe columns "
                         f"with values: {', '.join(available) or 'none'}")


def choose_evaluation(frame: pd.DataFrame, evaluation: str | None = None) -> str:
    """`evaluation` if given, else the one that covers the most runs (ties: systematic, fast, then by name)."""
    runs = frame.groupby("evaluation")["run_key"].nunique()
    if evaluation is not None:
        if evaluation not in runs:
            raise StudyDataError(f"no records of evaluation {evaluation!r}; there are: {', '.join(runs.index)}")
        return evaluation
    order = sorted(runs.index, key=lambda e: (-runs[e], EVALUATION_PREFERENCE.index(e)
                                              if e in EVALUATION_PREFERENCE else len(EVALUATION_PREFERENCE), e))
    return order[0]


def _costs(final: pd.DataFrame) -> pd.DataFrame:
    """Runs, FLOPs and hours spent per curve (each run's own training; NaN where no run reported it)."""
    def total(column):
        return (column, lambda v: v.sum(min_count=1))
    return (final.groupby("group").agg(runs=("run_key", "nunique"), flops=total("flops_run"),
                                       train_hours=total("train_hours"), gpu_hours=total("gpu_hours"),
                                       cpu_hours=total("cpu_hours")).reset_index())


def select(frame: pd.DataFrame, target: str | None = None, evaluation: str | None = None,
           benchmark: str | None = None) -> tuple[str, str, str, pd.DataFrame]:
    """The rows an analysis reads: one benchmark (collect.one_benchmark), one evaluation (choose_evaluation), and
    the target (choose_target). -> (benchmark, evaluation, target, rows)."""
    if frame.empty:
        raise StudyDataError("no records to analyse")
    benchmark, frame = one_benchmark(frame, benchmark)
    evaluation = choose_evaluation(frame, evaluation)
    frame = frame[frame["evaluation"] == evaluation].reset_index(drop=True)
    return benchmark, evaluation, choose_target(frame, target), frame


def analyze(frame: pd.DataFrame, target: str | None = None, *, evaluation: str | None = None,
            n_boot: int = 1000, seed: int = 0, benchmark: str | None = None) -> Analysis:
    """What the study kind's question asks (analysis.answers), with bootstrap intervals, and every checkpoint
    choice a loss of the records can make; a study of a kind the analysis does not know is refused by name."""
    benchmark, evaluation, target, frame = select(frame, target, evaluation, benchmark)
    last = final_records(frame)
    last = last[last[target].notna()]
    final, baselines = last[last["flops_total"] > 0], last[last["flops_total"] <= 0]
    out = Analysis(target, evaluation, frame, final.reset_index(drop=True), baselines.reset_index(drop=True),
                   n_boot=n_boot, kind=of_frame(frame), benchmark=benchmark)
    out.choices = checkpoint_choices(frame, target, n_boot=n_boot, seed=seed)
    answer_of(out.kind).analyze(out, frame, final, n_boot=n_boot, seed=seed)
    out.costs = _costs(final)
    return out


def checkpoint_choices(frame: pd.DataFrame, target: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Checkpoint choice by each loss of choice_.CRITERIA that the records hold (criterion -> Choice)."""
    return {by: choice_.choose(frame, target, by, n_boot=n_boot, seed=seed)
            for by, column in choice_.CRITERIA.items() if column in frame and frame[column].notna().any()}


def summarize(study_dir, target: str | None = None, *, evaluation: str | None = None,
              allow_partial: bool = False, n_boot: int = 1000, seed: int = 0, benchmark: str | None = None) -> str:
    """The study's summary as printable text, by its kind's question (analysis.answers). Teacher selection: the
    verdict and the ranking (Spearman with its interval, permutation p, LOTO skill; `n_boot` resamples and
    permutations). Otherwise: accuracy @ total FLOPs per budget and curve (mean over seeds; * marks the best teacher
    share of a budget), the verdict and what the study can show, no bootstrap of fits."""
    _, evaluation, target, frame = select(load_study(study_dir, allow_partial=allow_partial), target, evaluation,
                                          benchmark)
    kind = of_frame(frame)
    return answer_of(kind).summary(frame, target, evaluation, kind, n_boot=n_boot, seed=seed)


def choice_sections(choices: dict) -> list[str]:
    """Checkpoint choice without probes: per criterion, the verdicts and the per-recipe table."""
    if not choices:
        return ["## Checkpoint choice without probes\nNo record holds a training or held-out loss."]
    out = []
    for by, c in choices.items():
        worst = c.runs.sort_values("regret", ascending=False).head(10)
        out.append(f"## Checkpoint choice without probes: by `{c.loss}` (`--choose-by {by}`)\n"
                   + bullets(choice_.choice_text(c)) + "\n\n"
                   f"Runs with the largest regret (all runs: `{CHOICE_CSV}`):\n"
                   + markdown_table(worst, ["run_id", "n_checkpoints", "chosen_step", "chosen_accuracy", "best_step",
                                            "best_accuracy", "last_step", "regret", "regret_last", "agreement"])
                   + "\n\nRuns of one recipe (curve x budget) ranked by their final checkpoints' loss:\n"
                   + markdown_table(c.recipes))
    return out


def _figures_section(figures: list[Path], left_out: dict[str, str]) -> list[str]:
    if not figures and not left_out:
        return []
    lines = [f"![{p.stem}](figures/{p.name})" for p in figures]
    lines += [f"- `{name}` left out: {why}." for name, why in left_out.items()]
    return ["## Figures\n" + "\n".join(lines)]


def render(a: Analysis, study_dirs: list[str], completeness: list[str], figures: list[Path],
           left_out: dict[str, str] | None = None) -> str:
    """report.md for an Analysis: its question's sections (analysis.answers), the checkpoint choice, figures."""
    sections = answer_of(a.kind).sections(a, study_dirs, completeness)
    sections += choice_sections(a.choices)
    sections += _figures_section(figures, left_out or {})
    return "\n\n".join(sections) + "\n"


def write_report(a: Analysis, out: Path, study_dirs: list[str], completeness: list[str],
                 figures: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    pngs, left_out = [], {}
    if figures:
        from analysis.figures import all_figures   # matplotlib only when figures are drawn
        pngs, left_out = all_figures(a, out / "figures")
    for name, table in answer_of(a.kind).tables(a).items():
        atomic_write_text(out / name, table.to_csv(index=False))
    if a.choices:
        atomic_write_text(out / CHOICE_CSV, pd.concat([c.runs.assign(criterion=by) for by, c in a.choices.items()])
                          .to_csv(index=False))
    path = out / "report.md"
    atomic_write_text(path, render(a, study_dirs, completeness, pngs, left_out))
    return path


def headline(a: Analysis) -> str:
    """An analysis's answer in a few lines of markdown (its question's: a selection study's verdict; else the
    summary table, accuracy [interval] @ FLOPs per budget and curve, and the verdict in words)."""
    return answer_of(a.kind).headline(a)


def render_index(analyses: dict[str, Analysis], study_dirs: list[str]) -> str:
    """report.md of `--benchmark all`: per benchmark its target, answer and the path of its full report."""
    studies = sorted({str(s) for a in analyses.values() for s in a.frame["study"].unique()})
    sections = [f"# Study analysis across benchmarks: {', '.join(studies)}",
                f"Study folder(s): {', '.join(study_dirs)}  \nBenchmarks: {', '.join(analyses)}. Scores of different "
                "benchmarks never share a fit, a table or a verdict: each has its own report (linked below)."]
    for name, a in analyses.items():
        sections.append(f"## Benchmark `{name}`: {column_name(a.target)}\n`{a.target}` (evaluation `{a.evaluation}`); "
                        f"full report: [{name}/report.md]({name}/report.md)\n\n" + headline(a))
    return "\n\n".join(sections) + "\n"


def run(study_dirs, out=None, *, target: str | None = None, evaluation: str | None = None, n_boot: int = 1000,
        seed: int = 0, allow_partial: bool = False, figures: bool = True, benchmark: str | None = None) -> Path:
    """Load, analyse and write report.md (+ figures/) into `out` (default STUDY_DIR/analysis). `benchmark`
    "all": each benchmark's report in out/<benchmark>/, and out/report.md indexing their answers."""
    dirs = [Path(study_dirs)] if isinstance(study_dirs, (str, Path)) else [Path(d) for d in study_dirs]
    out = Path(out) if out else dirs[0] / "analysis"
    frame = load_study(dirs, allow_partial=allow_partial)
    names = [benchmark] if benchmark != ALL_BENCHMARKS else (
        sorted(frame["benchmark"].unique()) if "benchmark" in frame and not frame.empty else [None])
    # every benchmark is analysed before anything is written: a bad one loses nothing
    analyses = {a.benchmark: a for a in (analyze(frame, target, evaluation=evaluation, n_boot=n_boot, seed=seed,
                                                 benchmark=name) for name in names)}

    def report(a: Analysis, folder: Path) -> Path:
        completeness = [check_complete(d, target=a.target, evaluation=a.evaluation, benchmark=a.benchmark).message
                        .replace("\n", "  \n")
                        for d in dirs]
        return write_report(a, folder, [str(d) for d in dirs], completeness, figures)
    if benchmark != ALL_BENCHMARKS:
        return report(next(iter(analyses.values())), out)
    for name, a in analyses.items():
        report(a, out / name)
    index = out / "report.md"
    atomic_write_text(index, render_index(analyses, [str(d) for d in dirs]))
    return index
