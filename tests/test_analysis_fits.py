"""analysis.fits: known laws + noise -> the true parameters lie in the bootstrap 95% intervals in most seeds."""
import numpy as np
import pandas as pd
import pytest

from analysis.diagnostics import holdout_error
from analysis.fits import FitError, fit_error_vs_compute, fit_power_law
from analysis.resample import bootstrap_counts
from analysis.synthetic import Chinchilla, Saturating

SEEDS = range(10)
LAW = Saturating(E=0.15, k=0.6, c=0.3)                       # error = E + k (C / 1e15)^-c
LD = Chinchilla(E=0.25, A=0.4, alpha=0.35, B=0.5, beta=0.3)   # error = E + A/N^alpha + B/D^beta (scaled units)


def _compute_points(seed, noise=0.03):
    rng = np.random.default_rng(seed)
    C = np.repeat(np.geomspace(1e14, 1e18, 8), 5)             # 8 budgets x 5 runs
    return C, LAW(C) * np.exp(noise * rng.standard_normal(len(C)))


def _covered(fit, truth: dict) -> np.ndarray:
    table = fit.intervals().set_index("param")
    values = np.array([truth[p] for p in table.index])
    return ((table["lo"] <= values) & (values <= table["hi"])).to_numpy()


def test_saturating_power_law_recovers_the_truth_within_its_intervals():
    truth = {"E": LAW.E, "k": LAW.k_natural, "c": LAW.c}
    wrong = {"E": LAW.E + 0.08, "k": LAW.k_natural, "c": LAW.c + 0.15}
    covered, excluded, c_hat = [], [], []
    for seed in SEEDS:
        C, y = _compute_points(seed)
        fit = fit_power_law(C, y, inputs=("C",), strata=C, n_boot=150, seed=seed)
        covered.append(_covered(fit, truth))
        excluded.append(~_covered(fit, wrong)[[0, 2]])
        c_hat.append(fit.params["c"])
    covered, excluded = np.array(covered), np.array(excluded)
    assert (covered.sum(axis=0) >= 8).all(), covered.sum(axis=0)       # E, k, c each covered in >= 8 of 10
    assert (excluded.sum(axis=0) >= 8).all(), excluded.sum(axis=0)     # ... and the intervals are not vacuous
    assert abs(np.median(c_hat) - LAW.c) < 0.03


def test_chinchilla_ld_recovers_the_truth_within_its_intervals():
    truth = LD.natural
    covered = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        N, D = np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e3, 1e5, 5))
        N, D = np.repeat(N.ravel(), 2), np.repeat(D.ravel(), 2)
        y = LD(N, D) * np.exp(0.02 * rng.standard_normal(len(N)))
        fit = fit_power_law(np.c_[N, D], y, inputs=("N", "D"), n_boot=80, seed=seed)
        assert fit.names == ("E", "A", "alpha", "B", "beta")
        covered.append(_covered(fit, truth))
    assert (np.array(covered).sum(axis=0) >= 8).all(), np.array(covered).sum(axis=0)


def test_prediction_band_inverse_and_residuals_agree_with_the_fit():
    C, y = _compute_points(0)
    fit = fit_power_law(C, y, inputs=("C",), strata=C, n_boot=60)
    x = np.geomspace(1e14, 1e19, 7)
    band = fit.band(x)
    assert (band["lo"] <= band["estimate"] + 1e-12).all() and (band["estimate"] <= band["hi"] + 1e-12).all()
    assert (band["hi"] - band["lo"]).iloc[-1] > (band["hi"] - band["lo"]).iloc[3]   # wider when extrapolating
    assert np.allclose(fit.inverse(fit.predict([3e16])[0]), 3e16, rtol=1e-6)
    assert fit.inverse(fit.params["E"] * 0.9) == np.inf                          # below the asymptote
    assert np.allclose(fit.residuals()["log_residual"], np.log(y) - np.log(fit.predict(C)))


def test_unfittable_inputs_raise_fit_error_with_a_reason():
    with pytest.raises(FitError, match="3 usable point"):
        fit_power_law([1, 2, 3], [0.5, 0.4, 0.3], n_boot=0)
    with pytest.raises(FitError, match="fewer than 3 distinct values"):
        fit_power_law([5.0, 6.0] * 4, [0.5, 0.4, 0.3, 0.5, 0.4, 0.3, 0.2, 0.1], n_boot=0)
    C, y = _compute_points(1)
    y[:2] = 0.0                                   # accuracy 1: no logarithm; dropped, and said so
    fit = fit_power_law(C, y, n_boot=0)
    assert "dropped 2 point(s)" in fit.notes[0] and len(fit.y) == len(C) - 2


def _frame(C, y, budgets):
    return pd.DataFrame({"flops_total": C, "acc": 1 - y, "run_key": [f"r{i}" for i in range(len(C))],
                         "budget": budgets})


def test_holdout_extrapolation_error_is_small_for_a_true_law():
    C, y = _compute_points(2, noise=0.01)
    out = holdout_error(_frame(C, y, C), "acc")
    assert out["reason"] == "" and out["n_heldout"] == 5 and out["heldout_budget"] == C.max()
    assert out["mae"] < 0.01
    first = C <= np.unique(C)[2]
    assert "3 budget(s): need 4" in holdout_error(_frame(C[first], y[first], C[first]), "acc")["reason"]


def test_fit_error_vs_compute_uses_one_minus_accuracy():
    C, y = _compute_points(3)
    fit = fit_error_vs_compute(_frame(C, y, C), "acc", n_boot=0)
    assert np.allclose(fit.y, y)
    assert fit.response == "error(acc)"


def test_bootstrap_counts_resample_runs_within_strata():
    units = np.array(["a", "a", "b", "c", "c", "d"])          # rows of 4 runs; a run's rows move together
    strata = np.array([1, 1, 1, 2, 2, 2])                     # runs a, b in stratum 1; c, d in 2
    counts = bootstrap_counts(units, 200, np.random.default_rng(0), strata)
    assert counts.shape == (200, 6)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 4]).all()
    assert (counts[:, 1] + counts[:, 2] == 2).all() and (counts[:, 4] + counts[:, 5] == 2).all()
