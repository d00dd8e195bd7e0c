"""Is an accuracy-vs-compute fit identified by its data? Held-out extrapolation (the largest budget predicted from
the others), drop-one influence of each setting, and `FitDiagnostics`, which the report and the figures read (a
figure draws an identified fit only). The fits themselves: analysis.fits."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fits import ALPHA_MAX, MIN_DISTINCT, FitError, PowerLawFit, fit_error_vs_compute
from analysis.resample import percentile_interval

HOLDOUT_BOOT = 200                # resamples of the fit without the largest budget (FitDiagnostics)


def holdout_error(final: pd.DataFrame, target: str, *, x: str = "flops_total", budget: str = "budget",
                  n_boot: int = 0, seed: int = 0) -> dict:
    """Extrapolation check: fit on every budget but the largest, predict the largest budget's runs.
    Returns the held-out budget, its runs, and the mean absolute / signed error in accuracy; with n_boot, also the
    95% bootstrap interval of the predicted mean accuracy there (predicted_lo, predicted_hi)."""
    rows = final[final[target].notna()]
    budgets = np.sort(rows[budget].dropna().unique())
    out = {"heldout_budget": budgets[-1] if len(budgets) else math.nan, "n_train": 0, "n_heldout": 0,
           "mae": math.nan, "bias": math.nan, "reason": ""}
    if len(budgets) < MIN_DISTINCT + 1:
        out["reason"] = f"{len(budgets)} budget(s): need {MIN_DISTINCT + 1} ({MIN_DISTINCT} to fit, 1 to score)"
        return out
    train, test = rows[rows[budget] < budgets[-1]], rows[rows[budget] == budgets[-1]]
    try:
        fit = fit_error_vs_compute(train, target, x=x, n_boot=n_boot, seed=seed)
    except FitError as e:
        out["reason"] = str(e)
        return out
    at = test[x].to_numpy(dtype=float)
    predicted = 1.0 - fit.predict(at)
    diff = predicted - test[target].to_numpy(dtype=float)
    out.update(n_train=len(train), n_heldout=len(test), mae=float(np.abs(diff).mean()), bias=float(diff.mean()),
               predicted=float(predicted.mean()), observed=float(test[target].mean()))
    if fit.boot.size:
        lo, hi = percentile_interval((1.0 - fit.predict(at, fit.boot)).mean(axis=1), fit.level)
        out.update(predicted_lo=float(lo), predicted_hi=float(hi))
    return out


@dataclass
class FitDiagnostics:
    """Whether an accuracy-vs-compute fit is identified by its data, and the numbers that say so.

    `identified` needs all of: no exponent on its bound; a bootstrap; a fitted accuracy gain over the observed
    compute range whose 95% interval lies above zero (the curve rises beyond the noise: a flat line through
    noise, E ~ 0 and c ~ 0.02, fails here); a setting (a point of the figure: its seeds together) that can be
    left out, and none without which the refitted gain is less than half the full one or the exponent lands on a
    bound (the rise then rests on one point; each setting's shift of the predicted accuracy at the largest compute
    is reported: leaving out an end point shifts it by about the extrapolation error); and, where there are
    4+ budgets, the largest budget's mean predicted from the others within twice the prediction's 95% interval
    widened by the seed noise of that mean (2 seed spreads / sqrt(runs), added in quadrature; the fit's residual
    spread stands in for the seed spread without seeds). Twice, because bootstrapping within budgets of 2-3 seeds
    makes that interval narrow (a true law's largest budget of 2 seeds fell 1.6x outside it); once is a note.
    Figures draw identified fits only."""
    curve: str
    identified: bool = False
    reasons: list[str] = field(default_factory=list)            # why not identified
    short: list[str] = field(default_factory=list)              # the same in a few words (figure legends)
    notes: list[str] = field(default_factory=list)              # remarks that do not stop the fit being drawn
    gain: tuple[float, float, float] = (math.nan, math.nan, math.nan)   # accuracy gain over the compute range, lo, hi
    band_halfwidth: float = math.nan      # of the 95% band in accuracy at the largest observed compute
    seed_sd: float = math.nan             # seed-to-seed sd of one run's accuracy (analysis.replicates)
    residual_sd: float = math.nan         # sd of the fit's residuals, in accuracy
    holdout: dict = field(default_factory=dict)                 # holdout_error of the curve
    influence: pd.DataFrame = field(default_factory=pd.DataFrame)   # per setting left out: shift, c without it

    @property
    def max_shift(self) -> float:
        return float(self.influence["shift"].abs().max()) if len(self.influence) else math.nan

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def why(self) -> str:
        return "; ".join(self.short)

    def reject(self, short: str, reason: str) -> None:
        self.short.append(short)
        self.reasons.append(reason)


def _accuracy_at(fit: PowerLawFit, x: float, theta: np.ndarray | None = None) -> np.ndarray:
    return 1.0 - fit.predict([x], theta)[..., 0]


def drop_one_influence(fit: PowerLawFit, setting_of: dict) -> pd.DataFrame:
    """Refit without each setting (all runs of a point of the figure: `setting_of` maps a fitted point's unit,
    its run, to its setting's name) from the full-data optimum; the shift of the predicted accuracy at the
    largest observed compute and the exponent c without it. A setting whose removal leaves too few points or
    values to fit has NaN."""
    lx = np.log(fit.x / fit.ref)
    names = np.array([setting_of.get(u, str(u)) for u in fit.units])
    x_min, x_max = fit.x[:, 0].min(), fit.x[:, 0].max()
    at_max = float(_accuracy_at(fit, x_max))
    rows = []
    for name in dict.fromkeys(names):
        keep = names != name
        shift = c = gain = math.nan
        if keep.sum() > len(fit.theta) and all(len(np.unique(lx[keep, i])) >= MIN_DISTINCT for i in range(lx.shape[1])):
            theta = fit.refit(keep)
            shift = float(_accuracy_at(fit, x_max, theta[None])[0]) - at_max
            gain = float(_accuracy_at(fit, x_max, theta[None])[0] - _accuracy_at(fit, x_min, theta[None])[0])
            c = float(theta[2])
        rows.append({"setting": name, "runs": int((~keep).sum()), "shift": shift, "gain_without": gain, "c_without": c})
    return pd.DataFrame(rows, columns=["setting", "runs", "shift", "gain_without", "c_without"])


def diagnose(fit: PowerLawFit | FitError, rows: pd.DataFrame, target: str, *, curve: str = "",
             seed_sd: float = math.nan, setting_of: dict | None = None) -> FitDiagnostics:
    """FitDiagnostics of `fit`, the error-vs-compute fit of `rows` (one curve's final records). `setting_of`: run
    key -> setting name (default: each run is its own setting); `seed_sd`: the seed spread of one run."""
    out = FitDiagnostics(curve, seed_sd=seed_sd)
    if isinstance(fit, FitError):
        out.holdout = holdout_error(rows, target)
        out.reject("cannot be fitted", str(fit))
        return out
    if len(fit.inputs) != 1:
        raise ValueError("diagnose takes single-input (error vs compute) fits")
    x_min, x_max = fit.x[:, 0].min(), fit.x[:, 0].max()
    out.holdout = holdout_error(rows, target, n_boot=min(len(fit.boot), HOLDOUT_BOOT))
    out.residual_sd = float(np.std(fit.y - fit.predict(fit.x), ddof=0))
    noise = seed_sd if np.isfinite(seed_sd) else out.residual_sd
    gain = float(_accuracy_at(fit, x_max) - _accuracy_at(fit, x_min))
    out.influence = drop_one_influence(fit, setting_of or {})
    for note in fit.notes:
        if "at its bound" in note:
            out.reject("exponent on its bound", note)
    if fit.params["E"] < 1e-3 * fit.y.min():
        out.notes.append(f"E = {fit.params['E']:.2g} sits on its lower bound: the data show no asymptote, so the "
                         "curve describes the compute range observed and says nothing beyond it")
    if fit.boot.size:
        boot_gain = _accuracy_at(fit, x_max, fit.boot) - _accuracy_at(fit, x_min, fit.boot)
        lo, hi = percentile_interval(boot_gain, fit.level)
        out.gain = (gain, float(lo), float(hi))
        band = fit.band([x_max])
        out.band_halfwidth = float((band["hi"] - band["lo"]).iloc[0] / 2)
        if not lo > 0:
            out.reject("no gain beyond the noise", f"the fitted gain over the compute range, {gain:+.3f} "
                       f"[{lo:+.3f}, {hi:+.3f}], does not exclude zero: a curve through noise")
    else:
        out.gain = (gain, math.nan, math.nan)
        out.reject("no bootstrap", "no bootstrap: identification not checked")
    if not np.isfinite(out.max_shift):
        out.reject("too few compute values to check", "no setting can be left out and the rest still fitted "
                   "(too few compute values): the curve passes through its points, nothing checks it")
    else:
        on_bound = (out.influence["c_without"] <= 1e-6) | (out.influence["c_without"] >= ALPHA_MAX - 1e-6)
        deciding = out.influence[(out.influence["gain_without"] < gain / 2) | on_bound]
        if len(deciding):
            worst = deciding.loc[deciding["gain_without"].idxmin()]
            out.reject("one setting decides it", f"without {worst['setting']} the fitted gain over the compute range "
                       f"is {worst['gain_without']:+.3f} of {gain:+.3f} (c {worst['c_without']:.3g}): half the rise "
                       "or more rests on that one point")
    h = out.holdout
    if np.isfinite(h.get("predicted_lo", math.nan)):
        tolerance = math.hypot((h["predicted_hi"] - h["predicted_lo"]) / 2, 2 * noise / math.sqrt(h["n_heldout"]))
        h["tolerance"] = tolerance
        text = (f"the largest budget predicted from the others is off by {h['bias']:+.3f} (its 95% interval with the "
                f"seed noise of the observed mean: +-{tolerance:.3f})")
        if abs(h["bias"]) > 2 * tolerance:
            out.reject("largest budget mispredicted", text + ": the form does not extrapolate")
        elif abs(h["bias"]) > tolerance:   # the band of a fit bootstrapped within budgets of 2-3 seeds is narrow
            out.notes.append(text)
    out.identified = not out.reasons
    return out
