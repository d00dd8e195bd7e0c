"""Replicates: every setting of a study measured over several seeds, its mean with a bootstrap interval, and
whether two settings can be told apart.

A *setting* is a point of the design (`collect.config_columns`: group, budget, teacher share, sizes, ...); its
runs differ only by seed (`train.seed`: initialisation, data order and masks; a study's `--seeds K`). The
resampling unit is the run (its final record is its result; its checkpoints never enter), and seeds are nested
in settings: a resample draws, for each setting, as many runs as it has, each as the setting's mean plus a
run's deviation from its own setting's mean, drawn from the deviations of every setting pooled. Why pooled: with
2 seeds a setting alone has 2 runs, and a bootstrap of 2 values makes their range the 95% interval, which covers
the mean half the time and calls two equal settings different a third of the time; the deviations of six
settings of 2 seeds carry 6 degrees of freedom. Deviations are scaled by sqrt(n/(n-1)) (a deviation from a mean
of n runs is that much smaller than a run's spread) and by t_df / z (the width of Student's t interval at the
pooled degrees of freedom; the percentile bootstrap alone is a z interval with an estimated spread: simulated
with 5 settings x 2 seeds of equal means, 95% intervals covered the mean 88% of the time and called two equal
settings different 12% of the time without this factor, 93% and 5% with it). This
assumes one seed-to-seed spread for every setting: `notes` says when a curve's spread is more than twice the
pooled one. One run per setting everywhere: no intervals (nothing says how much a seed moves a run).

Two settings are *distinguishable* when the 95% interval of the difference of their means (the same
resamples; settings are drawn independently) excludes zero; otherwise the study cannot tell them apart.

Picking the best of several settings and then comparing it alone flatters it: in 1,000 simulated studies of four
equal teacher shares and an equal V-JEPA (2 seeds, seed sd 0.06), the best share alone was called ahead of
V-JEPA in 6.5% (a one-sided call of a 95% interval should be 2.5%), and with every share at once in 2.8%
(`python benchmarks/verdict_calibration.py`).
`Replicates.against` compares several settings with one reference at once: simultaneous intervals from the
bootstrap distribution of the largest standardised deviation over the family (Dunnett's max-|t| idea, with the
reference's shared resample giving the correlation), so that every statement about any member, the best
included, holds at 95% together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.collect import config_columns, seed_mean
from analysis.kinds import TEACHER_MASKS
from analysis.resample import LEVEL, percentile_interval

N_BOOT = 2000
SPREAD_RATIO = 2.0   # a curve whose seed spread exceeds the pooled one by this factor is named in `notes`


@dataclass
class Replicates:
    """Setting means with bootstrap intervals (`settings`: the keys, accuracy, accuracy_sd, n_seeds, flops_total,
    lo, hi) and the resampled means they come from (`boot`, (B, settings))."""
    keys: list[str]
    settings: pd.DataFrame
    boot: np.ndarray
    pooled_sd: float                 # seed-to-seed sd of one run's accuracy, pooled over settings (NaN: none)
    df: int                          # its degrees of freedom: sum over settings of (runs - 1)
    level: float = LEVEL
    notes: list[str] = field(default_factory=list)

    @property
    def has_intervals(self) -> bool:
        return self.boot.size > 0

    def matching(self, **values) -> list[int]:
        """Rows of the settings whose key columns equal `values` (the other keys free)."""
        mask = np.ones(len(self.settings), dtype=bool)
        for key, value in values.items():
            mask &= (self.settings[key] == value).to_numpy()
        return [int(i) for i in np.flatnonzero(mask)]

    def difference(self, i: int, j: int) -> dict:
        """Mean of setting i minus that of setting j, its interval, and whether it excludes zero."""
        a, b = self.settings.iloc[i], self.settings.iloc[j]
        out = {"diff": float(a["accuracy"] - b["accuracy"]), "lo": math.nan, "hi": math.nan,
               "distinguishable": False, "verdict": "no interval (one seed per setting)"}
        if self.has_intervals:
            lo, hi = percentile_interval(self.boot[:, i] - self.boot[:, j], self.level)
            out.update(lo=float(lo), hi=float(hi), distinguishable=bool(lo > 0 or hi < 0))
            out["verdict"] = ("ahead" if lo > 0 else "behind" if hi < 0 else "not distinguishable")
        return out

    def against(self, candidates: list[int], reference: int) -> list[dict]:
        """Each candidate's mean minus the reference's, as `difference`, plus a simultaneous interval over the
        whole family (`family_lo`, `family_hi`, `family_verdict`): the differences +- the 95% quantile of the
        largest |resampled difference - observed| / sd over the candidates, times each one's sd. With one
        candidate it is that difference's symmetric interval."""
        out = [self.difference(i, reference) for i in candidates]
        for d in out:
            d.update(family_lo=math.nan, family_hi=math.nan, family_verdict=d["verdict"])
        if not self.has_intervals or not candidates:
            return out
        drawn = self.boot[:, candidates] - self.boot[:, [reference]]
        observed = np.array([d["diff"] for d in out])
        sd = np.nanstd(drawn, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            largest = np.nanmax(np.abs(drawn - observed) / np.where(sd > 0, sd, np.nan), axis=1)
        q = float(np.nanquantile(largest, self.level))
        for d, diff, s in zip(out, observed, sd):
            lo, hi = diff - q * s, diff + q * s
            d.update(family_lo=float(lo), family_hi=float(hi),
                     family_verdict="ahead" if lo > 0 else "behind" if hi < 0 else "not distinguishable")
        return out


def replicate_means(final: pd.DataFrame, target: str, *, n_boot: int = N_BOOT, seed: int = 0,
                    level: float = LEVEL) -> Replicates:
    """Each setting's mean of `target` over its runs (seeds), with the pooled-deviation bootstrap of the module
    doc. `final`: one row per run (its final record)."""
    rows = final[final[target].notna()].reset_index(drop=True)
    keys = config_columns(rows)
    settings = seed_mean(rows, target)
    group = rows.groupby(keys, dropna=False, sort=True).ngroup().to_numpy()   # seed_mean's order
    n = settings["n_seeds"].to_numpy(dtype=int)
    means = settings["accuracy"].to_numpy(dtype=float)
    y = rows[target].to_numpy(dtype=float)
    deviation = y - means[group]
    replicated = n[group] > 1
    df = int((n - 1).sum())
    pooled_sd = math.sqrt(float((deviation ** 2).sum()) / df) if df else math.nan
    out = Replicates(keys, settings, np.empty((0, len(settings))), pooled_sd, df, level)
    if df:
        out.notes += _spread_notes(rows, deviation, n[group], pooled_sd)
    if df and n_boot:
        z = stats.norm.ppf(0.5 + level / 2)
        pool = (deviation[replicated] * np.sqrt(n[group][replicated] / (n[group][replicated] - 1))
                * stats.t.ppf(0.5 + level / 2, df) / z)
        rng = np.random.default_rng(seed)
        drawn = pool[rng.integers(0, len(pool), size=(n_boot, len(rows)))]        # a deviation for every run
        one_hot = np.zeros((len(rows), len(settings)))
        one_hot[np.arange(len(rows)), group] = 1.0
        out.boot = means + (drawn @ one_hot) / n
    lo, hi = (percentile_interval(out.boot, level) if out.has_intervals
              else (np.full(len(settings), np.nan), np.full(len(settings), np.nan)))
    out.settings = settings.assign(lo=lo, hi=hi)
    return out


def _spread_notes(rows: pd.DataFrame, deviation: np.ndarray, n: np.ndarray, pooled_sd: float) -> list[str]:
    """Curves (groups) whose own seed spread is more than SPREAD_RATIO times the pooled one (2+ df of their own)."""
    notes = []
    for group, idx in rows.groupby("group").indices.items():
        df = int(((n[idx] - 1) / n[idx]).sum().round())   # each run of a setting of n carries (n-1)/n df
        if df >= 2:
            sd = math.sqrt(float((deviation[idx] ** 2).sum()) / df)
            if sd > SPREAD_RATIO * pooled_sd:
                notes.append(f"the seed spread of {group} ({sd:.3f}) is more than {SPREAD_RATIO:g}x the pooled "
                             f"spread ({pooled_sd:.3f}): its intervals are too narrow, the others' too wide")
    return notes


def interval_text(mean: float, lo: float, hi: float, digits: int = 3, signed: bool = False) -> str:
    """"0.712 [0.690, 0.734]" ("+0.012 [-0.010, +0.034]" when signed), or the mean alone without an interval."""
    fmt = f"{'+' if signed else ''}.{digits}f"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


NAME_KEYS = ("budget", "teacher_share", "teacher_steps", "teacher_size", "student_size")


def setting_names(rows: pd.DataFrame) -> pd.Series:
    """Each row's setting in words, from the design columns that vary among `rows` ("budget 2000, teacher_share
    0.2"); the run key where none varies."""
    varying = [k for k in NAME_KEYS if k in rows and rows[k].nunique(dropna=True) > 1]
    if not varying:
        return rows["run_key"].astype(str)
    def name(row):
        return ", ".join(f"{k} {row[k]:.3g}" if isinstance(row[k], float) else f"{k} {row[k]}" for k in varying)
    return rows.apply(name, axis=1)


def tuned_comparison(rep: Replicates, factor: str, tuning: str, *, group: str = TEACHER_MASKS.candidate) -> list[str]:
    """In words: for each level of `factor` (e.g. teacher_mask), its best value of `tuning` (e.g. teacher_lr) by
    the mean of `group`'s settings, whether the tuning values of a level can be told apart, and the best levels
    against each other (difference of the two best settings with its interval). The best of a level is picked on
    the same runs, so its lead is slightly flattered; "not distinguishable" does not suffer from that."""
    settings = rep.settings
    if factor not in settings or tuning not in settings:
        return [f"No {factor} x {tuning} settings: nothing to compare."]
    mine = settings[(settings["group"] == group) & settings[factor].notna()]
    best: dict = {}
    lines = [] if rep.has_intervals else ["One seed per setting: no intervals, so no difference below can be told "
                                          "from seed noise (run the study with --seeds 2 or more)."]
    for level, rows in mine.groupby(factor, sort=True):
        i = int(rows["accuracy"].idxmax())
        best[level] = i
        r = settings.iloc[i]
        text = f"{factor} {level}: best {tuning} {r[tuning]:g}, {interval_text(r['accuracy'], r['lo'], r['hi'])}"
        others = [j for j in rows.index if j != i]
        if others and rep.has_intervals:
            verdicts = [rep.difference(j, i)["verdict"] for j in others]
            tied = [f"{settings.at[j, tuning]:g}" for j, v in zip(others, verdicts) if v == "not distinguishable"]
            text += (f" ({tuning} {', '.join(tied)} not distinguishable from it)" if tied
                     else f" (distinguishably better than the other {tuning})")
        lines.append(text + ".")
    levels = list(best)
    for a_index, a in enumerate(levels):
        for b in levels[a_index + 1:]:
            d = rep.difference(best[a], best[b])
            if rep.has_intervals:
                word = {"ahead": "ahead of", "behind": "behind", "not distinguishable": "not distinguishable from"}
                lines.append(f"{factor} {a} (at its best {tuning}) is {word[d['verdict']]} {b} (at its best): "
                             f"difference {interval_text(d['diff'], d['lo'], d['hi'], signed=True)}.")
            else:
                lines.append(f"{factor} {a} minus {b} (each at its best {tuning}): {d['diff']:+.3f} (one seed: not judged).")
    return lines
