"""analysis.choice: checkpoints chosen by a loss against the probe's choice, on synthetic studies with a known
answer: where the loss tracks accuracy (its minimum is the probe's best checkpoint) the regret is ~0; where it
falls while accuracy peaks mid-run and then drops, the regret is large and the report says the loss does not track."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.__main__ import main
from analysis.choice import across_runs, choose, criterion_column, summary, within_runs
from analysis.collect import load_study
from analysis.synthetic import TARGET
from analysis.synthetic_choice import CheckpointSpec, write_checkpoint_study


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    return {tracks: write_checkpoint_study(root / f"tracks-{tracks}", CheckpointSpec(tracks=tracks, runs=8), seed=1)
            for tracks in (True, False)}


def test_a_loss_that_tracks_accuracy_chooses_like_the_probe(studies):
    c = choose(load_study(studies[True]), TARGET, "train_loss", n_boot=200)
    s = c.run_summary
    assert s["units"] == 8 and s["regret"] < 0.005 and s["regret_hi"] < 0.01      # regret near 0
    assert s["regret_last"] > 0.05                  # the last checkpoint is not the best: the choice matters here
    assert s["agreement"] > 0.9 and s["verdict"] == "tracks"
    recipe = c.recipes.iloc[0]
    assert recipe["n_runs"] == 8 and recipe["regret"] < 0.01 and recipe["agreement_lo"] > 0
    assert c.recipe_summary["verdict"] == "too few"     # one recipe: no verdict across recipes


def test_a_loss_that_does_not_track_costs_accuracy_and_the_report_says_so(studies, tmp_path, capsys):
    c = choose(load_study(studies[False]), TARGET, "heldout_loss", n_boot=200)
    s = c.run_summary
    assert c.loss == "losses.heldout"
    assert s["regret"] > 0.1 and s["regret_lo"] > 0.05 and s["picked_best"] == 0
    assert s["relative_lo"] > 1 and s["verdict"] == "does not track"       # worse than a random checkpoint
    assert (c.runs["chosen_step"] == c.runs["last_step"]).all()              # the falling loss takes the last one
    assert main([str(studies[False]), "--out", str(tmp_path), "--bootstrap", "50", "--no-figures"]) == 0
    report = (tmp_path / "report.md").read_text()
    section = report[report.index("## Checkpoint choice without probes: by `losses.train`"):]
    assert "Verdict: the loss does not track accuracy here" in section.split("\n")[1]
    per_run = pd.read_csv(tmp_path / "checkpoint_choice.csv")
    assert set(per_run["criterion"]) == {"train_loss", "heldout_loss"} and len(per_run) == 16
    capsys.readouterr()
    assert main([str(studies[False]), "--choose-by", "train_loss", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "Checkpoint choice by losses.train" in out and "does not track" in out and "vjepa-s0" in out


def _frame(rows):
    return pd.DataFrame([{"run_key": k, "run_id": k, "group": "g", "budget": 100, "evaluation": "fast",
                          "flops_total": 1.0, "checkpoint_step": step, "losses.train": loss, TARGET: acc}
                         for k, step, loss, acc in rows])


def test_picks_regrets_and_agreement_by_hand():
    frame = _frame([("a", 10, 0.5, 0.60), ("a", 20, 0.3, 0.70), ("a", 30, 0.3, 0.65),     # tie: the later one
                    ("b", 10, 0.9, 0.50), ("b", 20, 0.8, 0.55), ("b", 30, 0.7, 0.60),     # perfect agreement
                    ("c", 10, 1.0, 0.40)])                                                 # one checkpoint: no choice
    runs = within_runs(frame, TARGET).set_index("run_id")
    assert list(runs.index) == ["a", "b"]
    assert runs.loc["a", "chosen_step"] == 30 and runs.loc["a", "best_step"] == 20
    assert runs.loc["a", "regret"] == pytest.approx(0.05) and runs.loc["a", "regret_last"] == pytest.approx(0.05)
    assert runs.loc["a", "regret_random"] == pytest.approx(0.70 - 0.65)
    assert runs.loc["b", "regret"] == 0 and runs.loc["b", "agreement"] == pytest.approx(1.0)
    # -loss ranks 1, 2.5, 2.5 against accuracy ranks 1, 3, 2: scipy's Spearman, with ties averaged
    assert runs.loc["a", "agreement"] == pytest.approx(stats.spearmanr([-0.5, -0.3, -0.3], [0.6, 0.7, 0.65])[0])
    assert runs.loc["a", "agreement"] == pytest.approx(np.sqrt(3) / 2)
    recipes = across_runs(frame, TARGET, n_boot=0)
    assert recipes.loc[0, "n_runs"] == 3 and recipes.loc[0, "chosen_run"] == "a"          # final losses 0.3 < 0.7, 1.0
    assert recipes.loc[0, "best_run"] == "a" and recipes.loc[0, "regret"] == 0
    s = summary(runs.reset_index(), n_boot=0)
    assert s["regret"] == pytest.approx(0.025) and s["verdict"] == "too few"
    with pytest.raises(ValueError, match="train_loss"):
        criterion_column("accuracy")


def test_recipes_are_listed_by_budget_as_a_number():
    frame = pd.concat([_frame([(f"{k}{budget}", 10, loss, acc) for k, loss, acc in (("a", 0.5, 0.6), ("b", 0.4, 0.7))])
                       .assign(budget=budget) for budget in (2e12, 1e13, 6e11)])
    assert list(across_runs(frame, TARGET, n_boot=0)["budget"]) == [6e11, 2e12, 1e13]     # as strings: 1e13 first


def test_a_run_whose_checkpoints_do_not_differ_has_nothing_to_choose():
    frame = _frame([(k, step, 1.0 / step, 0.5) for k in "abc" for step in (10, 20)])
    assert summary(within_runs(frame, TARGET), n_boot=20)["verdict"] == "nothing to choose"
    assert np.isnan(within_runs(frame, TARGET)["agreement"]).all()
