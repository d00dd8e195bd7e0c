"""The answer of a teacher-selection study in words: its verdict, the compact ranking and its report sections
(the SELECTION question of analysis.kinds)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.collect import final_records
from analysis.correlate import CANDIDATES, interval, verdict
from analysis.markdown import bullets, ci_text, markdown_table

RANKING_CSV, R2_CSV = "teacher_selection.csv", "within_teacher_r2.csv"   # beside report.md


def ranking_table(ranking: pd.DataFrame) -> pd.DataFrame:
    """The compact ranking: metric, n, Spearman [95% CI], permutation p, LOTO skill, and why a number is
    missing (the full table is RANKING_CSV)."""
    rows = []
    for _, r in ranking.iterrows():
        ok = r["status"] == "ok"
        rank = "" if pd.isna(r["rank"]) else str(int(r["rank"]))
        rows.append({"rank": rank, "metric": r["metric"], "n": int(r["n"]),
                     "Spearman [95% CI]": f"{r['spearman']:+.2f} {ci_text(*interval(r))}" if ok else "n/a",
                     "permutation p": f"{r['spearman_p']:.2g}" if ok and np.isfinite(r["spearman_p"]) else "n/a",
                     "LOTO skill": f"{r['loto_skill']:+.2f}" if np.isfinite(r["loto_skill"]) else "n/a",
                     "note": r["reason"] if not ok else (r.get("loto_reason") or "")})
    return pd.DataFrame(rows)


def _named(metric: str, markdown: bool) -> str:
    return f"`{metric}`" if markdown else metric


def verdict_text(v: dict, target: str, markdown: bool = True) -> str:
    """The verdict of `analysis.correlate.verdict` in words: which metric ranks first, whether its interval
    excludes zero and the runner-up's, its LOTO skill, and the within-teacher R^2 of the student's loss."""
    name = lambda m: _named(m, markdown)   # noqa: E731
    if v["top"] is None:
        lines = ["No metric could be ranked: none has enough students with both the metric and the target "
                 "(see the notes of the table)."]
    else:
        has_interval = bool(np.isfinite(v["lo"]) and np.isfinite(v["hi"]))
        lines = [f"{name(v['top'])} ranks first of {v['n_ranked']} metric(s): Spearman {v['spearman']:+.2f} "
                 f"{ci_text(v['lo'], v['hi'])} with {name(target)} over {v['n']} final students (permutation "
                 f"p = {v['p']:.2g}); " + (
                     "no interval was computed (no bootstrap resamples)." if not has_interval else
                     "the 95% interval excludes zero and the permutation test agrees." if v["significant"] else
                     f"the 95% interval excludes zero but the permutation test does not (p >= 0.05): with "
                     f"{v['n']} students the interval is too narrow to trust, and the study cannot tell whether "
                     "it predicts accuracy." if v["excludes_zero"] else
                     f"the 95% interval includes zero: with {v['n']} students the study cannot tell whether it "
                     "predicts accuracy.")]
        if "runner_up" in v and has_interval:
            runner = f"{name(v['runner_up'])}, {v['runner_spearman']:+.2f} {ci_text(v['runner_lo'], v['runner_hi'])}"
            lines.append(f"Its |rho| interval lies above the runner-up's ({runner}): it ranks first beyond the "
                         "resampling noise." if v["separated"] else
                         f"Its interval overlaps the runner-up's ({runner}): the study does not separate the two.")
        lines.append(f"Leave-one-teacher-out skill {v['loto_skill']:+.2f} (> 0: predicting each teacher's students "
                     "from the other teachers beats their mean)." if np.isfinite(v["loto_skill"]) else
                     f"Leave-one-teacher-out: not computed ({v['loto_reason'] or 'no value'}).")
    if v["r2_teachers"]:
        lines.append(f"Within a teacher (the paper's figure), {name(v['r2_metric'])} explains R^2 = "
                     f"{v['r2_median']:.2f} of the accuracy along the student's training (median over "
                     f"{v['r2_teachers']} of {v['r2_of']} teachers; range {v['r2_min']:.2f}-{v['r2_max']:.2f}; "
                     f"lower loss went with higher accuracy for {v['r2_negative']} of them).")
    else:
        lines.append(f"Within-teacher R^2 of {name(v['r2_metric'])}: not computed (fewer than 4 evaluated student "
                     "checkpoints per teacher, or no values).")
    return " ".join(lines)


def summary_text(selection: dict, target: str, evaluation: str) -> str:
    """The printed summary: the question, the verdict and the compact ranking."""
    return "\n\n".join([f"Teacher selection: which label-free metric predicts {target} ({evaluation})?",
                        verdict_text(verdict(selection), target, markdown=False),
                        ranking_table(selection["ranking"]).to_string(index=False)])


def sections(a, study_dirs: list[str], completeness: list[str]) -> list[str]:
    """report.md of a teacher-selection study (an analysis.answers.Analysis): the verdict, the compact ranking,
    per-teacher R^2, the data and the cost."""
    sel = a.selection
    r2 = sel["r2"]
    v = verdict(sel)
    r2 = r2[r2["metric"] == v["r2_metric"]]
    teachers = sel["selection"].drop_duplicates("teacher")
    return [
        "# Teacher selection: which label-free metric predicts the student's accuracy?",
        "**Verdict.** " + verdict_text(v, a.target),
        f"## Ranking\nBy |Spearman| over the final students ({len(final_records(sel['selection']))} students of "
        f"{teachers['teacher_key'].nunique()} teacher runs, {len(teachers)} teacher checkpoints); 95% bootstrap "
        f"intervals (BCa, {a.n_boot} resamples); permutation p-values; LOTO = leave-one-teacher-out linear "
        f"prediction (skill > 0: better than the other teachers' mean). Full table (Kendall, Pearson, both interval "
        f"kinds, LOTO RMSE): `{RANKING_CSV}`; per-teacher R^2 of every metric: `{R2_CSV}`.\n"
        + markdown_table(ranking_table(sel["ranking"])),
        f"## Within-teacher R^2 of `{v['r2_metric']}` vs accuracy\nA least-squares line through every evaluated "
        "checkpoint of one teacher checkpoint's student.\n"
        + markdown_table(r2, ["teacher_name", "n", "r2", "slope", "reason", "teacher"]),
        "## Data\n" + f"Study folder(s): {', '.join(study_dirs)}  \nTarget: `{a.target}` (evaluation "
        f"`{a.evaluation}`). Benchmark: `{a.benchmark}`. Candidates: " + ", ".join(f"`{m}` ({src}'s `{col or 'target'}`)"
                                                      for m, (src, col) in CANDIDATES.items()) + ".",
        bullets(completeness),
        "## Cost per curve\n" + markdown_table(a.costs),
    ]
