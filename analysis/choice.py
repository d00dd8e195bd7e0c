"""Checkpoint choice without probes: rank a run's checkpoints (and a recipe's runs) by a loss, and measure what
choosing by the loss instead of by the probe costs.

Within a run: every evaluated checkpoint with both the loss and the target is a candidate; the loss picks the
lowest (ties: the later checkpoint), the probe the most accurate. Per run: the accuracy of each pick, the regret
(probe's best - the loss's pick, >= 0), the regret of taking the last checkpoint and of a random one (best - mean
of the candidates), and the rank agreement (Spearman of -loss and accuracy over the checkpoints: +1 when a lower
loss always means a higher accuracy). Across runs of one recipe (RECIPE: one curve at one budget; the runs differ by
seed, teacher share, teacher or learning rate), the same on their final checkpoints, with the Spearman's bootstrap
interval (analysis.correlate.correlation).

The verdict compares the regret with a random pick's (`relative`: 0 = as good as the probe, 1 = no better than
chance), its 95% bootstrap interval over runs (or recipes): the loss tracks accuracy when the interval lies below
TRACKS, does not when it lies above it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.collect import final_records
from analysis.correlate import correlation, interval
from analysis.resample import LEVEL, bootstrap_counts, percentile_interval

CRITERIA = {"train_loss": "losses.train", "heldout_loss": "losses.heldout"}   # --choose-by names
RECIPE = ("group", "budget")     # runs of one recipe: their final checkpoints are ranked against each other
TRACKS = 0.5                     # relative regret (regret / a random pick's) that separates the verdicts
MIN_UNITS = 3                    # runs (or recipes) a verdict needs: fewer leave no interval worth the name
N_BOOT = 1000


def criterion_column(by: str) -> str:
    """The loss column of a --choose-by name (CRITERIA) or of a column name given as such (`losses.*`)."""
    if by in CRITERIA:
        return CRITERIA[by]
    if by.startswith("losses."):
        return by
    raise ValueError(f"unknown criterion {by!r}: one of {', '.join(CRITERIA)} or a losses.* column")


def _spearman(groups: np.ndarray, x: np.ndarray, y: np.ndarray) -> pd.Series:
    """Spearman of x and y within each group (NaN below 3 points or for a constant one), all groups at once."""
    d = pd.DataFrame({"g": groups, "x": x, "y": y})
    by = d.groupby("g", sort=False)
    for c in ("x", "y"):
        d["r" + c] = by[c].rank()
        d["r" + c] -= d.groupby("g", sort=False)["r" + c].transform("mean")
    sums = d.assign(xy=d["rx"] * d["ry"], xx=d["rx"] ** 2, yy=d["ry"] ** 2).groupby("g", sort=False)[
        ["xy", "xx", "yy"]].sum()
    with np.errstate(all="ignore"):
        rho = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"])
    n = d.groupby("g", sort=False).size()
    return rho.where((n >= 3) & (sums["xx"] > 0) & (sums["yy"] > 0))


def _picks(rows: pd.DataFrame, unit: str, loss: str, target: str) -> pd.DataFrame:
    """Per unit: candidates, the loss's pick and the probe's, their accuracies and the regrets (vectorised)."""
    rows = rows.sort_values([unit, "checkpoint_step"], ascending=[True, False], kind="stable")   # ties: later
    by = rows.groupby(unit, sort=True)
    chosen, best = rows.loc[by[loss].idxmin()], rows.loc[by[target].idxmax()]
    out = pd.DataFrame({"n": by.size(), "chosen": chosen.set_index(unit)["checkpoint_step"],
                        "chosen_accuracy": chosen.set_index(unit)[target],
                        "best": best.set_index(unit)["checkpoint_step"], "best_accuracy": best.set_index(unit)[target],
                        "mean_accuracy": by[target].mean()})
    out["regret"] = out["best_accuracy"] - out["chosen_accuracy"]
    out["regret_random"] = out["best_accuracy"] - out["mean_accuracy"]
    out["picked_best"] = out["chosen_accuracy"] >= out["best_accuracy"]
    out["agreement"] = _spearman(rows[unit].to_numpy(), -rows[loss].to_numpy(float),
                                 rows[target].to_numpy(float)).reindex(out.index)
    return out


def within_runs(frame: pd.DataFrame, target: str, by: str = "train_loss") -> pd.DataFrame:
    """One row per run with 2+ evaluated checkpoints having the loss and the target: n_checkpoints, chosen_step /
    chosen_accuracy (lowest loss), best_step / best_accuracy (the probe's), last_step / last_accuracy, regret,
    regret_last, regret_random, picked_best, agreement (Spearman of -loss and accuracy; NaN below 3)."""
    loss = criterion_column(by)
    columns = ["run_key", "run_id", "group", "budget", "n_checkpoints", "chosen_step", "chosen_accuracy", "best_step",
               "best_accuracy", "last_step", "last_accuracy", "regret", "regret_last", "regret_random", "picked_best",
               "agreement"]
    if loss not in frame or target not in frame:
        return pd.DataFrame(columns=columns)
    rows = frame[frame[loss].notna() & frame[target].notna() & (frame["flops_total"] > 0)]
    rows = rows[rows.groupby("run_key")["checkpoint_step"].transform("nunique") >= 2]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = _picks(rows, "run_key", loss, target).rename(columns={"n": "n_checkpoints", "chosen": "chosen_step",
                                                                "best": "best_step"})
    last = final_records(rows).set_index("run_key")
    out["last_step"], out["last_accuracy"] = last["checkpoint_step"], last[target]
    out["regret_last"] = out["best_accuracy"] - out["last_accuracy"]
    info = rows.drop_duplicates("run_key").set_index("run_key")[["run_id", "group", "budget"]]
    return out.join(info).reset_index()[columns]


def across_runs(frame: pd.DataFrame, target: str, by: str = "train_loss", *, recipe=RECIPE, n_boot: int = N_BOOT,
                seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per recipe (`recipe` columns) with 2+ runs: their final checkpoints ranked by the loss. n_runs,
    chosen_run / chosen_accuracy, best_run / best_accuracy, regret, regret_random, picked_best, agreement
    (Spearman of -loss and accuracy over the runs) with its interval (agreement_lo/hi: BCa, else percentile;
    4+ runs) and permutation p."""
    loss = criterion_column(by)
    keys = [c for c in recipe if c in frame]
    columns = keys + ["n_runs", "chosen_run", "chosen_accuracy", "best_run", "best_accuracy", "regret",
                      "regret_random", "picked_best", "agreement", "agreement_lo", "agreement_hi", "p", "reason"]
    if loss not in frame or target not in frame:
        return pd.DataFrame(columns=columns)
    final = final_records(frame[frame["flops_total"] > 0])
    final = final[final[loss].notna() & final[target].notna()].copy()
    final["recipe"] = final[keys].astype(str).agg(" ".join, axis=1) if keys else ""
    final = final[final.groupby("recipe")["run_key"].transform("nunique") >= 2]
    if final.empty:
        return pd.DataFrame(columns=columns)
    picks = _picks(final, "recipe", loss, target)
    picked = dict(iter(final.groupby("recipe")))
    rows = []
    for k, (unit, p) in enumerate(picks.iterrows()):
        g = picked[unit]
        corr = correlation(-g[loss].to_numpy(float), g[target].to_numpy(float), n_boot=n_boot, n_perm=n_boot,
                           seed=seed + k, level=level).set_index("statistic").loc["spearman"]
        lo, hi = interval({f"spearman_{c}": corr[c] for c in ("bca_lo", "bca_hi", "pct_lo", "pct_hi")})
        rows.append({**g.iloc[0][keys].to_dict(), "n_runs": int(p["n"]),
                     "chosen_run": g.loc[g[loss].idxmin(), "run_id"], "chosen_accuracy": p["chosen_accuracy"],
                     "best_run": g.loc[g[target].idxmax(), "run_id"], "best_accuracy": p["best_accuracy"],
                     "regret": p["regret"], "regret_random": p["regret_random"], "picked_best": p["picked_best"],
                     "agreement": corr["estimate"], "agreement_lo": lo, "agreement_hi": hi, "p": corr["p_perm"],
                     "reason": corr["reason"]})
    return pd.DataFrame(rows, columns=columns).sort_values(keys, kind="stable", ignore_index=True)   # numeric budgets


def summary(rows: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Means over units (runs, or recipes) of `within_runs` / `across_runs` rows, with 95% bootstrap intervals over
    the units: regret, regret_random, regret_last (runs only), relative regret (regret / regret_random: a ratio of
    means), agreement; picked_best (units where the loss picked the probe's best); and the verdict (TRACKS):
    "tracks", "does not track", "cannot tell", "too few" (below MIN_UNITS units), "nothing to choose" (a random
    pick loses nothing) or "none"."""
    out = {"units": len(rows), "picked_best": int(rows["picked_best"].sum()) if len(rows) else 0, "verdict": "none"}
    if rows.empty:
        return out
    values = {c: rows[c].to_numpy(float) for c in ("regret", "regret_random", "regret_last", "agreement") if c in rows}
    counts = (bootstrap_counts(np.arange(len(rows)), n_boot, np.random.default_rng(seed)).astype(float)
              if n_boot else None)
    for name, v in values.items():
        ok = np.isfinite(v)
        out[name] = float(v[ok].mean()) if ok.any() else math.nan
        out[f"{name}_lo"] = out[f"{name}_hi"] = math.nan
        if counts is not None and ok.any():
            with np.errstate(all="ignore"):
                boot = (counts[:, ok] @ v[ok]) / counts[:, ok].sum(axis=1)
            out[f"{name}_lo"], out[f"{name}_hi"] = map(float, percentile_interval(boot, level))
    random = out["regret_random"]
    if not random > 1e-12:
        out["verdict"] = "nothing to choose"
        return out
    out["relative"] = out["regret"] / random
    lo = hi = out["relative"]
    if counts is not None:
        with np.errstate(all="ignore"):
            boot = (counts @ values["regret"]) / (counts @ values["regret_random"])
        lo, hi = map(float, percentile_interval(boot, level))
    out["relative_lo"], out["relative_hi"] = lo, hi
    out["verdict"] = ("too few" if len(rows) < MIN_UNITS else "tracks" if hi < TRACKS
                      else "does not track" if lo > TRACKS else "cannot tell")
    return out


@dataclass
class Choice:
    """Checkpoint choice by a loss: per run (`runs`: within_runs), per recipe (`recipes`: across_runs), and the
    summaries of each (`summary`)."""
    by: str
    loss: str
    target: str
    runs: pd.DataFrame
    recipes: pd.DataFrame
    run_summary: dict = field(default_factory=dict)
    recipe_summary: dict = field(default_factory=dict)


def choose(frame: pd.DataFrame, target: str, by: str = "train_loss", *, n_boot: int = N_BOOT, seed: int = 0,
           level: float = LEVEL) -> Choice:
    """Checkpoints and runs chosen by the loss `by` (CRITERIA or a losses.* column) against the probe's choice."""
    runs = within_runs(frame, target, by)
    recipes = across_runs(frame, target, by, n_boot=n_boot, seed=seed, level=level)
    return Choice(by, criterion_column(by), target, runs, recipes, summary(runs, n_boot=n_boot, seed=seed, level=level),
                  summary(recipes, n_boot=n_boot, seed=seed, level=level))


def _ci(s: dict, name: str, digits: int = 3) -> str:
    lo, hi = s.get(f"{name}_lo", math.nan), s.get(f"{name}_hi", math.nan)
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "[no interval]"


_VERDICT = {
    "tracks": "the loss tracks accuracy here: choosing by it is a usable substitute for the probe",
    "does not track": "the loss does not track accuracy here: choosing by it loses much of what the probe "
                      "finds, so choose with a probe",
    "cannot tell": "the study cannot tell whether the loss is a usable substitute for the probe (the interval of "
                   f"its relative regret straddles {TRACKS:g})",
    "nothing to choose": "the candidates do not differ in accuracy: there is nothing to choose",
    "too few": f"too few for a verdict (fewer than {MIN_UNITS})",
}


def choice_text(c: Choice) -> list[str]:
    """The choice in words: one paragraph for checkpoints within runs, one for runs within recipes."""
    lines = []
    for s, what, among in ((c.run_summary, "checkpoint of each run", "runs with 2+ evaluated checkpoints"),
                           (c.recipe_summary, "run of each recipe (curve x budget, final checkpoints)",
                            "recipes with 2+ runs")):
        if s["verdict"] == "none":
            lines.append(f"Choosing the {what} by `{c.loss}`: no {among} have both `{c.loss}` and the target.")
            continue
        text = (f"Choosing the {what} by `{c.loss}` over {s['units']} {among.split(' with')[0]}: it picks the "
                f"probe's best in {s['picked_best']} of {s['units']}; accuracy lost against choosing by probe "
                f"(regret) {s['regret']:.4f} {_ci(s, 'regret')} on average")
        if "regret_last" in s:
            text += f" (taking the last checkpoint loses {s['regret_last']:.4f} {_ci(s, 'regret_last')}"
            text += f", a random one {s['regret_random']:.4f})"
        else:
            text += f" (a random pick loses {s['regret_random']:.4f})"
        if np.isfinite(s.get("agreement", math.nan)):
            text += f"; rank agreement (Spearman of -loss and accuracy) {s['agreement']:+.2f} {_ci(s, 'agreement', 2)}"
        if "relative" in s:
            text += (f"; relative regret {s['relative']:.2f} [{s['relative_lo']:.2f}, {s['relative_hi']:.2f}] "
                     "(0: as good as the probe, 1: no better than a random pick)")
        lines.append(text + ". Verdict: " + _VERDICT[s["verdict"]] + ".")
    return lines
