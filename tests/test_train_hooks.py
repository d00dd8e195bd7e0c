"""Trainer hooks: callbacks after each logged step (and stopping from one), and a save asked for by a signal."""
import json
import os
import signal

import pytest
import torch

from salt.checkpoint import load_checkpoint
from salt.layout import RunLayout
from salt.train.loop import Trainer, run_dir_for, train
from salt.layout import read_metrics


class Stop(Exception):
    pass


def _assert_same_final_state(a_cfg, b_cfg):
    a, b = load_checkpoint(run_dir_for(a_cfg)), load_checkpoint(run_dir_for(b_cfg))
    assert a["step"] == b["step"]
    assert a["models"].keys() == b["models"].keys()
    for name in a["models"]:
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), f"{name}.{k} differs"
    ra = read_metrics(run_dir_for(a_cfg) / "metrics.jsonl")
    rb = read_metrics(run_dir_for(b_cfg) / "metrics.jsonl")
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    assert [r["loss"] for r in rb] == [r["loss"] for r in ra]
    assert rb[-1]["flops"] == pytest.approx(ra[-1]["flops"])


def test_callbacks_see_each_logged_record(micro_config):
    cfg = micro_config("teacher", "cb", "train.log_every=2", steps=5)
    seen = []
    summary = train(cfg, callbacks=[lambda trainer, step, record: seen.append((trainer.next_step, step, record))])
    assert [s for _, s, _ in seen] == [0, 2, 4]   # every log_every steps and the last
    assert [n for n, _, _ in seen] == [1, 3, 5]   # called after the step's state updates
    assert [r for _, _, r in seen] == read_metrics(run_dir_for(cfg) / "metrics.jsonl")
    assert summary["final_metrics"]["loss"] == seen[-1][2]["loss"]


def test_callback_that_raises_stops_and_resume_completes_identically(micro_config):
    straight = micro_config("vjepa", "straight", steps=6)
    train(straight)
    stopped = micro_config("vjepa", "stopped", steps=6)

    def prune_at_three(trainer, step, record):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train(stopped, callbacks=[prune_at_three])
    run = run_dir_for(stopped)
    assert not (run / "done.json").exists()
    assert [s for s, _ in RunLayout(run).checkpoints()] == [2]   # the periodic checkpoint; step 3 was not saved
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3]
    summary = train(stopped, resume=True)
    assert summary["steps"] == 6 and (run / "done.json").exists()
    _assert_same_final_state(straight, stopped)


def test_a_save_asked_for_by_a_signal_then_resume_is_exact(micro_config):
    """SIGUSR2 during step 2, under `save_on_signal` (what every study job and HPO trial arms: salt.study.job),
    only asks for a checkpoint: the step finishes, the state at step 3 (not a periodic checkpoint) is saved, fit
    stops with SavedOnRequest and the handler it replaced is back; resuming from that file completes exactly like
    the uninterrupted run."""
    from salt.train.loop import SavedOnRequest
    straight = micro_config("teacher", "straight", steps=6)
    train(straight)
    cfg = micro_config("teacher", "signalled", steps=6)
    trainer = Trainer(cfg)
    loss = trainer.objective.loss

    def loss_signalled_mid_step(batch, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return loss(batch, step)

    trainer.objective.loss = loss_signalled_mid_step
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with trainer.save_on_signal(signal.SIGUSR2) as replaced, pytest.raises(SavedOnRequest) as stopped:
            trainer.fit()
        assert replaced is signal.SIG_IGN and signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, previous)
    path = run_dir_for(cfg) / "checkpoints" / "step_00000003.pt"
    assert stopped.value.step == 3 and load_checkpoint(path)["step"] == 3
    assert [s for s, _ in RunLayout(run_dir_for(cfg)).checkpoints()] == [2, 3]
    assert [r["step"] for r in read_metrics(run_dir_for(cfg) / "metrics.jsonl")] == [0, 1, 2]
    resumed = Trainer(cfg, resume=True)
    assert resumed.next_step == 3
    resumed.fit()
    _assert_same_final_state(straight, cfg)
    a = json.loads((run_dir_for(straight) / "done.json").read_text())
    b = json.loads((run_dir_for(cfg) / "done.json").read_text())
    assert b["flops"] == pytest.approx(a["flops"])
