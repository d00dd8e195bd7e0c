"""The teacher-selection answer on synthetic studies with a known answer: the verdict, the compact ranking and its
CSV, the paper's figure (a colour, a line and an R^2 per teacher, teachers named in words), the study's printed
summary, and presets whose design can answer."""
import numpy as np
import pandas as pd
import pytest

from analysis.collect import load_study
from analysis.correlate import interval, rank_metrics, verdict
from analysis import kinds
from analysis.answers import answer_of
from analysis.figures import loss_vs_accuracy, metric_panels
from analysis.report import analyze, run, summarize
from analysis.report_selection import R2_CSV, RANKING_CSV, verdict_text
from analysis.synthetic import TARGET
from analysis.synthetic_choice import SelectionSpec, write_selection_study

BUILT = ("student_loss", "student_train_loss")   # built to predict accuracy within and across teachers
NOISE = ("teacher_rankme", "teacher_lidar", "teacher_alpha_req")
# The small preset's design: 3 sizes x 2 masks x 4 checkpoints = 24 students, 4 evaluations each
SMALL = SelectionSpec(teacher_sizes=("micro", "tiny", "mini"), teacher_checkpoints=(250, 500, 1000, 2000),
                      student_steps=1500, log_every=10)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_selection_study(tmp_path_factory.mktemp("selection") / "s", SMALL, seed=0)


@pytest.fixture(scope="module")
def report(study):
    return run(study, n_boot=300)


def test_known_answer_ranks_the_built_metric_first_and_the_verdict_says_so(study, report):
    ranking = pd.read_csv(report.parent / RANKING_CSV).set_index("metric")
    top = ranking.index[0]
    assert top in BUILT and ranking.at[top, "n"] == 24
    lo, hi = interval(ranking.loc[top])
    assert hi < 0                                                     # a loss: lower loss, higher accuracy
    for noise in NOISE:
        lo, hi = interval(ranking.loc[noise])
        assert lo < 0 < hi and ranking.at[noise, "spearman_p"] > 0.05, noise
    text = report.read_text()
    verdict_line = next(line for line in text.splitlines() if line.startswith("**Verdict.**"))
    assert f"`{top}` ranks first of 8 metric(s)" in verdict_line
    assert "over 24 final students" in verdict_line
    assert "the 95% interval excludes zero and the permutation test agrees" in verdict_line
    assert "Within a teacher (the paper's figure), `student_train_loss` explains R^2 = 0.9" in verdict_line
    assert "lower loss went with higher accuracy for 24 of them" in verdict_line
    assert text.index("**Verdict.**") < text.index("## Ranking")   # the answer leads


def test_report_has_only_the_selection_sections_a_compact_table_and_the_full_csv(study, report):
    text = report.read_text()
    for absent in ("## Accuracy vs compute", "## L(N, D)", "## Compute-optimal teacher share", "## FLOPs SALT needs",
                   "## Pareto frontier"):
        assert absent not in text
    assert "| rank | metric | n | Spearman [95% CI] | permutation p | LOTO skill | note |" in text
    ranking = pd.read_csv(report.parent / RANKING_CSV)
    assert len(ranking) == 8 and {"kendall_bca_lo", "pearson_p", "loto_rmse", "median_within_teacher_r2"} <= set(ranking)
    assert ranking["loto_skill"].notna().all()                       # 6 teacher runs: LOTO is computable
    r2 = pd.read_csv(report.parent / R2_CSV)
    assert set(r2["teacher_name"]) >= {"tiny teacher, 2000 steps, multiblock", "micro teacher, 250 steps, random"}
    figures = sorted(p.stem for p in (report.parent / "figures").glob("*.png"))
    assert figures == sorted(answer_of(kinds.get("teacher_selection")).figures)
    for name in figures:
        assert f"(figures/{name}.png)" in text


def test_the_paper_figure_has_a_colour_a_line_and_an_r2_per_teacher(study):
    a = analyze(load_study(study), n_boot=50)
    ax = loss_vs_accuracy(a).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    teachers = a.selection["selection"]["teacher_name"].unique()
    assert len(teachers) == 24
    for name in teachers:
        assert sum(label.startswith(f"{name}: R^2 0.") or label.startswith(f"{name}: R^2 1.") for label in labels) == 1
    assert len(ax.lines) == len(teachers) + 1                        # a fitted line each + the across-teacher one
    colours = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(colours) == len(teachers)
    panels = [ax for ax in metric_panels(a).axes if ax.get_visible()]
    assert len(panels) == 8 and all(ax.get_legend() is not None for ax in panels)   # the same layout per metric
    rankme = next(ax for ax in panels if ax.get_title().startswith("teacher_rankme"))
    assert all("R^2 n/a (constant metric)" in t.get_text() for t in rankme.get_legend().get_texts()[:-1])


def test_the_study_prints_the_verdict_and_the_ranking(study):
    text = summarize(study, n_boot=200)
    lines = text.splitlines()
    assert lines[0] == f"Teacher selection: which label-free metric predicts {TARGET} (fast)?"
    assert "ranks first of 8 metric(s)" in text and "Spearman [95% CI]" in text and "LOTO skill" in text
    assert all(metric in text for metric in BUILT + NOISE)


def test_teacher_selection_study_hooks_summarize_and_report(study, monkeypatch):
    from studies import reporting, teacher_selection

    seen = {}
    monkeypatch.setattr(teacher_selection, "study_main", lambda *args, hooks, **kw: seen.setdefault("hooks", hooks) and 0)
    teacher_selection.main(["--dry-run"])
    hooks = seen["hooks"]
    assert hooks.summarize is reporting.summarize and hooks.report is reporting.write_report
    assert "ranks first" in hooks.summarize(study)


def test_verdict_sentences_when_nothing_is_shown():
    v = {"top": "teacher_lidar", "n_ranked": 8, "n": 8, "spearman": 0.3, "lo": -0.5, "hi": 0.8, "p": 0.4,
         "loto_skill": -0.2, "loto_reason": "", "excludes_zero": False, "runner_up": "teacher_rankme",
         "runner_spearman": -0.2, "runner_lo": -0.7, "runner_hi": 0.5, "separated": False,
         "r2_metric": "student_loss", "r2_teachers": 0, "r2_of": 8, "r2_median": np.nan, "r2_min": np.nan,
         "r2_max": np.nan}
    v["significant"] = False
    text = verdict_text(v, TARGET)
    assert "the 95% interval includes zero: with 8 students the study cannot tell" in text
    assert "overlaps the runner-up's (`teacher_rankme`" in text and "Within-teacher R^2 of `student_loss`: not computed" in text
    # a BCa interval of 8 points that excludes zero while the permutation test does not reject: not a finding
    text = verdict_text({**v, "lo": 0.28, "hi": 1.0, "excludes_zero": True, "p": 0.12}, TARGET)
    assert "excludes zero but the permutation test does not (p >= 0.05)" in text and "cannot tell" in text


@pytest.mark.parametrize("preset", ["default", "small"])
def test_presets_have_a_design_that_can_answer(preset, tmp_path):
    """The preset's design (teachers x masks x checkpoints, student evaluation points) as a synthetic study with
    a real relation: every interval and LOTO is computable, and the built metric's interval excludes zero."""
    from studies.teacher_selection import PRESETS

    d = PRESETS[preset]
    teacher_runs = len(d.teacher_sizes) * len(d.teacher_masks) * len(d.seeds)
    assert teacher_runs >= 4 and teacher_runs * len(d.teacher_checkpoints) >= 8
    spec = SelectionSpec(teacher_sizes=tuple(d.teacher_sizes), teacher_masks=tuple(d.teacher_masks),
                         teacher_checkpoints=tuple(d.teacher_checkpoints), student_steps=d.student_steps,
                         student_checkpoints=tuple((i + 1) / d.student_eval_points for i in range(d.student_eval_points)),
                         seeds=len(d.seeds))
    result = rank_metrics(load_study(write_selection_study(tmp_path / "s", spec, seed=1)), TARGET, n_boot=300,
                          n_perm=300)
    ranking = result["ranking"].set_index("metric")
    assert (ranking["status"] == "ok").all() and ranking["loto_skill"].notna().all()
    assert ranking[["spearman_bca_lo", "spearman_bca_hi"]].notna().all().all()
    v = verdict(result)
    assert v["excludes_zero"] and v["r2_teachers"] == teacher_runs * len(d.teacher_checkpoints)
    # with 8 students any of the related metrics may come first; with the small preset's 24, a student loss does
    assert v["top"] in (BUILT if preset == "small" else BUILT + ("short_run_loss", "teacher_probe", "teacher_loss"))
