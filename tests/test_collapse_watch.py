"""The collapse alarm (salt.train.watch): RankMe of the encoder on fixed clips every train.watch_every steps, logged;
a run made to collapse (V-JEPA at a learning rate far too high) warns at the first watch after RankMe drops, a
healthy run never warns; collapse_stop stops before the step's checkpoint; the highest value survives a resume."""
import warnings

import pytest

from salt.checkpoint import load_checkpoint
from salt.layout import read_metrics
from salt.train.loop import run_dir_for, train
from salt.train.watch import CollapseError, CollapseWarning, CollapseWatch

WATCH = ["train.watch_every=3", "train.collapse_after=0"]   # no grace: micro runs drop at once


def _run(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    rankme = [(r["step"], r["rankme"]) for r in read_metrics(run_dir_for(cfg) / "metrics.jsonl") if "rankme" in r]
    return rankme, [w for w in caught if issubclass(w.category, CollapseWarning)]


def test_a_collapsing_run_warns_at_the_first_watch_after_the_drop_and_a_healthy_one_never(micro_config):
    healthy, quiet = _run(micro_config("vjepa", "healthy", *WATCH, steps=12))
    assert [s for s, _ in healthy] == [0, 3, 6, 9, 11] and not quiet   # every watch logged, even off log_every
    collapsing, alarms = _run(micro_config("vjepa", "collapse", *WATCH, "optim.lr=5e-2", steps=12))
    best, dropped = 0.0, None
    for step, value in collapsing:   # the first watch below 0.7 x the highest so far (the default fraction)
        best = max(best, value)
        if value < 0.7 * best:
            dropped = step
            break
    assert dropped is not None, collapsing
    assert len(alarms) == 1 and f"step {dropped}:" in str(alarms[0].message)   # once, at the first low watch
    assert collapsing[0][1] == pytest.approx(healthy[0][1])   # same start: the watch changes nothing trained


def test_collapse_stop_ends_the_run_before_that_steps_checkpoint(micro_config):
    cfg = micro_config("vjepa", "stop", *WATCH, "optim.lr=5e-2", "train.collapse_stop=true", "train.checkpoint_every=1",
                       steps=12)
    with pytest.raises(CollapseError, match="RankMe"):
        train(cfg)
    logged = read_metrics(run_dir_for(cfg) / "metrics.jsonl")
    assert load_checkpoint(run_dir_for(cfg))["step"] == logged[-1]["step"]   # the checkpoint before the alarm step


def test_the_rule_remembers_the_highest_value_across_a_resume():
    watch = CollapseWatch(clips=None, floor=1.0, fraction=0.5, stop=False, after=2)
    for step, value in enumerate([4.0, 6.0, 5.0]):
        watch.check(step, {"rankme": value})
    resumed = CollapseWatch(clips=None, floor=1.0, fraction=0.5, stop=False, after=2)
    resumed.load_state_dict(watch.state_dict())
    with pytest.warns(CollapseWarning, match="is 2.90 \\(highest so far 6.00"):
        resumed.check(3, {"rankme": 2.9})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.check(4, {"rankme": 2.5})   # still low: no second alarm
    assert watch.state_dict() == {"best": 6.0, "alarmed": False}


def test_watching_changes_nothing_the_run_trains(micro_config):
    import torch
    runs = [micro_config("vjepa", name, f"train.watch_every={every}", steps=5) for name, every in (("watched", 2), ("unwatched", 0))]
    for cfg in runs:
        train(cfg)
    on, off = (load_checkpoint(run_dir_for(cfg)) for cfg in runs)
    assert all(torch.equal(on["models"][m][k], v) for m in off["models"] for k, v in off["models"][m].items())
    assert torch.equal(on["rng"]["torch"], off["rng"]["torch"]) and "watch" in on and "watch" not in off


def test_a_drop_within_the_grace_period_waits_unless_it_is_below_the_floor():
    watch = CollapseWatch(clips=None, floor=1.0, fraction=0.7, stop=False, after=10)
    watch.check(0, {"rankme": 4.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watch.check(5, {"rankme": 1.5})   # low, but early: healthy runs dip here too
    with pytest.warns(CollapseWarning, match="step 6: .* is 0.90"):
        watch.check(6, {"rankme": 0.9})   # rank one: collapsed at any step
