"""Forecasts: the accuracy a run at a larger budget will reach, with a prediction interval, and a rollout check.

Per curve (a method and its teacher share, and any other design column but the budget: `curve_columns`), two
predictors of one new run's accuracy at a budget:
- direct: error = 1 - accuracy = E + k C^-c against total FLOPs (`fits.fit_error_vs_compute`: Huber in log space,
  bootstrap over runs within budgets), evaluated at the budget's FLOPs;
- two_step (after Bhagia et al. 2024): the student's loss = E + k C^-c against FLOPs (`fits.fit_loss_vs_compute`),
  then accuracy = a + b * loss, a least-squares line through every evaluated checkpoint of the curve's runs
  (the paper's within-teacher relation, R^2 0.95-0.98), bootstrapped over runs.
The prediction interval is for one new run: fit uncertainty (the bootstrap resamples of the fit) plus seed noise
(the fit's residual spread, t-distributed with its degrees of freedom), drawn together and cut at the level's
percentiles. The budget is in the study's budget units (its `budget` column: steps, or FLOPs for a study budgeted
in FLOPs); a curve's FLOPs at a budget are its FLOPs per budget unit (median over its runs) times the budget.

`rollout` refits each curve without its largest budget, forecasts that budget and scores the forecast against the
runs there: signed error of the mean and the fraction of runs inside the prediction interval, for both predictors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.collect import config_columns, final_records
from analysis.fits import MIN_DISTINCT, FitError, PowerLawFit, fit_error_vs_compute, fit_loss_vs_compute
from analysis.resample import bootstrap_counts, one_blas_thread, percentile_interval

LEVEL = 0.90                 # of the prediction interval
N_BOOT = 200                 # resamples of each forecast fit (--predict)
REPORT_BOOT = 50             # in the report (min with its --bootstrap): 4 fits per curve; coverage held at 20
NOISE_DRAWS = 50             # seed-noise draws per resample
LOSSES = ("losses.train", "losses.heldout")   # the two-step predictor's loss: the first one the curve has
ALONG_CURVE = ("budget", "teacher_steps", "student_steps")   # design columns that change along a curve
PREDICTORS = ("direct", "two_step")
RESIDUAL_P = 0.05            # residual spread trend against budget called out below this Spearman p


def curve_columns(final: pd.DataFrame) -> list[str]:
    """The design columns that name a curve: every config column but the ones that grow with the budget."""
    return [c for c in config_columns(final) if c not in ALONG_CURVE]


def curve_name(key: dict) -> str:
    """A curve in a few words: its group, then the design values that are set ("salt share=0.2 teacher=tiny")."""
    short = {"teacher_share": "share", "teacher_size": "teacher", "student_size": "student", "teacher_mask": "mask",
             "teacher_lr": "lr"}
    parts = [str(key.get("group", ""))]
    for column, label in short.items():
        value = key.get(column)
        if value is not None and value == value:
            parts.append(f"{label}={value:g}" if isinstance(value, float) else f"{label}={value}")
    return " ".join(p for p in parts if p)


def as_budget(value: float) -> float | int:
    """A budget as the study writes it: an int when it is a whole number (steps), else the float (FLOPs)."""
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value


def flops_at(rows: pd.DataFrame, budget: float) -> float:
    """The curve's total FLOPs at `budget`: its FLOPs per budget unit (median over its runs) times the budget."""
    ratio = (rows["flops_total"].astype(float) / rows["budget"].astype(float)).median()
    return float(ratio * budget)


def loss_column(rows: pd.DataFrame) -> str | None:
    """The loss the two-step predictor uses: the first of LOSSES with a value on every final run, else None."""
    for column in LOSSES:
        if column in rows and rows[column].notna().all():
            return column
    return None


@dataclass
class Prediction:
    """One predictor's forecast of one curve: point, prediction interval, fit-only interval, and its fits."""
    predicted: float
    lo: float
    hi: float
    fit_lo: float
    fit_hi: float
    noise_sd: float              # sd of one run around the curve at the forecast budget, in accuracy
    params: list[dict] = field(default_factory=list)        # stage, param, estimate (unrounded), converged
    residuals: list[dict] = field(default_factory=list)     # residual spread against budget, per fitted stage
    converged: bool = True
    notes: list[str] = field(default_factory=list)


def _noise(rng: np.random.Generator, df: int, shape) -> np.ndarray:
    return rng.standard_t(df, size=shape) if df > 0 else np.full(shape, np.nan)


def _strata_of(final: pd.DataFrame) -> str | None:
    """Resample runs within budgets (the design kept) when every budget has 2+ runs; with one run at some budget
    a within-budget resample would redraw the same runs, so runs are drawn over the whole curve."""
    return "budget" if final.groupby("budget")["run_key"].nunique().min() >= 2 else None


def widen(boot: np.ndarray, center: float, final: pd.DataFrame, df: int, level: float) -> np.ndarray:
    """Bootstrap predictions spread out by sqrt(m/(m-1)) (m: runs per budget when resampled within budgets: a
    resample of m runs varies (m-1)/m as much as a new draw of them) and by t_df / z at the level (the percentile
    bootstrap is a z interval with an estimated spread; df: the fit's points - parameters), as
    analysis.replicates scales its deviations. Without it the 90% interval of the fitted mean at twice the largest
    budget covered the true mean in 58% of 100 simulated curves (4 budgets x 2 seeds)."""
    scale = 1.0
    if _strata_of(final):
        m = float(final.groupby("budget")["run_key"].nunique().median())
        scale *= math.sqrt(m / (m - 1))
    if df > 0:
        q = (1 + level) / 2
        scale *= stats.t.ppf(q, df) / stats.norm.ppf(q)
    return center + scale * (boot - center)


def _log_spread(fit: PowerLawFit) -> tuple[float, int]:
    """The fit's residual sd in log space with its degrees of freedom (points - parameters)."""
    df = len(fit.y) - len(fit.theta)
    r = fit.residuals()["log_residual"].to_numpy()
    return (math.sqrt(float(r @ r) / df) if df > 0 else math.nan), df


def residual_check(residual: np.ndarray, budget: np.ndarray, stage: str) -> dict:
    """Is the residual spread even along the budget? Spearman of |residual| against budget (with p), and the
    ratio of the residuals' rms at the upper half of the budgets to that at the lower half."""
    budget = np.asarray(budget, dtype=float)
    a = np.abs(np.asarray(residual, dtype=float))
    out = {"stage": stage, "n": len(a), "rms": float(np.sqrt(np.mean(a ** 2))) if len(a) else math.nan,
           "spread_rho": math.nan, "spread_p": math.nan, "spread_ratio": math.nan, "uneven": False}
    levels = np.unique(budget)
    if len(levels) >= MIN_DISTINCT and np.ptp(a) > 0:
        rho, p = stats.spearmanr(budget, a)
        upper = budget > np.median(levels)
        lower = budget < np.median(levels)
        ratio = math.sqrt(np.mean(a[upper] ** 2) / np.mean(a[lower] ** 2)) if upper.any() and lower.any() else math.nan
        out.update(spread_rho=float(rho), spread_p=float(p), spread_ratio=ratio, uneven=bool(p < RESIDUAL_P))
    return out


def _fit_params(fit: PowerLawFit, stage: str) -> list[dict]:
    return [{"stage": stage, "param": name, "estimate": value, "converged": fit.converged,
             "boot_converged": fit.boot_converged} for name, value in fit.params.items()]


def _summarise(draws: np.ndarray, fit_draws: np.ndarray, predicted: float, level: float, noise_sd: float,
               **parts) -> Prediction:
    lo, hi = percentile_interval(draws.ravel(), level)
    fit_lo, fit_hi = percentile_interval(fit_draws, level)
    return Prediction(predicted, float(lo), float(hi), float(fit_lo), float(fit_hi), noise_sd, **parts)


def direct(final: pd.DataFrame, target: str, flops: float, *, n_boot: int = N_BOOT, seed: int = 0,
           level: float = LEVEL) -> Prediction:
    """Accuracy of one new run at `flops` from the error-vs-compute fit of the curve's final records."""
    fit = fit_error_vs_compute(final, target, n_boot=n_boot, seed=seed, strata=_strata_of(final))
    sigma, df = _log_spread(fit)
    log_error = np.log(fit.predict([flops])[0])
    boot = np.log(fit.predict([flops], fit.boot)[:, 0]) if fit.boot.size else np.array([log_error])
    boot = widen(boot[np.isfinite(boot)], log_error, final, df, level)
    rng = np.random.default_rng(seed)
    draws = boot[:, None] + sigma * _noise(rng, df, (len(boot), NOISE_DRAWS))
    residuals = fit.residuals()
    check = residual_check(residuals["log_residual"], _budget_of(final, residuals["unit"]), "error vs compute")
    return _summarise(1 - np.exp(draws), 1 - np.exp(boot), float(1 - np.exp(log_error)), level,
                      float(np.exp(log_error) * sigma), params=_fit_params(fit, "error vs compute"),
                      residuals=[check], converged=fit.converged, notes=list(fit.notes))


def _budget_of(final: pd.DataFrame, units) -> np.ndarray:
    return final.drop_duplicates("run_key").set_index("run_key")["budget"].reindex(units).to_numpy(dtype=float)


def _line(counts: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares intercepts and slopes of y on x, one per row of weights `counts` (R, n)."""
    w = counts.astype(float)
    sw, sx, sy = w.sum(1), w @ x, w @ y
    sxx, sxy = w @ (x * x), w @ (x * y)
    with np.errstate(all="ignore"):
        slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    return (sy - slope * sx) / sw, slope


def two_step(final: pd.DataFrame, checkpoints: pd.DataFrame, target: str, flops: float, *, loss: str,
             n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Prediction:
    """Accuracy of one new run at `flops` through the student's loss: loss vs compute on the final records,
    accuracy = a + b * loss on every evaluated checkpoint of the same runs (bootstrapped over runs)."""
    fit = fit_loss_vs_compute(final, loss, n_boot=n_boot, seed=seed, strata=_strata_of(final))
    rows = checkpoints[checkpoints[loss].notna() & checkpoints[target].notna()]
    x, y = rows[loss].to_numpy(dtype=float), rows[target].to_numpy(dtype=float)
    if len(rows) < 3 or np.ptp(x) == 0:
        raise FitError(f"accuracy vs {loss}: {len(rows)} checkpoint(s) with both, or a constant loss")
    a, b = _line(np.ones((1, len(x))), x, y)
    line_df = len(x) - 2
    line_sd = math.sqrt(float(((y - a[0] - b[0] * x) ** 2).sum()) / line_df) if line_df > 0 else math.nan
    sigma, df = _log_spread(fit)
    rng = np.random.default_rng(seed)
    log_loss = math.log(fit.predict([flops])[0])
    log_boot = np.log(fit.predict([flops], fit.boot)[:, 0]) if fit.boot.size else np.array([log_loss])
    log_boot = widen(log_boot[np.isfinite(log_boot)], log_loss, final, df, level)
    counts = bootstrap_counts(rows["run_key"], len(log_boot), rng) if fit.boot.size else np.ones((1, len(x)))
    a_boot, b_boot = _line(counts, x, y)
    shape = (len(log_boot), NOISE_DRAWS)
    new_loss = np.exp(log_boot[:, None] + sigma * _noise(rng, df, shape))
    draws = a_boot[:, None] + b_boot[:, None] * new_loss + line_sd * _noise(rng, line_df, shape)
    fit_draws = a_boot + b_boot * np.exp(log_boot)
    predicted = float(a[0] + b[0] * math.exp(log_loss))
    noise_sd = float(math.hypot(b[0] * math.exp(log_loss) * sigma, line_sd))
    residuals = fit.residuals()
    checks = [residual_check(residuals["log_residual"], _budget_of(final, residuals["unit"]), "loss vs compute"),
              residual_check(y - a[0] - b[0] * x, rows["budget"].to_numpy(dtype=float), "accuracy vs loss")]
    line = [{"stage": "accuracy vs loss", "param": name, "estimate": float(v), "converged": True,
             "boot_converged": math.nan} for name, v in (("a", a[0]), ("b", b[0]), ("residual_sd", line_sd))]
    notes = list(fit.notes) + ([] if b[0] < 0 else [f"accuracy rises with {loss} (slope {b[0]:+.3g}): the loss "
                                                    "does not track accuracy on this curve"])
    return _summarise(np.clip(draws, 0, 1), np.clip(fit_draws, 0, 1), min(max(predicted, 0.0), 1.0), level,
                      noise_sd, params=_fit_params(fit, "loss vs compute") + line, residuals=checks,
                      converged=fit.converged, notes=notes)


@dataclass
class Forecast:
    """Tidy results of `forecast`: `table` (one row per curve x predictor), `params` (every fitted parameter,
    unrounded, with the optimiser's convergence) and `residuals` (the residual spread against budget)."""
    table: pd.DataFrame
    params: pd.DataFrame
    residuals: pd.DataFrame


def _final(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Final records of trained runs with the target, each with its curve's name (`curve`)."""
    final = final_records(frame[frame["flops_total"] > 0])
    final = final[final[target].notna()].copy()
    keys = curve_columns(final)
    final["curve"] = [curve_name(dict(zip(keys, values))) for values in final[keys].itertuples(index=False)]
    return final


def _curves(final: pd.DataFrame):
    keys = curve_columns(final)
    for values, rows in final.groupby(keys, dropna=False, sort=True):
        yield dict(zip(keys, values if isinstance(values, tuple) else (values,))), rows


def forecast(frame: pd.DataFrame, target: str, budget: float, *, n_boot: int = N_BOOT, seed: int = 0,
             level: float = LEVEL, loss: str | None = None) -> Forecast:
    """Predicted accuracy of one new run at `budget` (the study's budget units) per curve and predictor, with a
    `level` prediction interval. `frame`: every evaluated checkpoint of one evaluation and benchmark (the
    analysis's frame); curves are fitted on the final records of trained runs. `loss`: the two-step predictor's
    loss column (default: the first of LOSSES that the curve's final runs all have)."""
    budget = as_budget(budget)
    return _forecast(frame, target, lambda key, rows: budget, n_boot, seed, level, loss)


def _forecast(frame, target, budget_of, n_boot, seed, level, loss) -> Forecast:
    """forecast with a budget per curve (`budget_of(key, rows)`; the rollout's is each curve's largest)."""
    trained = frame[frame["flops_total"] > 0]
    final = _final(frame, target)
    rows_out, params, residuals = [], [], []
    with one_blas_thread():
        for key, rows in _curves(final):
            budget = budget_of(key, rows)
            if not np.isfinite(budget):
                continue
            name = rows["curve"].iloc[0]
            base = {**key, "curve": name, "budget": budget, "n_runs": len(rows), "n_budgets": rows["budget"].nunique(),
                    "largest_fitted": rows["budget"].max()}
            flops = flops_at(rows, budget)
            use = loss or loss_column(rows)
            for predictor in PREDICTORS:
                row = {**base, "predictor": predictor, "flops": flops, "loss": use if predictor == "two_step" else ""}
                try:
                    if predictor == "direct":
                        p = direct(rows, target, flops, n_boot=n_boot, seed=seed, level=level)
                    elif use is None:
                        raise FitError(f"no loss column ({' or '.join(LOSSES)}) on every run of the curve")
                    else:
                        checkpoints = trained[trained["run_key"].isin(rows["run_key"])]
                        p = two_step(rows, checkpoints, target, flops, loss=use, n_boot=n_boot, seed=seed,
                                     level=level)
                except FitError as e:
                    rows_out.append({**row, "reason": str(e)})
                    continue
                rows_out.append({**row, "predicted": p.predicted, "lo": p.lo, "hi": p.hi, "fit_lo": p.fit_lo,
                                 "fit_hi": p.fit_hi, "noise_sd": p.noise_sd, "level": level,
                                 "converged": p.converged, "residuals_uneven": any(r["uneven"] for r in p.residuals),
                                 "reason": "; ".join(p.notes)})
                params += [{"curve": name, "predictor": predictor, **r} for r in p.params]
                residuals += [{"curve": name, "predictor": predictor, **r} for r in p.residuals]
    columns = ["curve", "predictor", "budget", "flops", "predicted", "lo", "hi", "fit_lo", "fit_hi", "noise_sd",
               "level", "n_runs", "n_budgets", "largest_fitted", "loss", "converged", "residuals_uneven", "reason"]
    table = pd.DataFrame(rows_out)
    for c in columns:
        if c not in table:
            table[c] = np.nan
    return Forecast(table[columns + [c for c in table if c not in columns]], pd.DataFrame(params),
                    pd.DataFrame(residuals))


def rollout(frame: pd.DataFrame, target: str, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL,
            loss: str | None = None) -> pd.DataFrame:
    """Per curve with MIN_DISTINCT + 1 budgets or more and both predictors: fit without the largest budget,
    forecast it, and score the forecast on the runs there. Columns: the forecast's, plus observed (mean of the
    held-out runs), n_heldout, error (predicted - observed: signed), relative_error (error / observed),
    coverage (fraction of held-out runs inside the prediction interval), fit_covers_mean (the observed mean
    inside the fit-only interval). No curve has enough budgets: an empty frame."""
    final = _final(frame, target)
    budgets = final.groupby("curve")["budget"]
    largest = budgets.max()[budgets.nunique() >= MIN_DISTINCT + 1]
    if largest.empty:
        return pd.DataFrame(columns=["curve", "predictor", "budget", "observed", "predicted", "lo", "hi", "error",
                                     "coverage", "reason"])
    held = final[final["budget"] == final["curve"].map(largest)]
    out = _forecast(frame[~frame["run_key"].isin(held["run_key"])], target,
                    lambda key, rows: largest.get(rows["curve"].iloc[0], np.nan), n_boot, seed, level, loss).table
    out = out[out["curve"].isin(largest.index)].reset_index(drop=True)
    scored = []
    for _, row in out.iterrows():
        runs = held.loc[held["curve"] == row["curve"], target].to_numpy(dtype=float)
        observed = float(runs.mean())
        inside = (runs >= row["lo"]) & (runs <= row["hi"])
        scored.append({"observed": observed, "n_heldout": len(runs), "error": row["predicted"] - observed,
                       "relative_error": (row["predicted"] - observed) / observed,
                       "coverage": float(inside.mean()) if np.isfinite(row["lo"]) else math.nan,
                       "fit_covers_mean": bool(row["fit_lo"] <= observed <= row["fit_hi"])
                       if np.isfinite(row["fit_lo"]) else math.nan})
    return pd.concat([out, pd.DataFrame(scored, columns=["observed", "n_heldout", "error", "relative_error",
                                                         "coverage", "fit_covers_mean"])], axis=1)


def rollout_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per predictor over the curves rolled out: curves, mean signed and absolute error, held-out runs inside
    their prediction intervals (fraction of all of them)."""
    if table.empty or "error" not in table:
        return pd.DataFrame(columns=["predictor", "curves", "mean_error", "mean_abs_error", "coverage"])
    t = table[table["error"].notna()]
    rows = []
    for predictor, g in t.groupby("predictor", sort=False):
        rows.append({"predictor": predictor, "curves": len(g), "mean_error": g["error"].mean(),
                     "mean_abs_error": g["error"].abs().mean(),
                     "coverage": float((g["coverage"] * g["n_heldout"]).sum() / g["n_heldout"].sum())})
    return pd.DataFrame(rows)
