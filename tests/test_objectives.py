"""Objectives: pixel targets, the frozen teacher, latent targets, the EMA update, learning, plateau warning,
mask tokens. Models are micro-sized: clip 1 x 4 x 16 x 16, patch 4, tubelet 2 -> token grid (2, 4, 4)."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from salt.objectives import SaltObjective, pixel_targets
from salt.objectives.pixel import patchify
from tests.micro import GRID, PIXELS_PER_TOKEN, make_batch, make_objective, make_predictor, make_vit


def train_steps(objective, batch: dict, steps: int) -> list[float]:
    """Plain optimisation on one fixed batch, with the objective's hooks; returns the loss before each step."""
    optimizer = torch.optim.AdamW([p for m in objective.trainable().values() for p in m.parameters()], lr=1e-3)
    objective.train()
    losses = []
    for step in range(steps):
        out = objective.loss(batch, step)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        objective.after_step(step, {k: float(v.detach()) for k, v in out.items()})
        losses.append(float(out["loss"].detach()))
    return losses


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def token_index_video(channels: int = 1) -> torch.Tensor:
    """[1, C, 4, 16, 16]: every pixel of a tubelet holds that tubelet's token index t*H*W + h*W + w
    (plus 1000 * channel, so channels are told apart)."""
    index = torch.arange(32, dtype=torch.float32).reshape(GRID)
    pixels = index.repeat_interleave(2, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)
    return torch.stack([pixels + 1000 * c for c in range(channels)])[None]


# -- pixel targets -------------------------------------------------------------------------------------------

def test_patchify_token_order_known_answer():
    tokens = patchify(token_index_video(channels=3), tubelet=2, patch=4)
    assert tokens.shape == (1, 32, 32, 3)
    for c in range(3):
        expected = torch.arange(32, dtype=torch.float32)[:, None].expand(32, 32) + 1000 * c
        assert torch.equal(tokens[0, :, :, c], expected)


def test_patchify_order_matches_encoder_token_order():
    """Tokens of the encoder's own forward (blocks made identities, tubelet embedding = sum of its pixels)
    line up with patchify's rows, so a pixel target sits at the same index as the token that predicts it."""
    encoder = make_vit(depth=1)
    with torch.no_grad():
        encoder.patch_embed.weight.fill_(1.0)
        encoder.patch_embed.bias.zero_()
        for block in encoder.blocks:   # residual branches output zero -> the block passes tokens through
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
    video = torch.randn(2, 1, 4, 16, 16)
    tokens = encoder(video, layer=0) - encoder.positions.add(torch.zeros(2, 32, 64))   # minus sin-cos
    expected = patchify(video, tubelet=2, patch=4).sum(dim=(2, 3))
    torch.testing.assert_close(tokens[..., 0], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tokens[..., 17], expected, rtol=1e-5, atol=1e-4)


def test_normalized_pixel_targets_per_tubelet():
    video = torch.randn(2, 1, 4, 16, 16) * 3 + 2
    video[0, :, 0:2, 0:4, 0:4] = 7.0   # token 0 of clip 0: a constant tubelet
    targets = pixel_targets(video, tubelet=2, patch=4, normalize=True)
    assert targets.shape == (2, 32, PIXELS_PER_TOKEN)
    assert torch.isfinite(targets).all()
    assert torch.equal(targets[0, 0], torch.zeros(PIXELS_PER_TOKEN))
    rest = targets.reshape(-1, PIXELS_PER_TOKEN)[1:]
    assert rest.mean(dim=1).abs().max() < 1e-5
    # (x - mean) / (unbiased std + 1e-6): std is 1 / (1 + 1e-6 / std), a hair under 1
    std = rest.std(dim=1, unbiased=True)
    assert (std < 1).all() and (std > 1 - 1e-4).all()


def test_raw_pixel_targets_are_the_pixels():
    video = token_index_video()
    targets = pixel_targets(video, tubelet=2, patch=4, normalize=False)
    assert torch.equal(targets[0], torch.arange(32.0)[:, None].expand(32, PIXELS_PER_TOKEN))


def test_pixel_normalization_is_per_channel():
    video = torch.randn(2, 3, 4, 16, 16)
    video[:, 0] = video[:, 0] * 0.01
    video[:, 1] = video[:, 1] * 100 + 50
    targets = pixel_targets(video, tubelet=2, patch=4, normalize=True).reshape(2, 32, 32, 3)
    std = targets.std(dim=2, unbiased=True)
    mean = targets.mean(dim=2)
    assert (std - 1).abs().max() < 1e-3   # both the tiny- and the huge-scale channel end at std 1
    assert mean.abs().max() < 1e-4


# -- the frozen teacher --------------------------------------------------------------------------------------

def test_salt_teacher_stays_frozen_while_student_learns():
    torch.manual_seed(0)
    objective = make_objective("salt")
    teacher = objective.target_encoder
    teacher_before, student_before = snapshot(teacher), snapshot(objective.encoder)
    train_steps(objective, make_batch(), steps=3)   # after_step checks the teacher at every step

    for name, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), name
    for p in teacher.parameters():
        assert not p.requires_grad and p.grad is None
    assert objective.training and not teacher.training
    objective.train()
    assert not teacher.training
    objective.assert_teacher_unchanged()
    changed = [k for k, v in objective.encoder.state_dict().items() if not torch.equal(v, student_before[k])]
    assert len(changed) == len(student_before)   # every student tensor moved

    saved = objective.saved()
    assert all(module is not teacher for module in saved.values())
    saved_ids = {id(p) for module in saved.values() for p in module.parameters()}
    assert not saved_ids & {id(p) for p in teacher.parameters()}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_salt_teacher_check_catches_a_change(sign):
    objective = make_objective("salt")
    objective.assert_teacher_unchanged()
    weight = objective.target_encoder.blocks[1].mlp.fc1.weight
    entry = (weight * sign > 0.01).nonzero()[0].tolist()   # an entry of the given sign, away from 0
    with torch.no_grad():
        weight[tuple(entry)] += 1e-3
    with pytest.raises(RuntimeError, match="changed"):
        objective.assert_teacher_unchanged()
    with pytest.raises(RuntimeError, match="changed"):
        objective.after_step(0, {})


def test_salt_teacher_check_catches_training_mode():
    objective = make_objective("salt")
    objective.target_encoder.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        objective.assert_teacher_unchanged()


def test_teacher_check_does_not_depend_on_reduction_order():
    threads = torch.get_num_threads()
    try:
        for seed in range(3):   # each teacher alone trips the check with probability ~0.9 on this machine
            torch.manual_seed(seed)
            torch.set_num_threads(1)
            objective = SaltObjective(make_vit(), make_predictor(384), make_vit(384), check_every=1,
                                      loss="l1", target_layer=-1, target_layernorm=True)
            torch.set_num_threads(4)
            objective.assert_teacher_unchanged()
    finally:
        torch.set_num_threads(threads)


# -- latent targets ------------------------------------------------------------------------------------------

def test_latent_targets_are_layernormed_teacher_output():
    objective = make_objective("salt")
    video = make_batch()["video"]
    targets = objective.targets(video)
    assert targets.shape == (2, 32, 64)
    assert targets.mean(dim=-1).abs().max() < 1e-5
    assert (targets.var(dim=-1, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("layernorm", [True, False])
def test_target_layer_selects_block_output(layernorm):
    objective = make_objective("salt", target_layer=0, target_layernorm=layernorm)
    teacher = objective.target_encoder
    video = make_batch()["video"]
    with torch.no_grad():
        block0 = teacher(video, layer=0)
        final = teacher(video)
    expected = F.layer_norm(block0, (64,)) if layernorm else block0
    torch.testing.assert_close(objective.targets(video), expected)
    assert not torch.allclose(objective.targets(video), final, atol=1e-2)


# -- V-JEPA's EMA target -------------------------------------------------------------------------------------

def test_vjepa_momentum_schedule():
    objective = make_objective("vjepa")   # momentum 0.99 -> 1.0 over 100 steps
    assert objective.momentum_at(0) == pytest.approx(0.99)
    assert objective.momentum_at(50) == pytest.approx(0.995)
    assert objective.momentum_at(100) == pytest.approx(1.0)


@pytest.mark.parametrize("step", [0, 30])
def test_vjepa_ema_update_known_answer(step):
    torch.manual_seed(0)
    objective = make_objective("vjepa")
    target = objective.target_encoder
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), objective.encoder.parameters()))
    train_steps(objective, make_batch(), steps=2)   # student and target now differ
    old = [p.detach().clone() for p in target.parameters()]
    student = [p.detach().clone() for p in objective.encoder.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(old, student))

    m = objective.momentum_at(step)
    assert m == pytest.approx(0.99 + 0.01 * step / 100)
    objective.after_step(step, {})
    for new, t, s in zip(target.parameters(), old, student):
        torch.testing.assert_close(new, m * t + (1 - m) * s, rtol=1e-6, atol=1e-7)
        assert not new.requires_grad


def test_vjepa_momentum_one_keeps_target():
    objective = make_objective("vjepa")
    train_steps(objective, make_batch(), steps=2)
    before = snapshot(objective.target_encoder)
    objective.after_step(100, {})   # momentum_at(total_steps) = 1.0
    assert all(torch.equal(v, before[k]) for k, v in objective.target_encoder.state_dict().items())


def test_vjepa_target_is_saved_but_not_trained():
    objective = make_objective("vjepa")
    assert objective.saved()["target_encoder"] is objective.target_encoder
    assert all(m is not objective.target_encoder for m in objective.trainable().values())
    objective.train()
    assert not objective.target_encoder.training


# -- learning ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["pixel", "salt", "vjepa"])
def test_loss_falls_on_a_fixed_batch(method):
    torch.manual_seed(0)
    losses = train_steps(make_objective(method), make_batch(), steps=25)
    assert losses[-1] < 0.8 * losses[0], losses[::5]   # measured 0.52-0.65 over seeds


# -- plateau warning -----------------------------------------------------------------------------------------

def _plateau_metrics(ratio: float) -> dict[str, float]:
    return {"loss": 0.5 * ratio, "mean_prediction_loss": 0.5, "loss_ratio": ratio}


def test_plateau_warning_once_after_plateau_after():
    objective = make_objective("pixel", plateau_ratio=0.95, plateau_after=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # any warning here fails the test
        objective.after_step(9, _plateau_metrics(0.99))   # too early
        objective.after_step(10, _plateau_metrics(0.90))  # learning
    with pytest.warns(UserWarning, match="mean"):
        objective.after_step(11, _plateau_metrics(0.99))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objective.after_step(12, _plateau_metrics(0.99))  # already warned


def test_pixel_loss_reports_ratio_to_mean_prediction():
    objective = make_objective("pixel")
    out = objective.loss(make_batch(), 0)
    assert set(out) == {"loss", "mean_prediction_loss", "loss_ratio"}
    torch.testing.assert_close(out["loss_ratio"], out["loss"].detach() / out["mean_prediction_loss"])


# -- mask tokens ---------------------------------------------------------------------------------------------

def _mask_token_grad(objective, masks) -> torch.Tensor:
    objective.zero_grad(set_to_none=True)
    objective.loss({"video": make_batch()["video"], "masks": masks}, 0)["loss"].backward()
    return objective.trainable()["decoder" if "decoder" in objective.trainable() else "predictor"].mask_tokens.grad


@pytest.mark.parametrize("method", ["pixel", "salt", "vjepa"])
def test_pair_i_uses_mask_token_i(method):
    torch.manual_seed(0)
    objective = make_objective(method)
    first, second = make_batch()["masks"]
    one_pair = _mask_token_grad(objective, [first]).clone()
    two_pairs = _mask_token_grad(objective, [first, second]).clone()
    assert torch.equal(one_pair[1], torch.zeros(32))   # one pair never touches token 1
    assert one_pair[0].abs().sum() > 0 and two_pairs[1].abs().sum() > 0
    # the loss is the mean over pairs: token 0 gets half of what it gets from pair 0 alone
    torch.testing.assert_close(two_pairs[0], 0.5 * one_pair[0])
