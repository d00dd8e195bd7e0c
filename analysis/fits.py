"""Saturating power laws fitted the Chinchilla way (approach 3, Besiroglu et al. 2024), with bootstrap CIs.

One family covers both forms the study needs:
    y = E + sum_i A_i * x_i^-alpha_i
m = 1: error (1 - accuracy) or loss vs compute, E + k*C^-c; m = 2: L(N, D) = E + A/N^a + B/D^b.
The fit is in log space: log y against LSE(e, a_1 - alpha_1 log x_1, ...), with a Huber loss (delta 1e-3)
summed over points, minimised by L-BFGS-B from the best points of a grid of starts. Inputs are divided by
their geometric mean first, so the optimiser sees numbers near 1 whatever the units (FLOPs ~ 1e21).
Intervals bootstrap the runs (a run's checkpoints move together), each resample warm-started from the
full-data optimum: one L-BFGS run per resample instead of a grid. Whether a fit is identified by its data
(held-out budget, drop-one influence): analysis.diagnostics.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.resample import LEVEL, bootstrap_counts, one_blas_thread, percentile_interval

HUBER_DELTA = 1e-3
N_BOOT = 1000
N_STARTS = 6                      # L-BFGS runs from the best points of the start grid
_E_GRID = (0.02, 0.3, 0.7, 0.95)  # E as a fraction of the smallest observed y
_A_GRID = (-3.0, -1.0, 0.0, 1.5)  # log A (scaled inputs) relative to log median y
_ALPHA_GRID = (0.05, 0.2, 0.5, 1.0, 2.0)
ALPHA_MAX = 10.0
MIN_DISTINCT = 3                  # distinct values an input needs: with 2, E + A x^-alpha fits any alpha
# L-BFGS-B stops (ftol, gtol; objective in units of the mean |log residual|): strict for the fit itself,
# slightly looser for the warm-started resamples (~15% fewer evaluations; E and c interval ends moved < 1%
# on the benchmark table). Looser still (1e-8, 1e-6) stops resamples early and visibly shrinks intervals.
FIT_TOL, BOOT_TOL = (1e-12, 1e-9), (1e-10, 1e-8)


class FitError(ValueError):
    """A fit that cannot be made (too few points, non-positive y, ...); the message says why."""


def _names(m: int) -> tuple[str, ...]:
    if m == 1:
        return ("E", "k", "c")
    if m == 2:
        return ("E", "A", "alpha", "B", "beta")
    raise ValueError(f"power laws of 1 or 2 inputs are supported, got {m}")


def _terms(theta: np.ndarray, lx: np.ndarray) -> np.ndarray:
    """(..., n, m+1) log of each additive term: e, a_i - alpha_i * log x_i (theta (..., 1+2m), lx (n, m))."""
    e = theta[..., :1, None]                                      # (..., 1, 1)
    a, alpha = theta[..., 1::2], theta[..., 2::2]                 # (..., m)
    power = a[..., None, :] - alpha[..., None, :] * lx            # (..., n, m)
    return np.concatenate([np.broadcast_to(e, power.shape[:-1] + (1,)), power], axis=-1)


def _log_predict(theta: np.ndarray, lx: np.ndarray) -> np.ndarray:
    t = _terms(theta, lx)
    top = t.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(t - top).sum(axis=-1, keepdims=True)))[..., 0]


def _huber(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals r and its derivative (quadratic within delta, linear outside)."""
    a = np.abs(r)
    small = a <= HUBER_DELTA
    return (np.where(small, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)),
            np.where(small, r, HUBER_DELTA * np.sign(r)))


def _objective(theta: np.ndarray, lxt: np.ndarray, ly: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted Huber loss of the log residuals and its gradient; lxt is log x transposed, (m, n).
    Scaled by 1/(delta * sum w) (the mean absolute log residual, for residuals above delta): this moves no
    optimum and keeps L-BFGS's tolerances in the units of the residuals. Written for speed: it runs ~100k
    times per report."""
    e, a, alpha = theta[0], theta[1::2], theta[2::2]
    power = a[:, None] - alpha[:, None] * lxt                      # (m, n) log of each power term
    top = np.maximum(e, power.max(axis=0))
    ex_e, ex = np.exp(e - top), np.exp(power - top)
    total = ex_e + ex.sum(axis=0)
    r = ly - top - np.log(total)
    scale = 1.0 / (HUBER_DELTA * w.sum())
    loss, dloss = _huber(r)
    psi = w * dloss * (scale / total)             # d loss / d r, over the softmax denominator
    g = np.empty_like(theta)
    g[0] = -(psi @ ex_e)
    g[1::2] = -(ex @ psi)
    g[2::2] = (ex * lxt) @ psi
    return float(w @ loss * scale), g


def _bounds(ly: np.ndarray, m: int) -> list[tuple[float, float]]:
    return [(ly.min() - 30.0, ly.max() + 5.0)] + [(-60.0, 60.0), (0.0, ALPHA_MAX)] * m


def _start_grid(ly: np.ndarray, m: int) -> np.ndarray:
    es = ly.min() + np.log(_E_GRID)
    pairs = [(np.median(ly) + da, alpha) for da in _A_GRID for alpha in _ALPHA_GRID]
    return np.array([[e, *itertools.chain(*combo)] for e in es for combo in itertools.product(pairs, repeat=m)])


def _lbfgs(theta0, lx, ly, w, bounds, tol=BOOT_TOL) -> tuple[np.ndarray, float, bool, str]:
    """One L-BFGS-B run: the optimum, its loss, whether the optimiser reports convergence, and its message."""
    res = minimize(_objective, theta0, args=(np.ascontiguousarray(lx.T), ly, w), jac=True, method="L-BFGS-B",
                   bounds=bounds, options={"maxiter": 1000, "ftol": tol[0], "gtol": tol[1]})
    return res.x, float(res.fun), bool(res.success), str(res.message)


def _fit_theta(lx: np.ndarray, ly: np.ndarray, w: np.ndarray,
               n_starts: int = N_STARTS) -> tuple[np.ndarray, float, bool, str]:
    """Best of L-BFGS-B runs started from the n_starts lowest-loss points of the start grid (with whether
    that run converged and the optimiser's message)."""
    m = lx.shape[1]
    grid = _start_grid(ly, m)
    grid_loss = (w * _huber(ly - _log_predict(grid, lx))[0]).sum(axis=-1)
    bounds = _bounds(ly, m)
    fits = [_lbfgs(grid[i], lx, ly, w, bounds, FIT_TOL) for i in np.argsort(grid_loss)[:n_starts]]
    return min(fits, key=lambda f: f[1])


@dataclass
class PowerLawFit:
    """A fitted y = E + sum_i A_i x_i^-alpha_i with its bootstrap. Parameters are in natural units
    (`params`); `theta`/`boot` are the internal log-space parameters on inputs divided by `ref`."""
    inputs: tuple[str, ...]          # names of the x columns, e.g. ("flops_total",)
    response: str                    # what y is, e.g. "error(probe.linear.time.motion.10)"
    ref: np.ndarray                  # (m,) input scale (geometric mean of the data)
    theta: np.ndarray                # (1+2m,) full-data optimum
    loss: float
    x: np.ndarray                    # (n, m) the fitted points
    y: np.ndarray                    # (n,)
    units: np.ndarray                # (n,) run of each point (the bootstrap unit)
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))   # (B, 1+2m) resample optima
    level: float = LEVEL
    notes: list[str] = field(default_factory=list)
    converged: bool = True           # the optimiser's own verdict on the full-data fit (L-BFGS-B success)
    message: str = ""                # its message
    boot_converged: float = math.nan   # fraction of the bootstrap resamples whose optimiser converged

    @property
    def names(self) -> tuple[str, ...]:
        return _names(len(self.inputs))

    def natural(self, theta: np.ndarray) -> np.ndarray:
        """Internal parameters (..., 1+2m) -> natural (E, A_1, alpha_1, ...): A_i = exp(a_i) * ref_i^alpha_i."""
        theta = np.asarray(theta, dtype=float)
        out = np.empty_like(theta)
        out[..., 0] = np.exp(theta[..., 0])
        out[..., 2::2] = theta[..., 2::2]
        out[..., 1::2] = np.exp(theta[..., 1::2] + theta[..., 2::2] * np.log(self.ref))
        return out

    @property
    def params(self) -> dict[str, float]:
        return dict(zip(self.names, self.natural(self.theta).tolist()))

    def _lx(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float).reshape(-1, len(self.inputs))
        return np.log(x / self.ref)

    def predict(self, x, theta: np.ndarray | None = None) -> np.ndarray:
        """y at inputs x ((n,) or (n, m)); with theta (B, 1+2m): (B, n)."""
        return np.exp(_log_predict(self.theta if theta is None else theta, self._lx(x)))

    def intervals(self) -> pd.DataFrame:
        """One row per parameter: estimate (unrounded), bootstrap percentile interval, bootstrap sd (natural
        units), whether the optimiser converged on the full data and the fraction of resamples it converged on."""
        est = self.natural(self.theta)
        if self.boot.size:
            nat = self.natural(self.boot)
            lo, hi = percentile_interval(nat, self.level)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sd = np.nanstd(nat, axis=0)
        else:
            lo = hi = sd = np.full(len(est), np.nan)
        return pd.DataFrame({"param": self.names, "estimate": est, "lo": lo, "hi": hi, "boot_sd": sd,
                             "level": self.level, "n_points": len(self.y), "n_boot": len(self.boot),
                             "converged": self.converged, "boot_converged": self.boot_converged})

    def band(self, x) -> pd.DataFrame:
        """Prediction and its bootstrap band at inputs x (columns: the inputs, estimate, lo, hi)."""
        x = np.asarray(x, dtype=float).reshape(-1, len(self.inputs))
        out = pd.DataFrame(x, columns=list(self.inputs))
        out["estimate"] = self.predict(x)
        if self.boot.size:
            out["lo"], out["hi"] = percentile_interval(self.predict(x, self.boot), self.level)
        else:
            out["lo"] = out["hi"] = np.nan
        return out

    def residuals(self) -> pd.DataFrame:
        """Log residuals log y - log y_hat of the fitted points."""
        out = pd.DataFrame(self.x, columns=list(self.inputs))
        out["y"], out["fitted"] = self.y, self.predict(self.x)
        out["log_residual"] = np.log(out["y"]) - np.log(out["fitted"])
        out["unit"] = self.units
        return out

    def refit(self, keep: np.ndarray) -> np.ndarray:
        """Internal parameters (like `theta`) refitted on the points `keep` only, started from the full-data
        optimum within the full data's bounds (analysis.diagnostics: drop-one influence)."""
        lx, ly = np.log(self.x / self.ref), np.log(self.y)
        return _lbfgs(self.theta, lx[keep], ly[keep], np.ones(int(keep.sum())), _bounds(ly, lx.shape[1]), FIT_TOL)[0]

    def inverse(self, y: float, theta: np.ndarray | None = None) -> np.ndarray:
        """Single-input fits: the x where the curve reaches y (inf when y <= E); per bootstrap theta if given."""
        if len(self.inputs) != 1:
            raise ValueError("inverse is defined for single-input fits")
        nat = self.natural(self.theta if theta is None else theta)
        E, k, c = nat[..., 0], nat[..., 1], nat[..., 2]
        with np.errstate(all="ignore"):
            x = ((y - E) / k) ** (-1.0 / c)
        return np.where((y > E) & (c > 0), x, np.inf)


def fit_power_law(x, y, *, inputs=("x",), response="y", units=None, strata=None, n_boot: int = N_BOOT,
                  seed: int = 0, level: float = LEVEL) -> PowerLawFit:
    """Fit y = E + sum A_i x_i^-alpha_i (x (n,) or (n, m)) and bootstrap it over `units` (default: each
    point is its own unit), resampled within `strata` when given. Raises FitError when it cannot fit."""
    with one_blas_thread():
        return _fit_power_law(x, y, inputs, response, units, strata, n_boot, seed, level)


def _fit_power_law(x, y, inputs, response, units, strata, n_boot, seed, level) -> PowerLawFit:
    x = np.asarray(x, dtype=float)
    x = x.reshape(len(x), -1)
    y = np.asarray(y, dtype=float)
    m = x.shape[1]
    if len(inputs) != m:
        raise ValueError(f"inputs names {inputs} do not match x with {m} column(s)")
    units = np.arange(len(y)) if units is None else np.asarray(units)
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
    notes = []
    bad = keep & ((y <= 0) | (x <= 0).any(axis=1))
    if bad.any():
        notes.append(f"dropped {int(bad.sum())} point(s) with y <= 0 or x <= 0 (no logarithm)")
        keep &= ~bad
    x, y, units = x[keep], y[keep], units[keep]
    strata = None if strata is None else np.asarray(strata)[keep]
    n_params = 1 + 2 * m
    if len(y) <= n_params:
        raise FitError(f"{response}: {len(y)} usable point(s) for {n_params} parameters")
    distinct = [len(np.unique(x[:, i])) for i in range(m)]
    if min(distinct) < MIN_DISTINCT:
        raise FitError(f"{response}: an input takes fewer than {MIN_DISTINCT} distinct values "
                       f"({dict(zip(inputs, distinct))}); E, A and alpha of a term are not identified")
    ref = np.exp(np.log(x).mean(axis=0))
    lx, ly = np.log(x / ref), np.log(y)
    theta, loss, converged, message = _fit_theta(lx, ly, np.ones(len(y)))
    names = _names(m)
    if not converged:
        notes.append(f"the optimiser did not converge ({message})")
    notes += [f"{names[2 + 2 * i]} = {theta[2 + 2 * i]:g} is at its bound: the data do not pin this form down"
              for i in range(m) if theta[2 + 2 * i] <= 1e-6 or theta[2 + 2 * i] >= ALPHA_MAX - 1e-6]
    fit = PowerLawFit(tuple(inputs), response, ref, theta, loss, x, y, units, level=level, notes=notes,
                      converged=converged, message=message)
    if n_boot:
        counts = bootstrap_counts(units, n_boot, np.random.default_rng(seed), strata)
        bounds = _bounds(ly, m)
        boot = np.full((n_boot, n_params), np.nan)
        ok = np.zeros(n_boot, dtype=bool)
        for b, w in enumerate(counts.astype(float)):
            drawn = w > 0                             # ~37% of points are not drawn: leave them out
            if all(len(np.unique(lx[drawn, i])) >= MIN_DISTINCT for i in range(m)):   # else: NaN, not a number
                boot[b], _, ok[b], _ = _lbfgs(theta, lx[drawn], ly[drawn], w[drawn], bounds)
        fit.boot = boot
        fitted = np.isfinite(boot).all(axis=1)
        fit.boot_converged = float(ok[fitted].mean()) if fitted.any() else math.nan
    return fit


def error_of(frame: pd.DataFrame, target: str) -> np.ndarray:
    """error = 1 - accuracy: the quantity that falls as a power law towards an irreducible E."""
    return 1.0 - frame[target].to_numpy(dtype=float)


def fit_error_vs_compute(final: pd.DataFrame, target: str, *, x: str = "flops_total", n_boot: int = N_BOOT,
                         seed: int = 0, strata: str | None = "budget") -> PowerLawFit:
    """E + k*C^-c for 1 - target against compute, one point per row, bootstrapped over runs within budgets."""
    rows = final[final[target].notna()]
    return fit_power_law(rows[x], error_of(rows, target), inputs=(x,), response=f"error({target})",
                         units=rows["run_key"], strata=_strata(rows, strata), n_boot=n_boot, seed=seed)


def fit_loss_vs_compute(final: pd.DataFrame, loss: str = "losses.heldout", *, x: str = "flops_total",
                        n_boot: int = N_BOOT, seed: int = 0, strata: str | None = "budget") -> PowerLawFit:
    """E + k*C^-c for a loss against compute (losses are positive and saturate like errors)."""
    rows = final[final[loss].notna()] if loss in final else final.iloc[:0]
    if rows.empty:
        raise FitError(f"{loss}: no values")
    return fit_power_law(rows[x], rows[loss], inputs=(x,), response=loss, units=rows["run_key"],
                         strata=_strata(rows, strata), n_boot=n_boot, seed=seed)


def fit_ld(frame: pd.DataFrame, y: str, n: str, d: str, *, error: bool = True, n_boot: int = N_BOOT,
           seed: int = 0) -> PowerLawFit:
    """L(N, D) = E + A/N^alpha + B/D^beta (y = 1 - frame[y] when error, else frame[y]); needs a grid: at
    least 2 values of each of N and D. Bootstrapped over runs (every checkpoint of a run moves together)."""
    missing = [c for c in (y, n, d) if c not in frame]
    if missing:
        raise FitError(f"L(N,D): column(s) {', '.join(missing)} absent")
    rows = frame[frame[[y, n, d]].notna().all(axis=1)]
    values = error_of(rows, y) if error else rows[y].to_numpy(dtype=float)
    return fit_power_law(rows[[n, d]].to_numpy(dtype=float), values, inputs=(n, d),
                         response=f"error({y})" if error else y, units=rows["run_key"], n_boot=n_boot, seed=seed)


def _strata(rows: pd.DataFrame, column: str | None):
    return rows[column].to_numpy() if column and column in rows and rows[column].notna().all() else None


def curve_fits(final: pd.DataFrame, target: str, *, by: str = "group", n_boot: int = N_BOOT,
               seed: int = 0) -> dict[str, PowerLawFit | FitError]:
    """Error-vs-compute fit per curve (group); a curve that cannot be fitted maps to its FitError."""
    out: dict[str, PowerLawFit | FitError] = {}
    for name, rows in final.groupby(by, sort=True):
        try:
            out[name] = fit_error_vs_compute(rows, target, n_boot=n_boot, seed=seed)
        except FitError as e:
            out[name] = e
    return out


def fit_table(fits: dict[str, PowerLawFit | FitError]) -> pd.DataFrame:
    """Tidy parameter table of several fits: curve, param, estimate, lo, hi, ...; failures as a reason row."""
    rows = []
    for name, fit in fits.items():
        if isinstance(fit, FitError):
            rows.append(pd.DataFrame({"curve": [name], "param": [None], "reason": [str(fit)]}))
        else:
            table = fit.intervals()
            table.insert(0, "curve", name)
            table["reason"] = "; ".join(fit.notes)
            rows.append(table)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["curve", "param", "reason"])
