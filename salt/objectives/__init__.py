"""Objectives: one object per method, all driven by the same loop (salt.train.loop).

Add a method: subclass `Objective` (trainable/loss/costs/after_step) and `register` a `Method` with its
builder (salt.objectives.registry); every layer (config check, loop, estimates, evaluation, CLI, studies)
then knows it. The three built-in methods are registered below, and `imported` (an encoder trained elsewhere:
salt.importers' runs; nothing trains it).
"""
from __future__ import annotations

from salt.checkpoint import load_checkpoint, load_matching
from salt.data import ClipGeometry
from salt.masks import num_mask_pairs
from salt.models import MaskedTokenPredictor, VideoViT, build_encoder
from salt.models.tokens import GradCheckpointing
from salt.objectives.base import Objective
from salt.objectives.imported import ImportedEncoder
from salt.objectives.latent import SaltObjective, VJepaObjective, fingerprint, freeze
from salt.objectives.pixel import PixelObjective, pixel_targets
from salt.objectives.registry import Method, get_method, methods, register, unregister


def build_network(model_cfg, geometry: ClipGeometry) -> VideoViT:
    """An encoder of `model_cfg`'s size for clips of `geometry`."""
    return build_encoder(model_cfg, img_size=geometry.size, num_frames=geometry.frames, in_chans=geometry.channels)


def build_predictor(cfg, grid, in_dim: int, out_dim: int) -> MaskedTokenPredictor:
    """The masked-token predictor of `cfg.predictor` (SALT/V-JEPA predictor, pixel decoder)."""
    p = cfg.predictor
    return MaskedTokenPredictor(grid=grid, in_dim=in_dim, out_dim=out_dim, embed_dim=p.embed_dim, depth=p.depth,
                                num_heads=p.num_heads, mlp_ratio=p.mlp_ratio,
                                num_mask_tokens=num_mask_pairs(cfg.mask), init=cfg.model.init,
                                pos_embed=cfg.model.pos_embed)


def load_teacher(objective_cfg, geometry: ClipGeometry) -> tuple[VideoViT, dict]:
    """The encoder of any earlier run (pixel teacher, SALT student, V-JEPA), built from `objective.teacher`
    and checked tensor by tensor against the file; also its checkpoint's state (run id, step, compute spent
    on its whole chain)."""
    teacher = build_network(objective_cfg.teacher, geometry)
    state = load_checkpoint(objective_cfg.teacher_checkpoint)
    load_matching(teacher, state["models"]["encoder"], f"teacher {objective_cfg.teacher_checkpoint}")
    return teacher, state


def build_objective(cfg, geometry: ClipGeometry, teacher: tuple[VideoViT, dict] | None = None) -> Objective:
    """The objective of `cfg.objective.method`, from the registry. `teacher`: (encoder, checkpoint state) for
    a method that needs one, instead of loading objective.teacher_checkpoint (estimates pass meta tensors)."""
    method = get_method(cfg.objective.method)
    encoder = build_network(cfg.model, geometry)   # first: the RNG order of initialisation is part of a run
    if method.needs_teacher and teacher is None:
        teacher = load_teacher(cfg.objective, geometry)
    objective = method.build(cfg, geometry, encoder, teacher)
    if cfg.model.activation_checkpointing:
        for module in objective.trainable().values():
            if isinstance(module, GradCheckpointing):
                module.set_grad_checkpointing()
    if method.needs_teacher:
        _, state = teacher
        objective.upstream_flops = float(state["flops_total"])
        objective.teacher_source = (state["run_id"], int(state["step"]))
    return objective


# -- the built-in methods -----------------------------------------------------------------------------------

def _pixel(cfg, geometry, encoder, teacher):
    o = cfg.objective
    out_dim = geometry.channels * encoder.tubelet_size * encoder.patch_size ** 2
    return PixelObjective(encoder, build_predictor(cfg, encoder.grid, encoder.embed_dim, out_dim),
                          normalize_targets=o.normalize_targets, plateau_ratio=o.plateau_ratio,
                          plateau_after=o.plateau_after)


def _latent_kwargs(o) -> dict:
    return dict(loss=o.loss, target_layer=o.target_layer, target_layernorm=o.target_layernorm)


def _salt(cfg, geometry, encoder, teacher):
    teacher_encoder, _ = teacher
    if teacher_encoder.grid != encoder.grid:
        raise ValueError(f"teacher token grid {teacher_encoder.grid} differs from the student's {encoder.grid}: "
                         "objective.teacher.patch_size/tubelet_size must match model.*")
    return SaltObjective(encoder, build_predictor(cfg, encoder.grid, encoder.embed_dim, teacher_encoder.embed_dim),
                         teacher_encoder, check_every=cfg.objective.teacher_check_every,
                         **_latent_kwargs(cfg.objective))


def _vjepa(cfg, geometry, encoder, teacher):
    return VJepaObjective(encoder, build_predictor(cfg, encoder.grid, encoder.embed_dim, encoder.embed_dim),
                          momentum=cfg.objective.ema_momentum, total_steps=cfg.train.steps,
                          **_latent_kwargs(cfg.objective))


register(Method("pixel", _pixel, stage="teacher", command="teacher",
                help="stage 1: a teacher trained by masked pixel reconstruction"))
register(Method("salt", _salt, stage="student", command="student", needs_teacher=True,
                help="stage 2: a SALT student predicting a frozen teacher's latents"))
register(Method("vjepa", _vjepa, stage="student", command="vjepa", ema="target_encoder",
                help="the V-JEPA baseline: a student predicting its own EMA copy's latents"))
register(Method("imported", lambda cfg, geometry, encoder, teacher: ImportedEncoder(encoder), stage="teacher",
                command="", trains=False, help="a released encoder imported with python -m salt import-encoder"))

__all__ = ["Method", "Objective", "PixelObjective", "SaltObjective", "VJepaObjective", "build_network",
           "build_objective", "build_predictor", "fingerprint", "freeze", "get_method", "load_teacher", "methods",
           "pixel_targets", "register", "unregister"]
