"""Stage 2 and the baseline: predict a target encoder's latents at masked positions.

SALT: the target encoder is a frozen teacher loaded from an earlier run. V-JEPA: it is an EMA copy of the
student. Everything else (masks, predictor, loss) is shared, so the two differ only in their hooks.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from salt.flops import transformer_cost
from salt.models.predictor import MaskedTokenPredictor
from salt.models.tokens import gather_tokens
from salt.models.vit import VideoViT
from salt.objectives.base import Objective, mean_over_pairs, token_mean
from salt.schedules import linear


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


_INT_VIEW = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """An exact summary of every parameter's bits, to assert a frozen teacher never changes: a
    position-weighted integer sum, so it is independent of reduction order, thread count and device
    (a float sum is not), and sees any changed or swapped entry."""
    sums = []
    for p in module.parameters():
        bits = p.detach().contiguous().view(_INT_VIEW[p.element_size()]).flatten().long()
        weights = torch.arange(bits.numel(), device=bits.device) % 65521 + 1
        sums.append((bits * weights).sum())
    return torch.stack(sums).cpu()


class LatentPredictionObjective(Objective):
    def __init__(self, encoder: VideoViT, predictor: MaskedTokenPredictor, target_encoder: VideoViT, *,
                 loss: str, target_layer: int, target_layernorm: bool):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.target_encoder = freeze(target_encoder)
        self.loss_kind, self.target_layer, self.target_layernorm = loss, target_layer, target_layernorm

    def trainable(self):
        return {"encoder": self.encoder, "predictor": self.predictor}

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_encoder.eval()   # the target network never runs in training mode
        return self

    @torch.no_grad()
    def targets(self, video: torch.Tensor) -> torch.Tensor:
        h = self.target_encoder(video, layer=self.target_layer)
        return F.layer_norm(h, h.shape[-1:]) if self.target_layernorm else h

    def loss(self, batch, step):
        video = batch["video"]
        targets = self.targets(video)
        losses = []
        for i, pair in enumerate(batch["masks"]):
            context = self.encoder(video, keep=pair.context, keep_valid=pair.context_valid)
            pred = self.predictor(context, pair.context, pair.target, mask_token=i, context_valid=pair.context_valid,
                                  target_valid=pair.target_valid).float()
            target = gather_tokens(targets, pair.target).float()
            if pair.target_valid is None:   # equal rows: the plain mean (bit for bit what it always was)
                losses.append(F.l1_loss(pred, target) if self.loss_kind == "l1" else F.mse_loss(pred, target))
            else:
                error = (pred - target).abs() if self.loss_kind == "l1" else (pred - target).pow(2)
                losses.append(token_mean(error, pair.target_valid, pair.target_count))
        return {"loss": mean_over_pairs(losses)}

    def costs(self, batch):
        B = batch["video"].shape[0]
        out = [transformer_cost(self.target_encoder, batch=B, seq_len=self.target_encoder.num_tokens, trained=False)]
        for pair in batch["masks"]:
            out.append(transformer_cost(self.encoder, batch=B, seq_len=pair.context.shape[1], trained=True))
            out.append(transformer_cost(self.predictor, batch=B,
                                        seq_len=pair.context.shape[1] + pair.target.shape[1], trained=True))
        return out


class SaltObjective(LatentPredictionObjective):
    """Frozen teacher; its parameters are checked unchanged every `check_every` steps."""

    def __init__(self, *args, check_every: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_every = check_every
        # check_every=0 never checks (and works on the meta device, where compute estimates build objectives)
        self._teacher_fingerprint = fingerprint(self.target_encoder) if check_every else None

    def after_step(self, step, metrics):
        if self.check_every and step % self.check_every == 0:
            self.assert_teacher_unchanged()

    def assert_teacher_unchanged(self):
        if not torch.equal(fingerprint(self.target_encoder), self._teacher_fingerprint):
            raise RuntimeError("the frozen teacher's parameters changed during student training")
        if any(p.requires_grad for p in self.target_encoder.parameters()) or self.target_encoder.training:
            raise RuntimeError("the frozen teacher must be in eval mode with requires_grad=False")


class VJepaObjective(LatentPredictionObjective):
    """EMA target: after each step, target <- m * target + (1 - m) * student, m from a linear schedule."""

    def __init__(self, encoder, predictor, *, momentum: list[float], total_steps: int, **kwargs):
        super().__init__(encoder, predictor, copy.deepcopy(encoder), **kwargs)
        self.momentum, self.total_steps = momentum, total_steps

    def saved(self):
        return {**self.trainable(), "target_encoder": self.target_encoder}

    def momentum_at(self, step: int) -> float:
        return linear(step, self.total_steps, start=self.momentum[0], final=self.momentum[1])

    @torch.no_grad()
    def after_step(self, step, metrics):
        m = self.momentum_at(step)
        ema = list(self.target_encoder.parameters())
        torch._foreach_mul_(ema, m)
        torch._foreach_add_(ema, list(self.encoder.parameters()), alpha=1.0 - m)
