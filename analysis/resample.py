"""Bootstrap helpers shared by fits, allocation and correlations, so every interval resamples the same way.

The unit of resampling is a run (a cluster of rows: a run's checkpoints are not independent), optionally
within strata (e.g. budgets: a resample keeps the study's design instead of dropping whole budgets).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

LEVEL = 0.95


def bootstrap_counts(units, n_boot: int, rng: np.random.Generator, strata=None) -> np.ndarray:
    """(n_boot, n_rows) how often each row is drawn: runs (`units`, one label per row) are drawn with
    replacement, within each stratum when `strata` is given; every row of a drawn run comes along."""
    units = np.asarray(units)
    keys, unit_of_row = np.unique(units, return_inverse=True)
    if strata is None:
        unit_strata = np.zeros(len(keys), dtype=int)
    else:
        strata = np.asarray(strata)
        first = np.zeros(len(keys), dtype=int)
        first[unit_of_row[::-1]] = np.arange(len(units))[::-1]    # a row of each unit
        _, unit_strata = np.unique(strata[first].astype(str), return_inverse=True)
    counts = np.zeros((n_boot, len(keys)), dtype=np.int32)
    for s in np.unique(unit_strata):
        members = np.flatnonzero(unit_strata == s)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        np.add.at(counts, (np.arange(n_boot)[:, None], members[draws]), 1)
    return counts[:, unit_of_row]


def percentile_interval(samples: np.ndarray, level: float = LEVEL, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval of bootstrap samples, ignoring failed (NaN) resamples."""
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN columns give NaN bounds
        lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=axis)
    return lo, hi


def one_blas_thread():
    """Context: BLAS on one thread. The analysis solves thousands of tiny problems; a threaded BLAS makes
    each L-BFGS-B iteration ~10x slower on a busy 2-core machine (thread hand-offs in 3x3 linear algebra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # threadpoolctl comes with scikit-learn; without it, run as configured
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
