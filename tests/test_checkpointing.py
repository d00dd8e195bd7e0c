"""Activation checkpointing (model.activation_checkpointing): blocks recompute their activations in backward;
the gradients are those of the plain step."""
from __future__ import annotations

import pytest
import torch

from salt.train.loop import Trainer


@pytest.mark.parametrize("stage, extra", [("teacher", []), ("vjepa", ["model.pos_embed=rope"])])
def test_checkpointed_step_has_the_same_gradients(micro_config, stage, extra):
    grads = []
    for name, flag in (("plain", "false"), ("checkpointed", "true")):
        trainer = Trainer(micro_config(stage, name, f"model.activation_checkpointing={flag}", *extra, steps=1))
        assert trainer.objective.encoder.grad_checkpointing is (flag == "true")
        trainer.optimizer.step = lambda: None   # keep step 0's gradient
        batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_sampler=[[(i, i) for i in range(8)]])))
        trainer.step(0, batch)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-6 * grads[0].abs().max())


def test_checkpointing_runs_only_when_gradients_are_recorded(micro_config, monkeypatch):
    """A frozen teacher's forward (no_grad) and evaluation never checkpoint: nothing to recompute."""
    trainer = Trainer(micro_config("teacher", "t", "model.activation_checkpointing=true", steps=1))
    encoder, g = trainer.objective.encoder, trainer.geometry
    calls, checkpoint = [], torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    video = torch.randn(2, g.channels, g.frames, g.size, g.size)
    with torch.no_grad():
        encoder(video)
    assert calls == []
    encoder(video).sum().backward()
    assert len(calls) == encoder.depth
