"""The students' training losses in the evaluation record (losses.train / losses.train_early): the smoothing,
the early step, reading a log mid-write, an end-to-end micro run, and records written before the keys existed."""
import json
import math

import numpy as np
import pytest

from analysis.collect import load_study
from analysis.synthetic import SyntheticSpec, write_synthetic_study
from salt.eval.record import read_record, record_to_json
from salt.layout import RunLayout, read_metrics
from salt.losslog import EARLY_FRACTION, smoothed_loss, train_losses


def rows(losses, every=1):
    return [{"step": s, "loss": v} for s, v in zip(range(0, every * len(losses), every), losses)]


def test_smoothing_uses_only_steps_before_the_checkpoint_and_leans_on_the_recent_ones():
    log = rows([1.0] * 50 + [0.0] * 50)                      # the loss drops to 0 at step 50
    assert smoothed_loss(log, 50, tau=5) == pytest.approx(1.0)   # checkpoint 50 has seen steps 0..49 only
    after = smoothed_loss(log, 100, tau=5)
    assert 0 < after < math.exp(-50 / 5) * 1.01                  # weight of the old level: e^(-50/tau)
    assert smoothed_loss(log, 100, tau=1000) == pytest.approx(0.5, abs=0.02)   # a long time constant: the mean
    assert math.isnan(smoothed_loss(log, 0, tau=5))              # nothing logged before step 0
    noisy = rows(list(0.5 + 0.1 * np.random.default_rng(0).standard_normal(200)))
    assert abs(smoothed_loss(noisy, 200, tau=10) - 0.5) < abs(noisy[-1]["loss"] - 0.5) + 0.03


def test_train_early_is_the_smoothed_loss_at_a_fixed_fraction_and_needs_the_run_past_it():
    log = rows([2.0 - s / 100 for s in range(100)])
    early = round(EARLY_FRACTION * 100)
    assert set(train_losses(log, early - 1, 100)) == {"train"}
    at_end, later = train_losses(log, 100, 100), train_losses(log, 60, 100)
    assert at_end["train_early"] == later["train_early"] == pytest.approx(smoothed_loss(log, early, 5.0))
    assert at_end["train"] < later["train"] < at_end["train_early"]          # the loss falls along the run
    assert train_losses([], 100, 100) == {}                                   # no log: no keys, never NaN


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 0, "loss": 1.0}) + "\n" + json.dumps({"step": 2, "loss": 0.5}) + "\n"
                    + '{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(path)] == [0, 2]


def test_evaluate_run_records_the_logged_training_loss(micro_config):
    from salt.eval.evaluate import evaluate_run
    from salt.train.loop import run_dir_for, train
    from tests.test_evaluate import MICRO_PROTOCOL

    cfg = micro_config("teacher", "teacher", "train.log_every=1", steps=10)
    train(cfg)
    run = run_dir_for(cfg)
    log = read_metrics(RunLayout(run).metrics)
    record = evaluate_run(run, protocol=MICRO_PROTOCOL)
    assert record.losses["train"] == pytest.approx(train_losses(log, 10, 10)["train"])
    assert record.losses["train_early"] == pytest.approx(smoothed_loss(log, 1, 1.0)) == log[0]["loss"]
    assert record.losses["heldout"] > 0


def test_records_without_the_keys_load_and_get_them_from_the_log(tmp_path):
    study = write_synthetic_study(tmp_path / "s", SyntheticSpec(budgets=(1000,), shares=(0.2,), seeds=1,
                                                                checkpoints=(0.5, 1.0)))
    layout = RunLayout(study / "runs" / "salt-tiny-b1000-r0.2-s0")
    for path in layout.evals.glob("*.json"):          # an older record: held-out loss only
        data = record_to_json(read_record(path))
        data["losses"] = {"heldout": data["losses"]["heldout"]}
        path.write_text(json.dumps(data))
        assert set(read_record(path).losses) == {"heldout"}
    frame = load_study(study).set_index("run_id").loc["salt-tiny-b1000-r0.2-s0"]
    log = read_metrics(layout.metrics)
    for _, row in frame.iterrows():
        expected = train_losses(log, int(row["checkpoint_step"]), int(row["steps_total"]))
        assert row["losses.train"] == pytest.approx(expected["train"])
        assert row["losses.train_early"] == pytest.approx(expected["train_early"])
    layout.metrics.unlink()                            # no log either: the columns stay empty for that run
    frame = load_study(study).set_index("run_id").loc["salt-tiny-b1000-r0.2-s0"]
    assert frame["losses.train"].isna().all() and frame["losses.train_early"].isna().all()
