"""analysis.correlate: known monotone relation found, no relation not found, too few points never a number."""
import numpy as np
import pytest
from scipy import stats

from analysis.collect import load_study
from analysis.correlate import CANDIDATES, _kendall, correlation, rank_metrics
from analysis.synthetic import TARGET, SyntheticSpec, write_synthetic_study


def test_monotone_relation_is_found_with_intervals_and_small_p():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3, 30)
    y = np.exp(x) + 0.3 * rng.standard_normal(30)          # monotone, not linear
    out = correlation(x, y, n_boot=500, n_perm=500).set_index("statistic")
    assert (out["status"] == "ok").all() and (out["n"] == 30).all()
    assert out.at["spearman", "estimate"] > 0.95 and out.at["kendall", "estimate"] > 0.8
    for stat in ("spearman", "kendall", "pearson"):
        row = out.loc[stat]
        assert 0 < row["bca_lo"] <= row["estimate"] <= row["bca_hi"] <= 1
        assert 0 < row["pct_lo"] <= row["pct_hi"] <= 1
        assert row["p_perm"] == pytest.approx(1 / 501)     # no permutation reaches it
    assert out.at["spearman", "estimate"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out.at["pearson", "estimate"] == pytest.approx(stats.pearsonr(x, y).statistic)


def test_no_relation_gives_large_p_and_intervals_around_zero():
    large_p, covers_zero = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        out = correlation(rng.standard_normal(25), rng.standard_normal(25), n_boot=300, n_perm=300, seed=seed)
        spearman = out.set_index("statistic").loc["spearman"]
        large_p += spearman["p_perm"] > 0.05
        covers_zero += spearman["bca_lo"] < 0 < spearman["bca_hi"]
    assert large_p >= 8 and covers_zero >= 8


def test_exact_permutation_p_value_for_few_points():
    out = correlation([1, 2, 3, 4, 5], [2, 4, 5, 7, 9], n_boot=0, n_perm=1000).set_index("statistic")
    assert (out["p_method"] == "exact").all()
    assert out.at["spearman", "p_perm"] == pytest.approx(2 / 120)   # the identity and its reversal
    assert np.isnan(out.at["spearman", "bca_lo"])                     # no bootstrap asked


@pytest.mark.parametrize("x, y, status", [
    ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], "too few points"),
    ([1.0, np.nan, 3.0, 4.0, 5.0], [0.1, 0.2, 0.3, np.nan, 0.5], "too few points"),   # 3 complete pairs
    ([2.0] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "constant metric"),
    ([1.0, 2.0, 3.0, 4.0], [0.5] * 4, "constant accuracy"),
])
def test_too_few_points_or_constant_is_a_status_not_a_number(x, y, status):
    out = correlation(x, y, n_boot=100, n_perm=100)
    assert (out["status"] == status).all() and out["reason"].str.startswith(status).all()
    assert out[["estimate", "bca_lo", "bca_hi", "pct_lo", "pct_hi", "p_perm"]].isna().all().all()


@pytest.mark.parametrize("n", [12, 150])   # all-pairs path and scipy path
def test_kendall_tau_b_matches_scipy_with_ties(n):
    rng = np.random.default_rng(n)
    x, y = rng.integers(0, 5, size=(3, n)), rng.integers(0, 4, size=(3, n))
    expected = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(_kendall(x.astype(float), y.astype(float)), expected)


def test_bca_interval_agrees_with_scipy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(40)
    y = 0.6 * x + rng.standard_normal(40)
    ours = correlation(x, y, n_boot=4000, n_perm=0).set_index("statistic").loc["pearson"]
    ref = stats.bootstrap((x, y), lambda a, b, axis=-1: stats.pearsonr(a, b, axis=axis).statistic, paired=True,
                          n_resamples=4000, method="BCa", rng=np.random.default_rng(4)).confidence_interval
    assert ours["bca_lo"] == pytest.approx(ref.low, abs=0.04)
    assert ours["bca_hi"] == pytest.approx(ref.high, abs=0.04)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    spec = SyntheticSpec(budgets=(1000, 2000, 4000), shares=(0.1, 0.2, 0.4), seeds=2)   # 18 students, 4 checkpoints
    frame = load_study(write_synthetic_study(tmp_path_factory.mktemp("sel") / "s", spec, seed=2))
    return rank_metrics(frame, TARGET, n_boot=200, n_perm=200)


def test_rank_metrics_puts_the_known_predictor_first(ranked):
    ranking = ranked["ranking"].set_index("metric")
    assert list(ranking.index) == list(ranked["ranking"]["metric"]) and set(ranking.index) == set(CANDIDATES)
    assert ranked["ranking"]["metric"].iloc[0] in ("student_loss", "short_run_loss", "student_train_loss")
    loss = ranking.loc["student_loss"]
    assert loss["n"] == 18 and loss["spearman"] < -0.8 and loss["spearman_bca_hi"] < 0 and loss["spearman_p"] < 0.01
    assert loss["median_within_teacher_r2"] > 0.8        # loss and accuracy move together along training
    assert loss["loto_skill"] > 0.5 and loss["n_teachers"] == 18
    assert abs(ranking.loc["teacher_rankme", "spearman"]) < 0.6   # unrelated by construction
    # teacher metrics come from the teacher's record at the step the student used
    sel = ranked["selection"]
    assert sel["teacher_probe"].notna().all() and sel["teacher_rankme"].notna().all()


def test_a_metric_no_run_reports_is_too_few_points(ranked, tmp_path):
    r2 = ranked["r2"]
    constant = r2[r2["metric"] == "teacher_rankme"]
    assert constant["r2"].isna().all() and (constant["reason"] == "constant metric").all()   # fixed per teacher
    frame = load_study(write_synthetic_study(tmp_path / "s", SyntheticSpec(budgets=(1000,), shares=(0.2,),
                                                                           seeds=1, checkpoints=(1.0,))))
    out = rank_metrics(frame.drop(columns=["metrics.lidar"]), TARGET, n_boot=50, n_perm=50)["ranking"]
    lidar = out.set_index("metric").loc["teacher_lidar"]
    assert lidar["status"] == "too few points" and np.isnan(lidar["spearman"]) and np.isnan(lidar["rank"])
    assert lidar["reason"] == "no values: no teacher record has metrics.lidar"
    with pytest.raises(ValueError, match="unknown metric"):
        rank_metrics(frame, TARGET, metrics=["nonsense"])
