"""train.compile: the transformer blocks of the trained networks run through torch.compile (inductor on CPU);
the step computes what the eager step computes."""
from __future__ import annotations

import pytest
import torch

from salt.train.loop import Trainer


def test_compiled_step_matches_eager(micro_config):
    grads, losses = [], []
    for name, flag in (("eager", "false"), ("compiled", "true")):
        trainer = Trainer(micro_config("vjepa", name, f"train.compile={flag}", steps=1))
        trainer.optimizer.step = lambda: None   # keep step 0's gradient
        batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_sampler=[[(i, i) for i in range(8)]])))
        losses.append(trainer.step(0, batch)["loss"])
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
        # compiled in place: the state dict (and so every checkpoint) has the eager keys
        assert all("_orig_mod" not in key for key in trainer.objective.encoder.state_dict())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-5 * grads[0].abs().max())
