"""analysis.allocation: the compute-optimal share is recovered where it is known; frontier and savings."""
import numpy as np
import pandas as pd
import pytest

from analysis.allocation import allocation_table, flops_to_match, optimal_share, pareto_frontier
from analysis.collect import final_records, load_study
from analysis.fits import fit_error_vs_compute
from analysis.synthetic import TARGET, SyntheticSpec, write_synthetic_study

OPTIMUM = 0.2
SHARES = np.geomspace(0.05, 0.8, 7)


def _allocation_frame(seed: int, seeds_per_share: int = 3, noise: float = 0.006) -> pd.DataFrame:
    """SALT runs whose accuracy peaks at share OPTIMUM (quadratic in log share) at every budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget, base in ((1000, 0.55), (2000, 0.62), (4000, 0.68)):
        for share in SHARES:
            for s in range(seeds_per_share):
                acc = base - 0.03 * np.log(share / OPTIMUM) ** 2 + noise * rng.standard_normal()
                rows.append({"run_key": f"b{budget}-r{share:.3f}-s{s}", "group": "salt", "budget": budget,
                             "teacher_share": share, "acc": acc, "flops_total": budget * 1e12 * (1 - share / 2)})
    return pd.DataFrame(rows)


def test_compute_optimal_share_is_recovered_with_an_interval_covering_it():
    covered, errors = 0, []
    for seed in range(5):
        out = optimal_share(_allocation_frame(seed), "acc", n_boot=300, seed=seed)
        assert list(out["budget"]) == [1000, 2000, 4000]
        assert (out["interval"] == "runs resampled within budget").all()
        covered += int(((out["lo"] <= OPTIMUM) & (OPTIMUM <= out["hi"])).sum())
        errors += list(np.abs(np.log(out["share_opt"] / OPTIMUM)))
    assert covered >= 12, covered                        # of 15 intervals (5 seeds x 3 budgets)
    assert np.median(errors) < 0.1                       # within ~10% of the optimum


def test_one_run_per_share_uses_the_residual_bootstrap():
    out = optimal_share(_allocation_frame(0, seeds_per_share=1), "acc", n_boot=300)
    assert (out["interval"] == "residual bootstrap (one run per share)").all()
    assert (out["lo"] <= out["share_opt"]).all() and (out["share_opt"] <= out["hi"]).all()


def test_too_few_shares_give_the_best_observed_share_and_no_interval():
    frame = _allocation_frame(0)
    frame = frame[frame["teacher_share"].isin(SHARES[[2, 4]])]
    out = optimal_share(frame, "acc", n_boot=50)
    assert out["lo"].isna().all() and out["reason"].str.contains("2 share").all()
    assert (out["share_opt"] == out["best_observed_share"]).all()


def test_optimum_on_an_edge_when_accuracy_keeps_rising():
    frame = _allocation_frame(0)
    frame["acc"] = 0.5 + 0.05 * np.log(frame["teacher_share"])           # more teacher is always better
    out = optimal_share(frame, "acc", n_boot=50)
    assert np.allclose(out["share_opt"], SHARES.max())


def test_pareto_frontier_marks_configurations_nothing_cheaper_beats():
    frame = pd.DataFrame({"group": ["a"] * 4 + ["b"] * 2, "budget": [1, 2, 3, 4, 1, 2],
                          "flops_total": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0], "acc": [0.5, 0.7, 0.6, 0.8, 0.9, 0.1]})
    front = pareto_frontier(frame, "acc").set_index(["group", "budget"])["pareto"]
    assert front.to_dict() == {("a", 1): True, ("a", 2): True, ("a", 3): False, ("a", 4): True,
                               ("b", 1): True, ("b", 2): False}


def test_flops_to_match_from_raw_points_and_from_the_fit():
    frame = pd.DataFrame({"group": ["vjepa"] * 3 + ["salt"] * 3, "budget": [1, 2, 3] * 2,
                          "flops_total": [1e16, 2e16, 4e16, 0.5e16, 1e16, 2e16],
                          "acc": [0.50, 0.55, 0.60, 0.56, 0.61, 0.65], "run_key": list("abcdef")})
    out = flops_to_match(frame, "acc")
    assert out["reference_accuracy"] == 0.60 and out["reference_flops"] == 4e16
    assert out["raw_flops"] == 1e16 and out["raw_savings"] == pytest.approx(4.0)
    frame = pd.DataFrame({"group": "salt", "budget": np.repeat([1, 2, 3, 4], 2), "run_key": list("abcdefgh"),
                          "flops_total": np.repeat([1e15, 3e15, 1e16, 3e16], 2)})
    frame["acc"] = 1 - (0.2 + 0.5 * (frame["flops_total"] / 1e15) ** -0.3) * (1 + 0.01 * np.tile([1, -1], 4))
    ref = pd.DataFrame({"group": "vjepa", "budget": [9], "run_key": ["v"], "flops_total": [1e17], "acc": [0.6]})
    fit = fit_error_vs_compute(frame, "acc", n_boot=50)
    out = flops_to_match(pd.concat([frame, ref]), "acc", {"salt": fit})
    expected = 1e15 * ((0.4 - 0.2) / 0.5) ** (-1 / 0.3)                 # where 1 - acc = 0.4 on the true curve
    assert out["fit_flops"] == pytest.approx(expected, rel=0.2)
    assert out["fit_flops_lo"] <= out["fit_flops"] <= out["fit_flops_hi"]
    assert out["fit_savings"] == pytest.approx(1e17 / out["fit_flops"])


def test_flops_to_match_says_why_when_a_group_is_missing():
    frame = pd.DataFrame({"group": ["salt"], "budget": [1], "flops_total": [1.0], "acc": [0.5]})
    assert "no vjepa runs" in flops_to_match(frame, "acc")["reason"]


def test_known_optimum_in_a_synthetic_study_folder(tmp_path):
    """End to end through the files: equal step costs make the truth's optimal share exactly optimum_share."""
    spec = SyntheticSpec(budgets=(2000, 8000), shares=(0.05, 0.1, 0.2, 0.4, 0.8), seeds=3, checkpoints=(1.0,),
                         teacher_step_flops=4e12, student_step_flops=4e12, noise=0.01)
    frame = load_study(write_synthetic_study(tmp_path / "s", spec, seed=1))
    out = optimal_share(final_records(frame), TARGET, n_boot=300)
    assert out["share_column"].iloc[0] == "teacher_share"
    assert (np.abs(np.log(out["share_opt"] / spec.optimum_share)) < 0.35).all(), out
    assert ((out["lo"] <= spec.optimum_share) & (spec.optimum_share <= out["hi"])).sum() >= 1
    table = allocation_table(frame, TARGET)
    best = table[table["best_share"] & (table["group"] == "salt")]
    assert len(best) == len(spec.budgets)
