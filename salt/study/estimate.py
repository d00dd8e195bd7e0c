"""Compute estimates of a run before it runs: the same accounting as training (the objective's own `costs`),
on networks built on the meta device (no memory, no init cost) and masks sampled as the run will sample them.

A study's dry run prints these, so the paper's grid can be checked against the paper's numbers without a GPU.
"""
from __future__ import annotations

import dataclasses
import functools
import json

import torch

from salt.config import from_dict, to_dict
from salt.data import clip_geometry
from salt.data.sampler import mix_seed
from salt.flops import total_flops
from salt.masks import MaskConfig, build_mask_generator
from salt.masks.simple import MaskPair
from salt.objectives import build_network, build_objective, get_method
from salt.schema import RunConfig

MASK_SAMPLES = 16   # mask lengths vary by step (multiblock): the estimate averages this many sampled steps
ACCOUNTINGS = ("run", "paper")


@functools.lru_cache(maxsize=64)
def _mask_lengths(mask_cfg_json: str, grid: tuple[int, int, int], batch_size: int, seed: int):
    """(context, target) lengths of each pair, for MASK_SAMPLES steps; cached: a study's runs share masks."""
    masks = build_mask_generator(from_dict(MaskConfig, json.loads(mask_cfg_json)), grid)
    return [[(p.context.shape[1], p.target.shape[1]) for p in masks(batch_size, torch.Generator().manual_seed(
        mix_seed(seed, 1, step)))] for step in range(MASK_SAMPLES)]


def _meta_pairs(lengths, batch_size: int, num_tokens: int, accounting: str) -> list[MaskPair]:
    """Shape-only mask pairs. The paper charges the predictor every token of the clip per pair (context + all
    masked tokens); this code cuts target lists to the batch minimum, so its predictor sees fewer."""
    def meta(n):
        return torch.empty(batch_size, n, device="meta")
    return [MaskPair(meta(c), meta(num_tokens - c if accounting == "paper" else t)) for c, t in lengths]


def step_flops(cfg: RunConfig, *, accounting: str = "run", count_attention: bool | None = None) -> float:
    """FLOPs of one training step of `cfg` (6ND trained, 2ND forward-only), averaged over sampled masks.

    accounting="run": what this code computes (what training logs); "paper": the paper's convention (encoder
    on its context tokens, predictor on all tokens of each mask pair, teacher on all tokens)."""
    count_attention = cfg.train.count_attention_flops if count_attention is None else count_attention
    return _step_flops(json.dumps(to_dict(cfg), sort_keys=True), accounting, count_attention)


@functools.lru_cache(maxsize=256)
def _step_flops(cfg_json: str, accounting: str, count_attention: bool) -> float:
    cfg = from_dict(RunConfig, json.loads(cfg_json))
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    geometry = clip_geometry(cfg.data)
    cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, teacher_check_every=0))
    with torch.device("meta"):
        teacher = None
        if get_method(cfg.objective.method).needs_teacher:
            teacher = (build_network(cfg.objective.teacher, geometry), {"flops_total": 0.0, "run_id": "", "step": 0})
        objective = build_objective(cfg, geometry, teacher=teacher)
    batch_size, num_tokens = cfg.train.batch_size, objective.encoder.num_tokens
    video = torch.empty(batch_size, geometry.channels, geometry.frames, geometry.size, geometry.size, device="meta")
    steps = _mask_lengths(json.dumps(to_dict(cfg.mask), sort_keys=True), objective.encoder.grid, batch_size,
                          cfg.train.seed)
    flops = [total_flops(objective.costs({"video": video, "masks": _meta_pairs(lengths, batch_size, num_tokens,
                                                                                accounting)}), count_attention)
             for lengths in steps]
    return sum(flops) / len(flops)


def run_flops(cfg: RunConfig, accounting: str = "run") -> float:
    """FLOPs of the whole run (its own steps; a student's teacher stage is added by the study)."""
    return step_flops(cfg, accounting=accounting) * cfg.train.steps
