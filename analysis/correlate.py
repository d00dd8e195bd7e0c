"""Teacher selection: which label-free signal predicts the student's accuracy?

For each candidate metric: Spearman, Kendall (tau-b) and Pearson with BCa and percentile bootstrap
intervals (the same resamples for all three) and permutation p-values (with a handful of students,
asymptotic p-values are not valid); R^2 of accuracy on the metric within each teacher (every evaluated
checkpoint of that teacher's students, the paper's R^2 figure); and the leave-one-teacher-out error of a
linear prediction of the student's accuracy from the metric. A metric with fewer than MIN_POINTS points,
or a constant one, gets a status and a reason, never a number.
"""
from __future__ import annotations

import math
import warnings
from itertools import permutations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.collect import final_records
from analysis.resample import LEVEL, percentile_interval

MIN_POINTS = 4
STATISTICS = ("spearman", "kendall", "pearson")
# candidate name -> (whose record: the student's or its teacher's, column; None = the target column)
CANDIDATES: dict[str, tuple[str, str | None]] = {
    "student_loss": ("student", "losses.heldout"),
    "student_train_loss": ("student", "losses.train"),     # the paper's metric
    "short_run_loss": ("student", "losses.train_early"),
    "teacher_loss": ("teacher", "losses.heldout"),
    "teacher_rankme": ("teacher", "metrics.rankme"),
    "teacher_lidar": ("teacher", "metrics.lidar"),
    "teacher_alpha_req": ("teacher", "metrics.alpha_req"),
    "teacher_probe": ("teacher", None),
}
PAPER_METRIC = "student_train_loss"   # the paper's within-teacher R^2 figure (student_loss where it is missing)
_PAIRWISE_MAX_N = 100   # Kendall of permutations: all pairs at once up to this n, scipy's O(n log n) one at a time above


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        return (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis: sum sgn(dx) sgn(dy) / sqrt(#pairs untied in x * in y)."""
    n = x.shape[-1]
    if n > _PAIRWISE_MAX_N:
        flat_x, flat_y = x.reshape(-1, n), y.reshape(-1, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tau = [stats.kendalltau(a, b).statistic for a, b in zip(flat_x, flat_y)]
        return np.asarray(tau, dtype=float).reshape(x.shape[:-1])
    i, j = np.triu_indices(n, 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    with np.errstate(all="ignore"):
        return (sx * sy).sum(axis=-1) / np.sqrt(np.abs(sx).sum(axis=-1) * np.abs(sy).sum(axis=-1))


def _all_statistics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(3, ...) spearman, kendall, pearson of paired samples along the last axis."""
    rank = stats.rankdata
    return np.stack([_pearson(rank(x, axis=-1), rank(y, axis=-1)), _kendall(x, y), _pearson(x, y)])


def _resampled_statistics(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(3, R) statistics of the resamples x[idx], y[idx] (idx (R, m): bootstrap or jackknife). Kendall uses
    the resample's counts c of each point: tau-b = c'Mc / sqrt(c'|Sx|c c'|Sy|c) with Sx = sgn(x_i - x_j),
    M = Sx*Sy (copies of one point are tied in x and y: they count in none of the sums). One matrix product
    for all resamples instead of one O(n log n) call each."""
    rank = stats.rankdata
    xs, ys = x[idx], y[idx]
    counts = np.zeros((len(idx), len(x)))
    np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1.0)
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])

    def quadratic(m):
        return np.einsum("ri,ri->r", counts @ m, counts)

    with np.errstate(all="ignore"):
        kendall = quadratic(sx * sy) / np.sqrt(quadratic(np.abs(sx)) * quadratic(np.abs(sy)))
    return np.stack([_pearson(rank(xs, axis=-1), rank(ys, axis=-1)), kendall, _pearson(xs, ys)])


def _bca(theta: np.ndarray, boot: np.ndarray, jack: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """BCa interval per statistic (theta (s,), boot (s, B), jack (s, n)); NaN where it is undefined."""
    lo, hi = np.full(len(theta), np.nan), np.full(len(theta), np.nan)
    alphas = np.array([(1 - level) / 2, (1 + level) / 2])
    for s in range(len(theta)):
        b = boot[s][np.isfinite(boot[s])]
        if len(b) < 10 or not np.isfinite(theta[s]) or not np.isfinite(jack[s]).all():
            continue
        z0 = stats.norm.ppf(((b < theta[s]).sum() + 0.5 * (b == theta[s]).sum()) / len(b))
        d = jack[s].mean() - jack[s]
        denom = 6 * (d @ d) ** 1.5
        a = (d ** 3).sum() / denom if denom > 0 else 0.0
        z = stats.norm.ppf(alphas)
        adjusted = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        if np.isfinite(adjusted).all():
            lo[s], hi[s] = np.percentile(b, 100 * adjusted)
    return lo, hi


def _permutation_p(x: np.ndarray, y: np.ndarray, theta: np.ndarray, n_perm: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Two-sided permutation p-values of the three statistics: exact (all n! pairings) when n! <= n_perm,
    else (1 + #|stat*| >= |stat|) / (1 + n_perm)."""
    n = len(x)
    if math.factorial(n) <= n_perm:
        orders, exact = np.array(list(permutations(range(n)))), True
    else:
        orders, exact = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1), False
    null = _all_statistics(np.broadcast_to(x, orders.shape), y[orders])
    hits = (np.abs(null) >= np.abs(theta)[:, None] - 1e-12).sum(axis=1)
    p = hits / len(orders) if exact else (1 + hits) / (1 + len(orders))
    return p, "exact" if exact else f"{len(orders)} permutations"


def _too_few(x: np.ndarray, y: np.ndarray) -> str:
    if len(x) < MIN_POINTS:
        return f"too few points ({len(x)} < {MIN_POINTS})"
    if np.ptp(x) == 0:
        return "constant metric"
    if np.ptp(y) == 0:
        return "constant accuracy"
    return ""


def correlation(x, y, *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """Spearman, Kendall and Pearson of paired x, y (NaN pairs dropped): estimate, BCa and percentile
    bootstrap intervals, permutation p-value. Too few points or a constant input: NaN with `reason`."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out = pd.DataFrame({"statistic": STATISTICS, "n": len(x), "estimate": np.nan, "bca_lo": np.nan,
                        "bca_hi": np.nan, "pct_lo": np.nan, "pct_hi": np.nan, "p_perm": np.nan,
                        "p_method": "", "status": "ok", "reason": ""})
    reason = _too_few(x, y)
    if reason:
        out["status"], out["reason"] = reason.split(" (")[0], reason
        return out
    rng = np.random.default_rng(seed)
    theta = _all_statistics(x, y)
    out["estimate"] = theta
    if n_boot:
        n = len(x)
        boot = _resampled_statistics(x, y, rng.integers(0, n, size=(n_boot, n)))   # all ties: NaN
        leave_one_out = np.broadcast_to(np.arange(n), (n, n))[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        jack = _resampled_statistics(x, y, leave_one_out)
        out["pct_lo"], out["pct_hi"] = percentile_interval(boot, level, axis=1)
        out["bca_lo"], out["bca_hi"] = _bca(theta, boot, jack, level)
    if n_perm:
        out["p_perm"], out["p_method"] = _permutation_p(x, y, theta, n_perm, rng)
    return out


def selection_frame(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per evaluated student checkpoint (runs with a teacher) with the target, `teacher` (the
    teacher run and step it learned from) and one column per candidate metric (CANDIDATES): the
    student's own columns, or those of its teacher's record at the step it used (else the teacher's last)."""
    students = frame[frame["teacher_key"].notna() & frame[target].notna()].copy()
    teachers = frame[frame["run_key"].isin(students["teacher_key"].unique())]
    teachers = teachers.sort_values("checkpoint_step")
    at_step = teachers.drop_duplicates(["run_key", "evaluation", "checkpoint_step"], keep="last")
    last = teachers.drop_duplicates(["run_key", "evaluation"], keep="last")
    out = students[["run_key", "run_id", "group", "evaluation", "checkpoint_step", "steps_total", "teacher_key",
                    "teacher_step", "budget", target]].copy()
    out["teacher"] = students["teacher_run_id"].astype(str) + "@" + students["teacher_step"].astype(str)
    out["teacher_name"] = teacher_names(students)
    keys = ["teacher_key", "evaluation", "teacher_step"]
    for name, (source, column) in CANDIDATES.items():
        column = column or target
        if source == "student":
            out[name] = students[column] if column in students else np.nan
            continue
        if column not in teachers:
            out[name] = np.nan
            continue
        exact = at_step[["run_key", "evaluation", "checkpoint_step", column]].set_axis(keys + ["v"], axis=1)
        fallback = last[["run_key", "evaluation", column]].set_axis(keys[:2] + ["v"], axis=1)
        merged = out[keys].merge(exact, on=keys, how="left")["v"].to_numpy()
        merged_last = out[keys[:2]].merge(fallback, on=keys[:2], how="left")["v"].to_numpy()
        out[name] = np.where(np.isfinite(merged.astype(float)), merged, merged_last).astype(float)
    return out.reset_index(drop=True)


def teacher_names(students: pd.DataFrame) -> pd.Series:
    """A teacher checkpoint in words, from the plan's labels: "tiny teacher, 120 steps, multiblock" (size, the
    checkpoint step the student started from, mask kind; the parts the labels give). Two teachers that the
    words do not tell apart (e.g. seeds) get their run id appended; no labels at all: "run_id@step"."""
    ids = students["teacher_run_id"].astype(str) + "@" + students["teacher_step"].astype(str)

    def words(row) -> str:
        parts = []
        size, mask = row.get("teacher_size"), row.get("teacher_mask")
        if isinstance(size, str) and size:
            parts.append(f"{size} teacher")
        if row.get("teacher_step", -1) >= 0 and parts:
            parts.append(f"{int(row['teacher_step'])} steps")
        if isinstance(mask, str) and mask and parts:
            parts.append(mask)
        return ", ".join(parts)

    names = pd.Series([words(r) for _, r in students.iterrows()], index=students.index, dtype=object)
    names = names.where(names != "", ids)
    clash = names.groupby(names).transform(lambda n: ids[n.index].nunique() > 1)
    return names.where(~clash, names + " (" + ids + ")")


def within_teacher_r2(selection: pd.DataFrame, metric: str, target: str) -> pd.DataFrame:
    """R^2 (and slope) of a least-squares line accuracy ~ metric within each teacher's students."""
    rows = []
    for teacher, g in selection.groupby("teacher", sort=True):
        x, y = g[metric].to_numpy(float), g[target].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        reason = _too_few(x[ok], y[ok])
        name = g["teacher_name"].iloc[0] if "teacher_name" in g else teacher
        row = {"metric": metric, "teacher": teacher, "teacher_name": name, "n": int(ok.sum()), "r2": np.nan,
               "slope": np.nan, "intercept": np.nan, "reason": reason}
        if not reason:
            fit = stats.linregress(x[ok], y[ok])
            row.update(r2=fit.rvalue ** 2, slope=fit.slope, intercept=fit.intercept)
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "teacher", "teacher_name", "n", "r2", "slope", "intercept", "reason"])


def leave_one_teacher_out(final: pd.DataFrame, metric: str, target: str, by: str = "teacher_key") -> dict:
    """Predict the accuracy of each teacher run's students (all its checkpoints left out together, so a
    teacher is never scored by its own other checkpoints) from a least-squares line fitted on the other
    teachers' students (closed form from sums, all teachers at once).
    skill = 1 - RMSE / RMSE of predicting the other teachers' mean (> 0: the metric helps)."""
    data = final[[by, metric, target]].dropna()
    teachers = data[by].nunique()
    out = {"metric": metric, "n_teachers": teachers, "loto_rmse": np.nan, "loto_mae": np.nan,
           "loto_skill": np.nan, "loto_reason": ""}
    if teachers < 3:
        out["loto_reason"] = f"too few teachers ({teachers} < 3)"
        return out
    x, y = data[metric].to_numpy(float), data[target].to_numpy(float)
    parts = pd.DataFrame({"n": 1.0, "x": x, "y": y, "xx": x * x, "xy": x * y, "g": data[by].to_numpy()})
    rest = parts.drop(columns="g").sum() - parts.groupby("g").sum()       # sums over the other teachers
    rest = rest.loc[parts["g"]].to_numpy().T                              # per row: n, x, y, xx, xy
    n, sx, sy, sxx, sxy = rest
    denominator = n * sxx - sx * sx
    if (n < MIN_POINTS).any() or (denominator <= 1e-12 * n * n * max(1.0, float(np.abs(x).max()) ** 2)).any():
        out["loto_reason"] = "too few points or a constant metric once a teacher is left out"
        return out
    slope = (n * sxy - sx * sy) / denominator
    errors = (sy - slope * sx) / n + slope * x - y
    baseline = sy / n - y
    rmse = float(np.sqrt(np.mean(errors ** 2)))
    out.update(loto_rmse=rmse, loto_mae=float(np.abs(errors).mean()),
               loto_skill=1 - rmse / float(np.sqrt(np.mean(baseline ** 2))))
    return out


def rank_metrics(frame: pd.DataFrame, target: str, *, metrics=None, n_boot: int = 1000, n_perm: int = 1000,
                 seed: int = 0, level: float = LEVEL) -> dict[str, pd.DataFrame]:
    """The teacher-selection analysis of one evaluation's frame. Returns
    `ranking` (one row per metric, ranked by |Spearman| of the final students; unusable metrics last with
    their reason), `correlations` (long: metric x statistic), `r2` (metric x teacher) and `selection`."""
    metrics = list(metrics or CANDIDATES)
    unknown = [m for m in metrics if m not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; candidates: {', '.join(CANDIDATES)}")
    selection = selection_frame(frame, target)
    final = final_records(selection) if len(selection) else selection
    correlations, r2, rows = [], [], []
    for k, metric in enumerate(metrics):
        corr = correlation(final[metric], final[target], n_boot=n_boot, n_perm=n_perm, seed=seed + k, level=level)
        corr.insert(0, "metric", metric)
        correlations.append(corr)
        within = within_teacher_r2(selection, metric, target)
        r2.append(within)
        row = {"metric": metric, "n": int(corr["n"].iloc[0]), "status": corr["status"].iloc[0],
               "reason": corr["reason"].iloc[0]}
        if row["n"] == 0 and len(final):
            source, column = CANDIDATES[metric]
            row["reason"] = f"no values: no {source} record has {column or target}"
        for _, c in corr.iterrows():
            row.update({f"{c.statistic}": c.estimate, f"{c.statistic}_bca_lo": c.bca_lo,
                        f"{c.statistic}_bca_hi": c.bca_hi, f"{c.statistic}_pct_lo": c.pct_lo,
                        f"{c.statistic}_pct_hi": c.pct_hi, f"{c.statistic}_p": c.p_perm})
        row["median_within_teacher_r2"] = within["r2"].median() if within["r2"].notna().any() else np.nan
        row.update({k2: v for k2, v in leave_one_teacher_out(final, metric, target).items() if k2 != "metric"})
        rows.append(row)
    ranking = pd.DataFrame(rows)
    ranking["abs_spearman"] = ranking["spearman"].abs()
    ranking = ranking.sort_values(["abs_spearman", "metric"], ascending=[False, True], na_position="last")
    ranking.insert(0, "rank", np.where(ranking["abs_spearman"].notna(),
                                       np.arange(1, len(ranking) + 1), np.nan))
    return {"ranking": ranking.drop(columns="abs_spearman").reset_index(drop=True),
            "correlations": pd.concat(correlations, ignore_index=True),
            "r2": pd.concat(r2, ignore_index=True), "selection": selection}


def interval(row, statistic: str = "spearman") -> tuple[float, float]:
    """A ranking row's 95% interval of `statistic`: BCa, else percentile (BCa is undefined when the bootstrap
    or jackknife degenerates, e.g. with ties in a handful of points)."""
    lo, hi = row[f"{statistic}_bca_lo"], row[f"{statistic}_bca_hi"]
    if np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi)
    return float(row.get(f"{statistic}_pct_lo", np.nan)), float(row.get(f"{statistic}_pct_hi", np.nan))


def _abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """The interval of |rho| implied by one of rho: a loss predicts accuracy through a negative rho."""
    if lo > 0:
        return lo, hi
    if hi < 0:
        return -hi, -lo
    return 0.0, max(-lo, hi)


def verdict(result: dict, level: float = LEVEL) -> dict:
    """The answer of a `rank_metrics` result, as numbers: the first-ranked metric (|Spearman|), its interval and
    whether it excludes zero, and whether the permutation test agrees (`significant`: with a handful of
    students a BCa interval can exclude zero while p is 0.1), whether its |rho| interval lies above the
    runner-up's (the intervals do not overlap: a conservative test of "ranks first"), its LOTO skill, and the
    within-teacher R^2 of the student's loss vs accuracy (PAPER_METRIC, else student_loss), the paper's
    figure, with how many teachers' lines slope down (lower loss, higher accuracy)."""
    ranking = result["ranking"]
    ranked = ranking[ranking["rank"].notna()]
    out: dict = {"top": None, "n_ranked": len(ranked)}
    if len(ranked):
        top = ranked.iloc[0]
        lo, hi = interval(top)
        out.update(top=top["metric"], n=int(top["n"]), spearman=float(top["spearman"]), lo=lo, hi=hi,
                   p=float(top["spearman_p"]), loto_skill=float(top["loto_skill"]),
                   loto_reason=top.get("loto_reason", ""), excludes_zero=bool(lo > 0 or hi < 0))
        out["significant"] = out["excludes_zero"] and out["p"] < 1 - level
        if len(ranked) > 1:
            runner = ranked.iloc[1]
            r_lo, r_hi = interval(runner)
            separated = _abs_interval(lo, hi)[0] > _abs_interval(r_lo, r_hi)[1]
            out.update(runner_up=runner["metric"], runner_spearman=float(runner["spearman"]), runner_lo=r_lo,
                       runner_hi=r_hi, separated=bool(separated))
    r2 = result["r2"]
    metric = PAPER_METRIC if r2.loc[r2["metric"] == PAPER_METRIC, "r2"].notna().any() else "student_loss"
    within = r2[(r2["metric"] == metric) & r2["r2"].notna()]
    out.update(r2_metric=metric, r2_teachers=len(within), r2_of=int((r2["metric"] == metric).sum()),
               r2_median=float(within["r2"].median()) if len(within) else np.nan,
               r2_min=float(within["r2"].min()) if len(within) else np.nan,
               r2_max=float(within["r2"].max()) if len(within) else np.nan,
               r2_negative=int((within["slope"] < 0).sum()))
    return out
