"""Compute allocation: how to split a budget between teacher and student, and what SALT saves over V-JEPA.

Compute-optimal teacher share, per budget: accuracy is fitted as a quadratic in log(share) over the runs
of that budget (all seeds), and the share that maximises it (clipped to the shares tried; an edge when the
quadratic has no interior maximum) is the estimate. Its interval bootstraps the budget's runs (pairs,
with replacement) when some share has several runs (seeds), else the quadratic's residuals (leverage-
corrected; one run per share leaves nothing else to resample). Resampling within each share instead keeps
the design but shrinks the variance by (n-1)/n per share: with 3 seeds, 95% intervals covered the truth
81% of the time on synthetic data, against 91% for pairs within the budget. Fewer than 3 shares: the best
observed share, with no interval.

The candidate curve (SALT) and its reference (V-JEPA) are the study kind's (analysis.kinds); by default the
compute-allocation study's.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.collect import final_records, seed_mean
from analysis.fits import FitError, PowerLawFit
from analysis.kinds import COMPUTE_ALLOCATION
from analysis.replicates import Replicates, interval_text, replicate_means
from analysis.resample import LEVEL, bootstrap_counts, percentile_interval
from analysis.words import group_name


def share_column(frame: pd.DataFrame) -> str:
    """teacher_share (steps, from the labels) when the study set it, else the teacher's share of FLOPs."""
    if "teacher_share" in frame and pd.to_numeric(frame["teacher_share"], errors="coerce").notna().any():
        return "teacher_share"
    return "teacher_flops_share"


def pareto_frontier(final: pd.DataFrame, target: str, by: str = "group") -> pd.DataFrame:
    """Seed-averaged configurations with a `pareto` flag: no configuration of the same group reaches at
    least its accuracy with fewer total FLOPs."""
    configs = seed_mean(final[final[target].notna()], target).sort_values([by, "flops_total", "accuracy"],
                                                                           ascending=[True, True, False])
    best_before = configs.groupby(by)["accuracy"].transform(lambda a: a.cummax().shift(fill_value=-np.inf))
    configs["pareto"] = configs["accuracy"] > best_before
    return configs.reset_index(drop=True)


def _quadratic_argmax(beta: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """argmax over u in [lo, hi] of b0 + b1 u + b2 u^2, for beta (..., 3)."""
    b1, b2 = beta[..., 1], beta[..., 2]
    with np.errstate(all="ignore"):
        vertex = np.clip(-b1 / (2 * b2), lo, hi)
    edges = np.where(b1 * (hi - lo) + b2 * (hi * hi - lo * lo) > 0, hi, lo)   # value(hi) > value(lo)
    return np.where(np.isnan(b2), np.nan, np.where(b2 < 0, vertex, edges))


def _weighted_lstsq(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least squares per row of weights w (B, n) -> (B, p); a singular resample gives NaN."""
    XtW = X.T[None] * w[:, None, :]
    A, b = XtW @ X, XtW @ y
    singular = np.linalg.matrix_rank(A) < X.shape[1]
    A[singular] = np.eye(X.shape[1])
    beta = np.linalg.solve(A, b[..., None])[..., 0]
    beta[singular] = np.nan
    return beta


def _share_optimum(share: np.ndarray, acc: np.ndarray, n_boot: int, rng: np.random.Generator,
                   level: float) -> dict:
    u = np.log(share)
    shares = np.unique(share)
    means = np.array([acc[share == s].mean() for s in shares])
    out = {"n_runs": len(acc), "n_shares": len(shares), "best_observed_share": shares[means.argmax()],
           "best_observed_accuracy": means.max(), "share_opt": math.nan, "lo": math.nan, "hi": math.nan,
           "accuracy_at_opt": math.nan, "interval": "", "reason": ""}
    if len(shares) < 3:
        out.update(share_opt=out["best_observed_share"], accuracy_at_opt=out["best_observed_accuracy"],
                   reason=f"{len(shares)} share(s): no quadratic, best observed, no interval")
        return out
    X = np.stack([np.ones_like(u), u, u * u], axis=1)
    beta = np.linalg.lstsq(X, acc, rcond=None)[0]
    lo_u, hi_u = u.min(), u.max()
    u_opt = float(_quadratic_argmax(beta, lo_u, hi_u))
    out.update(share_opt=math.exp(u_opt), accuracy_at_opt=float(beta @ [1, u_opt, u_opt ** 2]))
    if n_boot:
        n = len(acc)
        if n > len(shares):
            boot = _weighted_lstsq(X, acc, bootstrap_counts(np.arange(n), n_boot, rng).astype(float))
            out["interval"] = "runs resampled within budget"
        else:
            resid = (acc - X @ beta) * math.sqrt(n / (n - 3)) if n > 3 else np.zeros(n)   # leverage-corrected
            y_star = X @ beta + resid[rng.integers(0, n, size=(n_boot, n))]
            boot = np.linalg.lstsq(X, y_star.T, rcond=None)[0].T
            out["interval"] = "residual bootstrap (one run per share)"
        out["lo"], out["hi"] = np.exp(percentile_interval(_quadratic_argmax(boot, lo_u, hi_u), level))
    return out


def optimal_share(final: pd.DataFrame, target: str, *, group: str = COMPUTE_ALLOCATION.candidate,
                  share: str | None = None, budget: str = "budget", n_boot: int = 1000, seed: int = 0,
                  level: float = LEVEL) -> pd.DataFrame:
    """Per budget of `group`: the compute-optimal teacher share and its bootstrap interval (module doc)."""
    share = share or share_column(final)
    rows = final[(final["group"] == group) & final[target].notna()].copy()
    rows[share] = pd.to_numeric(rows[share], errors="coerce")
    rows = rows[rows[share] > 0]
    rng = np.random.default_rng(seed)
    out = [{budget: b, "share_column": share, **_share_optimum(r[share].to_numpy(float), r[target].to_numpy(float),
                                                               n_boot, rng, level)}
           for b, r in rows.groupby(budget, sort=True)]
    columns = [budget, "share_column", "n_runs", "n_shares", "share_opt", "lo", "hi", "accuracy_at_opt",
               "best_observed_share", "best_observed_accuracy", "interval", "reason"]
    return pd.DataFrame(out, columns=columns)


def flops_to_match(final: pd.DataFrame, target: str, fits: dict | None = None, *,
                   reference: str = COMPUTE_ALLOCATION.reference, candidate: str = COMPUTE_ALLOCATION.candidate) -> dict:
    """Total FLOPs `candidate` needs to reach `reference`'s best (seed-averaged) accuracy: from the raw
    configurations (the cheapest one that reaches it) and from candidate's fitted curve (inverted, with its
    bootstrap interval). savings = reference FLOPs / candidate FLOPs."""
    configs = seed_mean(final[final[target].notna()], target)
    ref, cand = configs[configs["group"] == reference], configs[configs["group"] == candidate]
    out = {"reference": reference, "candidate": candidate, "reason": ""}
    if ref.empty or cand.empty:
        out["reason"] = f"no {reference if ref.empty else candidate} runs with {target}"
        return out
    best = ref.loc[ref["accuracy"].idxmax()]
    out.update(reference_accuracy=best["accuracy"], reference_flops=best["flops_total"])
    reached = cand[cand["accuracy"] >= best["accuracy"]]
    out["raw_flops"] = reached["flops_total"].min() if len(reached) else math.nan
    out["raw_savings"] = best["flops_total"] / out["raw_flops"]
    if not len(reached):
        out["reason"] = f"no {candidate} configuration reaches {best['accuracy']:.4f}"
    fit = (fits or {}).get(candidate)
    if isinstance(fit, PowerLawFit):
        error = 1.0 - best["accuracy"]
        out["fit_flops"] = float(fit.inverse(error))
        if fit.boot.size:
            lo, hi = percentile_interval(fit.inverse(error, fit.boot), fit.level)
            out.update(fit_flops_lo=float(lo), fit_flops_hi=float(hi))
        out["fit_savings"] = best["flops_total"] / out["fit_flops"]
    elif isinstance(fit, FitError):
        out["reason"] = (out["reason"] + "; " if out["reason"] else "") + f"no {candidate} fit: {fit}"
    return out


def allocation_table(frame: pd.DataFrame, target: str, replicates: Replicates | None = None) -> pd.DataFrame:
    """The study's summary: accuracy (mean over seeds, with the interval of `replicates`, computed here when not
    given) vs total FLOPs per group, budget and teacher share, with `best_share` marking each group's best
    configuration in a budget and `pareto` the frontier. `frame` may hold every checkpoint; the final one of
    each run is used (one evaluation only)."""
    final = final_records(frame)
    evaluations = final["evaluation"].unique()
    if len(evaluations) > 1:
        raise ValueError(f"allocation_table needs one evaluation; the frame has {', '.join(map(str, evaluations))}")
    table = pareto_frontier(final, target)
    table["best_share"] = table["accuracy"] == table.groupby(["group", "budget"])["accuracy"].transform("max")
    rep = replicates or replicate_means(final, target)
    return table.merge(rep.settings[rep.keys + ["lo", "hi"]], on=rep.keys, how="left")


def share_comparisons(rep: Replicates, *, candidate: str = COMPUTE_ALLOCATION.candidate,
                      reference: str = COMPUTE_ALLOCATION.reference,
                      share: str = "teacher_share") -> pd.DataFrame:
    """Per budget and candidate share: the candidate's mean minus the reference's at that budget, and minus the
    budget's best candidate share, each with its interval and verdict (ahead / behind / not distinguishable);
    `vs_<reference>_family*`: against the reference with every share of the budget at once (Replicates.against)."""
    settings = rep.settings
    rows = []
    candidates = settings[(settings["group"] == candidate) & settings[share].notna()] if share in settings else settings[:0]
    for budget, members in candidates.groupby("budget", sort=True):
        refs = rep.matching(group=reference, budget=budget)
        missing = f"{'no' if not refs else 'several'} {reference} settings at this budget"
        best = members["accuracy"].idxmax()
        family = dict(zip(members.index, rep.against(list(members.index), refs[0]))) if len(refs) == 1 else {}
        for i, r in members.sort_values(share).iterrows():
            vs_ref = family.get(i, {})
            vs_best = rep.difference(i, best) if i != best else {}
            rows.append({"budget": budget, "share": r[share], "accuracy": r["accuracy"], "lo": r["lo"], "hi": r["hi"],
                         "n_seeds": r["n_seeds"], "best": i == best,
                         **{f"vs_{reference}_{k}": vs_ref.get(k, math.nan) for k in ("diff", "lo", "hi")},
                         f"vs_{reference}": vs_ref.get("verdict", missing),
                         **{f"vs_{reference}_family_{k}": vs_ref.get(f"family_{k}", math.nan) for k in ("lo", "hi")},
                         f"vs_{reference}_family": vs_ref.get("family_verdict", missing),
                         **{f"vs_best_{k}": vs_best.get(k, math.nan) for k in ("diff", "lo", "hi")},
                         "vs_best": vs_best.get("verdict", "best" if i == best else "")})
    return pd.DataFrame(rows)


def allocation_verdict(rep: Replicates, *, candidate: str = COMPUTE_ALLOCATION.candidate,
                       reference: str = COMPUTE_ALLOCATION.reference,
                       share: str = "teacher_share") -> list[str]:
    """The study's answer in words, per budget: the candidate's best share against the reference at the same
    budget (ahead, behind, or not distinguishable), and which other shares the study cannot tell from the best.
    The best of several shares is picked on the same runs, which flatters it, so with several shares the verdict
    is the family's (every share against the reference at once: Replicates.against) and the interval of the best
    share alone is shown beside it."""
    table = share_comparisons(rep, candidate=candidate, reference=reference, share=share)
    if table.empty:
        return [f"No {candidate} runs with a {share}: nothing to compare."]
    lines = []
    if not rep.has_intervals:
        lines.append("One seed per setting: no intervals, so no difference below can be told from seed noise "
                     "(run the study with --seeds 2 or more).")
    for budget, rows in table.groupby("budget", sort=True):
        best = rows[rows["best"]].iloc[0]
        name = f"{group_name(candidate)} (teacher share {best['share']:.3g})"
        reference_name = group_name(reference)
        acc = interval_text(best["accuracy"], best["lo"], best["hi"])
        several = len(rows) > 1
        verdict = best[f"vs_{reference}_family" if several else f"vs_{reference}"]
        if verdict in ("ahead", "behind", "not distinguishable"):
            ref_word = {"ahead": f"ahead of {reference_name}", "behind": f"behind {reference_name}",
                        "not distinguishable": f"not distinguishable from {reference_name}"}[verdict]
            alone = interval_text(best[f"vs_{reference}_diff"], best[f"vs_{reference}_lo"],
                                  best[f"vs_{reference}_hi"], signed=True)
            if several:
                family = interval_text(best[f"vs_{reference}_diff"], best[f"vs_{reference}_family_lo"],
                                       best[f"vs_{reference}_family_hi"], signed=True)
                text = (f"Budget {budget:g}: the best {name}, {acc}, is {ref_word} once the choice among {len(rows)} "
                        f"shares is allowed for (difference {family}, every share against {reference_name} at once; "
                        f"this share alone: {alone}, which the choice flatters).")
            else:
                text = f"Budget {budget:g}: the best {name}, {acc}, is {ref_word} (difference {alone})."
        elif verdict.startswith("no interval"):
            text = (f"Budget {budget:g}: the best {name}, {acc}, minus {reference_name}: "
                    f"{best[f'vs_{reference}_diff']:+.3f} (one seed: not judged).")
        else:
            text = f"Budget {budget:g}: the best {name}, {acc}; {verdict}."
        others = rows[~rows["best"]]
        if len(others) and rep.has_intervals:
            tied = others[others["vs_best"] == "not distinguishable"]["share"]
            text += (f" Shares {', '.join(f'{s:.3g}' for s in tied)} are not distinguishable from it." if len(tied)
                     else " Every other share is distinguishably worse.")
        lines.append(text)
    return lines

