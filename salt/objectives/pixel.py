"""Stage 1, the teacher: masked pixel reconstruction (VideoMAE's objective under any mask generator)."""
from __future__ import annotations

import warnings

import torch

from salt.flops import transformer_cost
from salt.models.predictor import MaskedTokenPredictor
from salt.models.tokens import gather_tokens
from salt.models.vit import VideoViT
from salt.objectives.base import Objective, mean_over_pairs, token_mean


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, N, tubelet*patch*patch, C], tokens in the encoder's (t, h, w) order."""
    B, C, T, H, W = video.shape
    x = video.reshape(B, C, T // tubelet, tubelet, H // patch, patch, W // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, t, h, w, dt, dh, dw, C
    return x.reshape(B, (T // tubelet) * (H // patch) * (W // patch), tubelet * patch * patch, C)


def pixel_targets(video: torch.Tensor, tubelet: int, patch: int, normalize: bool) -> torch.Tensor:
    """[B, N, tubelet*patch*patch*C]; normalised per tubelet per channel as VideoMAE does:
    (x - mean) / (sqrt(unbiased var) + 1e-6)."""
    x = patchify(video, tubelet, patch)
    if normalize:
        x = (x - x.mean(dim=2, keepdim=True)) / (x.var(dim=2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


class PixelObjective(Objective):
    def __init__(self, encoder: VideoViT, decoder: MaskedTokenPredictor, *, normalize_targets: bool,
                 plateau_ratio: float, plateau_after: int):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.normalize_targets = normalize_targets
        self.plateau_ratio, self.plateau_after = plateau_ratio, plateau_after
        self._plateau_warned = False

    def trainable(self):
        return {"encoder": self.encoder, "decoder": self.decoder}

    def loss(self, batch, step):
        video = batch["video"]
        targets = pixel_targets(video, self.encoder.tubelet_size, self.encoder.patch_size, self.normalize_targets)
        losses, baselines = [], []
        for i, pair in enumerate(batch["masks"]):
            context = self.encoder(video, keep=pair.context, keep_valid=pair.context_valid)
            pred = self.decoder(context, pair.context, pair.target, mask_token=i, context_valid=pair.context_valid,
                                target_valid=pair.target_valid)
            target = gather_tokens(targets, pair.target)
            losses.append(token_mean((pred.float() - target).pow(2), pair.target_valid, pair.target_count))
            # Loss of the best constant prediction (per pixel feature): the "predict the mean" plateau.
            if pair.target_valid is None:
                mean = target.mean(dim=(0, 1), keepdim=True)
            else:
                weight = pair.target_valid.to(target.dtype).unsqueeze(-1)
                mean = (target * weight).sum(dim=(0, 1), keepdim=True) / weight.sum()
            baselines.append(token_mean((target - mean).pow(2), pair.target_valid, pair.target_count))
        loss = mean_over_pairs(losses)
        baseline = mean_over_pairs(baselines)
        return {"loss": loss, "mean_prediction_loss": baseline, "loss_ratio": loss.detach() / baseline}

    def costs(self, batch):
        B = batch["video"].shape[0]
        out = []
        for pair in batch["masks"]:
            out.append(transformer_cost(self.encoder, batch=B, seq_len=pair.context.shape[1], trained=True))
            out.append(transformer_cost(self.decoder, batch=B, seq_len=pair.context.shape[1] + pair.target.shape[1],
                                        trained=True))
        return out

    def after_step(self, step, metrics):
        if (not self._plateau_warned and step >= self.plateau_after
                and metrics["loss_ratio"] > self.plateau_ratio):
            self._plateau_warned = True
            warnings.warn(
                f"pixel teacher at step {step}: loss {metrics['loss']:.4f} is still {metrics['loss_ratio']:.2f}x the "
                f"loss of predicting the mean ({metrics['mean_prediction_loss']:.4f}); it may be stuck on the "
                "mean-prediction plateau (try model.init=xavier, random-token masks, or smaller patches)",
                stacklevel=2)
