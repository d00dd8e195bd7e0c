"""Masks that keep every token (mask.equalize=pad): rows of a multiblock batch are padded to the longest row with
validity masks instead of cut to the shortest, and padding is masked out of attention and the loss, so a sample's
loss does not depend on the batch it is in (nor on its size, nor on the number of processes)."""
from __future__ import annotations

import pytest
import torch

from salt.masks import MaskConfig, MaskPair, build_mask_generator
from salt.train.loop import Trainer, train


def test_padded_pairs_keep_every_token_of_every_sample():
    grid = (4, 8, 8)
    cut = build_mask_generator(MaskConfig(kind="multiblock"), grid)
    pad = build_mask_generator(MaskConfig(kind="multiblock", equalize="pad"), grid)
    targets = pad.sample_target_masks(64, torch.Generator().manual_seed(0))
    padded = pad(64, torch.Generator().manual_seed(0))
    for target, pair in zip(targets, padded):
        for row in range(64):
            context = pair.context[row][pair.context_valid[row]]
            chosen = pair.target[row][pair.target_valid[row]]
            assert torch.equal(chosen, target[row].nonzero().squeeze(1))          # every target token, ascending
            assert torch.equal(context, (~target[row]).nonzero().squeeze(1))      # every context token
        assert pair.target.shape[1] == int(target.sum(1).max())                   # padded to the longest row only
    kept_cut = sum(p.context.numel() + p.target.numel() for p in cut(64, torch.Generator().manual_seed(0)))
    kept_pad = sum(int(p.context_valid.sum() + p.target_valid.sum()) for p in padded)
    assert kept_pad == 2 * 64 * 4 * 8 * 8 > kept_cut                              # the cut drops tokens; pad does not


def _one_sample(pair: MaskPair, row: int) -> MaskPair:
    """Row `row` of a padded pair as a batch of one, without its padding."""
    return MaskPair(pair.context[row:row + 1, pair.context_valid[row]], pair.target[row:row + 1, pair.target_valid[row]])


@pytest.mark.parametrize("stage", ["teacher", "vjepa"])
def test_a_samples_loss_does_not_depend_on_its_batch(micro_config, stage):
    trainer = Trainer(micro_config(stage, "pad", "mask.kind=multiblock", "mask.equalize=pad",
                                   "mask.blocks=[{num_blocks: 2, spatial_scale: [0.2, 0.4], temporal_scale: [0.5, 1.0]}]"))
    objective = trainer.objective.eval()
    video = torch.stack([trainer.dataset[(i, i)]["video"] for i in range(16)])
    (pair,) = trainer.masks(16, torch.Generator().manual_seed(3))
    counts = pair.target_valid.sum(dim=1)
    assert counts.min() < counts.max()   # rows of different lengths: padding is really there
    with torch.no_grad():
        batch_loss = float(objective.loss({"video": video, "masks": [pair]}, 0)["loss"])
        alone = torch.tensor([float(objective.loss({"video": video[i:i + 1], "masks": [_one_sample(pair, i)]}, 0)["loss"])
                              for i in range(16)])
    # the batch loss is the token-weighted mean of the samples' own losses
    assert batch_loss == pytest.approx(float((alone * counts).sum() / counts.sum()), rel=1e-5)


def test_training_with_padded_masks_runs_and_resumes_with_both_pairs(micro_config):
    cfg = micro_config("vjepa", "pad-train", "mask.kind=multiblock", "mask.equalize=pad", "train.accumulate=2",
                       steps=3)
    summary = train(cfg)
    assert summary["steps"] == 3 and summary["flops"]["run"] > 0
