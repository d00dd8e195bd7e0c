"""analysis.forecast: a known power law with noise -> the forecast's 90% prediction interval holds a new run at
twice the largest budget about 90% of the time, for both predictors; the rollout scores what it predicts; the
residual check sees a spread that grows with the budget; the report and the CLI show all of it."""
import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.fits import fit_error_vs_compute
from analysis.forecast import LEVEL, PREDICTORS, forecast, residual_check, rollout, rollout_summary
from analysis.synthetic import TARGET, Saturating, SyntheticSpec, power_law_runs, write_synthetic_study

LAW = Saturating(0.20, 0.45, 0.40)
FITTED, AHEAD = (1000, 2000, 4000, 8000), 16000


def test_the_prediction_interval_holds_a_new_run_at_twice_the_largest_budget_in_most_of_40_seeds():
    """4 budgets x 2 seeds fitted, one fresh run drawn at 16000 steps per seed (the seed's run there never enters the
    fit). Without the widening of the fit's resamples (forecast.widen) the fit's own interval covered the true
    mean in 58% of 100 seeds; with it, the prediction interval held the new run in 90% (direct) and 93% (two-step)
    of 100 seeds at 20 resamples each (measured when this was written)."""
    held = {p: [] for p in PREDICTORS}
    widths = {p: [] for p in PREDICTORS}
    errors = {p: [] for p in PREDICTORS}
    truth = 1 - LAW(AHEAD * 4.0e12)
    for seed in range(40):
        runs = power_law_runs(seed, budgets=FITTED + (AHEAD,), seeds=2)
        new = runs[(runs["budget"] == AHEAD) & (runs["checkpoint_step"] == AHEAD)][TARGET].iloc[0]
        table = forecast(runs[runs["budget"] < AHEAD], TARGET, AHEAD, n_boot=20, seed=seed).table
        for p, row in table.set_index("predictor").iterrows():
            assert row["flops"] == pytest.approx(AHEAD * 4.0e12)
            held[p].append(row["lo"] <= new <= row["hi"])
            widths[p].append(row["hi"] - row["lo"])
            errors[p].append(row["predicted"] - truth)
    for p in PREDICTORS:
        assert np.mean(held[p]) >= 0.85, (p, np.mean(held[p]))
        # not vacuous: a run's own 90% spread here is ~0.025 wide; the interval adds the fit's uncertainty
        assert np.median(widths[p]) < 0.1, (p, np.median(widths[p]))
        assert abs(np.mean(errors[p])) < 0.01, (p, np.mean(errors[p]))   # the point forecast is not biased


def test_a_wrong_form_is_caught_by_the_rollout():
    """Accuracy that stops improving after 4000 steps (a plateau no power law of the smaller budgets foresees):
    the rollout's signed error is large and positive and its interval misses the held-out runs; on the true law
    it is small and covers them."""
    good = power_law_runs(1, budgets=(1000, 2000, 4000, 8000, 16000), seeds=3, checkpoints=(1.0,))
    bad = good.copy()
    late = bad["budget"] == 16000
    bad.loc[late, TARGET] = bad.loc[late, TARGET] - 0.1          # the largest budget falls short of the law
    right = rollout(good, TARGET, n_boot=20)
    wrong = rollout(bad, TARGET, n_boot=20)
    assert set(right["predictor"]) == set(PREDICTORS) and (right["budget"] == 16000).all()
    observed = good.loc[good["budget"] == 16000, TARGET].mean()
    assert right["observed"].to_numpy() == pytest.approx(observed)
    assert right["error"].to_numpy() == pytest.approx((right["predicted"] - observed).to_numpy())
    direct = wrong.set_index("predictor").loc["direct"]
    assert direct["error"] > 0.07 and direct["coverage"] == 0
    assert right.set_index("predictor").loc["direct", "error"] == pytest.approx(0, abs=0.03)
    summary = rollout_summary(right).set_index("predictor")
    assert summary.loc["direct", "curves"] == 1 and 0 <= summary.loc["direct", "coverage"] <= 1


def test_parameters_are_unrounded_and_convergence_is_reported():
    runs = power_law_runs(2, budgets=FITTED, seeds=2, checkpoints=(1.0,))
    fc = forecast(runs, TARGET, AHEAD, n_boot=10)
    direct = fc.params[(fc.params["predictor"] == "direct")].set_index("param")["estimate"]
    fit = fit_error_vs_compute(runs, TARGET, n_boot=0)
    assert direct.to_dict() == fit.params                         # the optimiser's numbers, not rounded copies
    assert fit.converged and fc.params["converged"].all() and fc.table["converged"].all()
    assert set(fc.params["stage"]) == {"error vs compute", "loss vs compute", "accuracy vs loss"}
    line = fc.params[fc.params["stage"] == "accuracy vs loss"].set_index("param")["estimate"]
    assert line["b"] == pytest.approx(-1 / 0.8, rel=0.1)        # accuracy = 1 - (loss - 0.1) / 0.8


def test_the_residual_check_sees_a_spread_growing_with_the_budget():
    rng = np.random.default_rng(0)
    budget = np.repeat([1000, 2000, 4000, 8000, 16000, 32000], 6).astype(float)
    even = residual_check(0.03 * rng.standard_normal(len(budget)), budget, "s")
    growing = residual_check(0.03 * (budget / 1000) * rng.standard_normal(len(budget)), budget, "s")
    assert growing["uneven"] and growing["spread_rho"] > 0.5 and growing["spread_ratio"] > 3
    assert not even["uneven"] and 0.5 < even["spread_ratio"] < 2


def test_a_curve_without_enough_budgets_gets_a_reason_not_a_number():
    runs = power_law_runs(3, budgets=(1000, 2000), seeds=2)
    table = forecast(runs, TARGET, 4000, n_boot=5).table
    assert table["predicted"].isna().all() and table["reason"].str.contains("distinct").all()
    assert rollout(runs, TARGET, n_boot=5).empty


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    spec = SyntheticSpec(budgets=FITTED, shares=(0.2,), seeds=2, checkpoints=(0.5, 1.0))
    return write_synthetic_study(tmp_path_factory.mktemp("forecast") / "study", spec)


def test_the_report_shows_the_forecast_and_the_rollout_beside_the_fits(study, tmp_path):
    assert main([str(study), "--out", str(tmp_path), "--bootstrap", "10", "--no-figures"]) == 0
    report = (tmp_path / "report.md").read_text()
    fits = report.index("## Accuracy vs compute")
    forecast_at = report.index("### Forecast at budget 16000 (2 x the largest)")
    rolled = report.index("### Rollout")
    assert fits < forecast_at < rolled < report.index("## Held-out loss vs compute")
    assert f"of its runs fell inside the {LEVEL:.0%} prediction interval" in report
    assert "| salt share=0.2 teacher=tiny student=tiny | direct | 16000 |" in report
    table = pd.read_csv(tmp_path / "forecast.csv")
    assert set(table["predictor"]) == set(PREDICTORS)
    params = pd.read_csv(tmp_path / "forecast_params.csv")
    shown = params.loc[0, "estimate"]
    assert repr(float(shown)) in report                                    # unrounded in the report too
    rolled_out = pd.read_csv(tmp_path / "rollout.csv").set_index("curve")
    assert set(rolled_out.loc["salt share=0.2 teacher=tiny student=tiny", "budget"]) == {8000}   # its largest


def test_cli_predict_prints_both_predictors_and_the_rollout(study, capsys):
    assert main(["--predict", "16000", str(study), "--predict", "32000", "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "at budget 16000" in out and "at budget 32000" in out
    assert "two_step" in out and "losses.train" in out
    assert "direct: over" in out and "two_step: over" in out
    assert not (study / "analysis" / "report.md").exists()      # --predict prints; it writes no report
