"""Objectives: one object per method, all driven by the same loop (salt.train.loop).

Add a method: subclass `Objective` (trainable/loss/costs/after_step), add a branch to `build_objective`,
and its name to `salt.schema.METHODS`.
"""
from __future__ import annotations

from salt.data import ClipGeometry
from salt.masks import num_mask_pairs
from salt.models import MaskedTokenPredictor, VideoViT, build_encoder
from salt.objectives.base import Objective
from salt.objectives.latent import SaltObjective, VJepaObjective, fingerprint, freeze
from salt.objectives.pixel import PixelObjective, pixel_targets
from salt.train.checkpoint import load_checkpoint, load_matching


def _encoder(model_cfg, geometry: ClipGeometry) -> VideoViT:
    return build_encoder(model_cfg, img_size=geometry.size, num_frames=geometry.frames, in_chans=geometry.channels)


def _predictor(cfg, grid, in_dim: int, out_dim: int) -> MaskedTokenPredictor:
    p = cfg.predictor
    return MaskedTokenPredictor(grid=grid, in_dim=in_dim, out_dim=out_dim, embed_dim=p.embed_dim, depth=p.depth,
                                num_heads=p.num_heads, mlp_ratio=p.mlp_ratio,
                                num_mask_tokens=num_mask_pairs(cfg.mask), init=cfg.model.init,
                                pos_embed=cfg.model.pos_embed)


def load_teacher(objective_cfg, geometry: ClipGeometry) -> tuple[VideoViT, dict]:
    """The encoder of any earlier run (pixel teacher, SALT student, V-JEPA), built from `objective.teacher`
    and checked tensor by tensor against the file; also its checkpoint's state (run id, step, compute spent
    on its whole chain)."""
    teacher = _encoder(objective_cfg.teacher, geometry)
    state = load_checkpoint(objective_cfg.teacher_checkpoint)
    load_matching(teacher, state["models"]["encoder"], f"teacher {objective_cfg.teacher_checkpoint}")
    return teacher, state


def build_objective(cfg, geometry: ClipGeometry, teacher: tuple[VideoViT, dict] | None = None) -> Objective:
    """`teacher`: (encoder, checkpoint state) for salt, instead of loading objective.teacher_checkpoint."""
    encoder = _encoder(cfg.model, geometry)
    o = cfg.objective
    if o.method == "pixel":
        out_dim = geometry.channels * encoder.tubelet_size * encoder.patch_size ** 2
        return PixelObjective(encoder, _predictor(cfg, encoder.grid, encoder.embed_dim, out_dim),
                              normalize_targets=o.normalize_targets, plateau_ratio=o.plateau_ratio,
                              plateau_after=o.plateau_after)
    latent_kw = dict(loss=o.loss, target_layer=o.target_layer, target_layernorm=o.target_layernorm)
    if o.method == "salt":
        teacher, teacher_state = teacher or load_teacher(o, geometry)
        if teacher.grid != encoder.grid:
            raise ValueError(f"teacher token grid {teacher.grid} differs from the student's {encoder.grid}: "
                             "objective.teacher.patch_size/tubelet_size must match model.*")
        objective = SaltObjective(encoder, _predictor(cfg, encoder.grid, encoder.embed_dim, teacher.embed_dim),
                                  teacher, check_every=o.teacher_check_every, **latent_kw)
        objective.upstream_flops = float(teacher_state["flops_total"])
        objective.teacher_source = (teacher_state["run_id"], int(teacher_state["step"]))
        return objective
    if o.method == "vjepa":
        return VJepaObjective(encoder, _predictor(cfg, encoder.grid, encoder.embed_dim, encoder.embed_dim),
                              momentum=o.ema_momentum, total_steps=cfg.train.steps, **latent_kw)
    raise ValueError(f"unknown objective.method {o.method!r}")


__all__ = ["Objective", "PixelObjective", "SaltObjective", "VJepaObjective", "build_objective", "fingerprint",
           "freeze", "load_teacher", "pixel_targets"]
