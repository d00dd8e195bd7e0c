"""Compute estimates of a run before it runs: the same accounting as training (the objective's own `costs`),
on networks built on the meta device (no memory, no init cost) and masks sampled as the run will sample them.

A study's dry run prints these, so the paper's grid can be checked against the paper's numbers without a GPU.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from salt.config import from_dict, to_dict
from salt.data import clip_geometry, get_source, source_names
from salt.data.sampler import mix_seed
from salt.data.video.lists import VideoListConfig
from salt.flops import NetworkCost, num_params, total_flops
from salt.masks import MaskConfig, build_mask_generator
from salt.masks.simple import MaskPair
from salt.objectives import build_network, build_objective, get_method
from salt.schema import RunConfig

# Mask lengths vary by step (multiblock draws its block sizes once per step, or once per mask.cut_group clips): the
# estimate averages sampled steps holding this many block-size draws (16 steps of a whole-batch cut; at batch 3072
# cut per 24 clips, 128 draws a step, 2 steps)
MASK_SAMPLES = 16
ACCOUNTINGS = ("run", "paper")


@functools.lru_cache(maxsize=64)
def _mask_samples(mask_cfg_json: str, grid: tuple[int, int, int], batch_size: int, seed: int):
    """Per pair, for the first sampled steps (MASK_SAMPLES): (context, target) row lengths, padding included (what
    is computed), and the mean valid (context, target) tokens per clip (what is kept). Cached: a study's runs share
    masks. Padded rows: the loop trims each micro-batch to its own longest row (MaskPair.trimmed); the estimate takes
    a micro-batch to be one mask.cut_group (the paper presets: 24 clips on each GPU), else the whole batch."""
    cfg = from_dict(MaskConfig, json.loads(mask_cfg_json))
    masks = build_mask_generator(cfg, grid)
    group = cfg.cut_group or batch_size
    groups = -(-batch_size // group)   # block-size draws per step (cut_group: one per group)

    def sample(pair):
        micro = [pair.map(lambda t: t[i:i + group]).trimmed() for i in range(0, batch_size, group)]
        computed = [round(sum(getattr(m, part).shape[1] for m in micro) / groups) for part in ("context", "target")]
        kept = [float(idx.shape[1]) if valid is None else float(valid.sum(dim=1).float().mean())
                for idx, valid in ((pair.context, pair.context_valid), (pair.target, pair.target_valid))]
        return (*computed, *kept)
    steps = MASK_SAMPLES if groups == 1 else max(2, -(-MASK_SAMPLES // groups))
    return [[sample(p) for p in masks(batch_size, torch.Generator().manual_seed(mix_seed(seed, 1, step)))]
            for step in range(steps)]


def tokens_per_clip(cfg: RunConfig) -> list[dict[str, float]]:
    """Per mask pair, means over sampled steps of the global batch: context and target tokens a clip keeps
    (valid ones) and computes (its row, padding included). What the cut drops (mask.equalize, mask.cut_group)."""
    grid = _meta_objective(cfg)[0].encoder.grid
    steps = _mask_samples(json.dumps(to_dict(cfg.mask), sort_keys=True), grid, cfg.train.batch_size,
                          cfg.train.seed)
    return [{name: sum(step[pair][i] for step in steps) / len(steps)
             for i, name in enumerate(("context_computed", "target_computed", "context_kept", "target_kept"))}
            for pair in range(len(steps[0]))]


def _meta_pairs(lengths, batch_size: int, num_tokens: int, accounting: str) -> list[MaskPair]:
    """Shape-only mask pairs. The paper charges the predictor every token of the clip per pair (context + all
    masked tokens); this code cuts target lists to the batch minimum, so its predictor sees fewer."""
    def meta(n):
        return torch.empty(batch_size, n, device="meta")
    return [MaskPair(meta(c), meta(num_tokens - c if accounting == "paper" else t)) for c, t, _, _ in lengths]


def step_flops(cfg: RunConfig, *, accounting: str = "run", count_attention: bool | None = None) -> float:
    """FLOPs of one training step of `cfg` (6ND trained, 2ND forward-only), averaged over sampled masks.

    accounting="run": what this code computes (what training logs); "paper": the paper's convention (encoder
    on its context tokens, predictor on all tokens of each mask pair, teacher on all tokens)."""
    count_attention = cfg.train.count_attention_flops if count_attention is None else count_attention
    return _step_flops(json.dumps(to_dict(cfg), sort_keys=True), accounting, count_attention)


@functools.lru_cache(maxsize=256)
def _step_flops(cfg_json: str, accounting: str, count_attention: bool) -> float:
    steps = _step_costs(cfg_json, accounting)
    return sum(total_flops(costs, count_attention) for costs in steps) / len(steps)


def _meta_objective(cfg: RunConfig):
    """The run's objective on the meta device (a meta teacher when its method needs one): shapes, no memory."""
    geometry = clip_geometry(cfg.data)
    cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, teacher_check_every=0))
    with torch.device("meta"):
        teacher = None
        if get_method(cfg.objective.method).needs_teacher:
            teacher = (build_network(cfg.objective.teacher, geometry), {"flops_total": 0.0, "run_id": "", "step": 0})
        return build_objective(cfg, geometry, teacher=teacher), geometry


@functools.lru_cache(maxsize=256)
def _step_costs(cfg_json: str, accounting: str) -> list[list[NetworkCost]]:
    """The objective's own costs of the global batch, for each sampled step (_mask_samples)."""
    cfg = from_dict(RunConfig, json.loads(cfg_json))
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    objective, geometry = _meta_objective(cfg)
    batch_size, num_tokens = cfg.train.batch_size, objective.encoder.num_tokens
    video = torch.empty(batch_size, geometry.channels, geometry.frames, geometry.size, geometry.size, device="meta")
    steps = _mask_samples(json.dumps(to_dict(cfg.mask), sort_keys=True), objective.encoder.grid, batch_size,
                          cfg.train.seed)
    return [objective.costs({"video": video, "masks": _meta_pairs(lengths, batch_size, num_tokens, accounting)})
            for lengths in steps]


@dataclass(frozen=True)
class _Parameters:
    """Parameter counts of a run's objective, as sharding (train.shard=fsdp, salt.train.distributed) splits them."""
    trained: int    # what the optimiser updates (sharded)
    ema: int        # saved but not trained: V-JEPA's EMA target (sharded like the encoder)
    frozen: int     # neither: a frozen teacher loaded from file (whole on every device)
    root: int       # trained parameters outside the transformer blocks (FSDP keeps them gathered forward to backward)
    block: int      # the largest transformer block of a sharded network (FSDP gathers a block at a time)


@functools.lru_cache(maxsize=256)
def _parameter_counts(cfg_json: str) -> _Parameters:
    objective, _ = _meta_objective(from_dict(RunConfig, json.loads(cfg_json)))
    trainable, saved = objective.trainable(), objective.saved()
    trained = sum(num_params(m) for m in trainable.values())
    ema = sum(num_params(m) for name, m in saved.items() if name not in trainable)
    in_blocks = [num_params(b) for m in trainable.values() for b in getattr(m, "blocks", ())]
    return _Parameters(trained=trained, ema=ema, frozen=num_params(objective) - trained - ema,
                       root=trained - sum(in_blocks), block=max(in_blocks, default=0))


# -- memory ------------------------------------------------------------------------------------------------------
# Elements a timm pre-norm block keeps for backward, per token, in units of the width h: LayerNorm 1 input and
# output (2), qkv (3), attention output (1), LayerNorm 2 input and output (2), MLP hidden before and after GELU
# (2 x 4). Fused SDPA (flash / memory-efficient, what torch picks without an attention mask) keeps only its output
# and a log-sum-exp per head and query, so no seq_len^2 term. Under bf16 autocast LayerNorm runs in fp32 (its 4
# elements at 4 bytes), the rest in bf16.
_KEPT_BYTES = {"fp32": 16 * 4, "bf16": 4 * 4 + 12 * 2}
_GATHERED_BYTES = {"fp32": 4, "bf16": 2}   # a weight FSDP gathers: cast to the autocast dtype first
GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-device memory of one training step in GB (1e9 bytes), what PyTorch itself allocates (no CUDA context,
    no allocator fragmentation: leave ~10-20% headroom)."""
    weights: float        # trainable fp32 weights
    grads: float
    optimizer: float      # AdamW's two fp32 moments
    frozen: float         # networks that are run but not trained (frozen teacher, EMA target)
    activations: float    # what the micro-batch keeps for backward (+ one block recomputed, when checkpointing)
    gathered: float = 0.0  # sharded: whole weights and gradients FSDP holds at a time (roots, blocks in flight)

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.frozen + self.activations + self.gathered


def step_memory(cfg: RunConfig, *, devices: int = 1, precision: str = "bf16", accumulate: int | None = None,
                activation_checkpointing: bool | None = None, shard: bool | None = None) -> MemoryEstimate:
    """Per-device memory of a training step of `cfg` on `devices` data-parallel devices: trainable weights,
    gradients and AdamW state (16 bytes a parameter), frozen networks (4 bytes a parameter), and the activations
    each trained network keeps for backward on this device's micro-batch (batch_size / (devices x accumulate) clips;
    the token counts are the objective's own costs, averaged over sampled masks). With `activation_checkpointing`
    a block keeps only its input and one block is recomputed at a time. With `shard` (default: train.shard=fsdp)
    on several devices, the trained networks' 16 bytes and the EMA target's 4 bytes a parameter are split over
    the devices (a frozen teacher stays whole), plus what FSDP2 holds whole at a time (`gathered`): the trained
    networks' parameters outside the blocks, from forward to backward, and the largest block three times (the one
    running, the next one prefetched, the unsharded gradient before its reduce-scatter); under bf16 the gathered
    weights are bf16 (salt.train.distributed.shard_modules), the gradient reduced in fp32."""
    if precision not in _KEPT_BYTES:
        raise ValueError(f"precision must be one of {tuple(_KEPT_BYTES)}, got {precision!r}")
    accumulate = accumulate or cfg.train.accumulate
    if activation_checkpointing is None:
        activation_checkpointing = cfg.model.activation_checkpointing
    if shard is None:
        shard = cfg.train.shard == "fsdp"
    shard = shard and devices > 1   # one process is never sharded (salt.train.distributed)
    cfg_json = json.dumps(to_dict(cfg), sort_keys=True)
    params = _parameter_counts(cfg_json)
    share = 1 / (devices * accumulate)   # this device's micro-batch, as a fraction of the global batch
    steps = _step_costs(cfg_json, "run")
    activations = 0.0
    for costs in steps:
        kept, recomputed = 0.0, 0.0
        for c in costs:
            tokens = c.tokens * share
            if not c.trained:
                kept += tokens * c.width * 4          # its output (targets), kept until the loss
            elif activation_checkpointing:            # block inputs (fp32 residual stream) ...
                kept += tokens * c.width * 4 * c.depth
                # ... and backward recomputes one block at a time, of one network at a time
                recomputed = max(recomputed, tokens * c.width * _KEPT_BYTES[precision])
            else:
                kept += tokens * c.width * c.depth * _KEPT_BYTES[precision]
        activations += (kept + recomputed) / len(steps)
    split = devices if shard else 1
    state = params.trained / split
    return MemoryEstimate(weights=4 * state / GB, grads=4 * state / GB, optimizer=8 * state / GB,
                          frozen=4 * (params.frozen + params.ema / split) / GB, activations=activations / GB,
                          gathered=(_GATHERED_BYTES[precision] * (params.root + 2 * params.block) + 4 * params.block)
                          / GB if shard else 0.0)


def run_flops(cfg: RunConfig, accounting: str = "run") -> float:
    """FLOPs of the whole run (its own steps; a student's teacher stage is added by the study)."""
    return step_flops(cfg, accounting=accounting) * cfg.train.steps


def fit_advice(cfg: RunConfig, devices: int, budget_gb: float, precision: str = "bf16") -> str:
    """"" when a step of `cfg` fits `budget_gb` per device; otherwise the cheapest setting found that makes it fit:
    more micro-batches first (same result, less parallel work per step), then sharding (on several devices: more
    communication, no more compute), then activation checkpointing (a third more compute), then both; else what
    the smallest possible step would still need."""
    if step_memory(cfg, devices=devices, precision=precision).total <= budget_gb:
        return ""
    local = cfg.train.batch_size // devices
    options = [k for k in range(cfg.train.accumulate, local + 1) if local % k == 0]
    sharded = cfg.train.shard == "fsdp"
    shard_options = (sharded, True) if devices > 1 and not sharded else (sharded,)
    settings = [(shard, checkpointing) for checkpointing in (cfg.model.activation_checkpointing, True)
                for shard in shard_options]
    for shard, checkpointing in dict.fromkeys(settings):   # in order, without repeats
        for k in options:
            m = step_memory(cfg, devices=devices, precision=precision, accumulate=k,
                            activation_checkpointing=checkpointing, shard=shard)
            if m.total <= budget_gb:
                return (f"fits with train.accumulate={k}" + (" train.shard=fsdp" if shard and not sharded else "")
                        + (" model.activation_checkpointing=true" if checkpointing and not
                           cfg.model.activation_checkpointing else "") + f" ({m.total:.1f} GB)")
    shard = devices > 1
    smallest = step_memory(cfg, devices=devices, precision=precision, accumulate=local, activation_checkpointing=True,
                           shard=shard)
    states = smallest.weights + smallest.grads + smallest.optimizer + smallest.gathered
    if shard:
        return (f"does not fit even one clip per micro-batch with activation checkpointing and train.shard=fsdp "
                f"({smallest.total:.1f} GB, of which {states:.1f} GB weights, gradients and AdamW state sharded over "
                f"{devices} devices): it needs more devices or devices with more memory")
    return (f"does not fit even one clip per micro-batch with activation checkpointing ({smallest.total:.1f} GB, of "
            f"which {states:.1f} GB weights, gradients and AdamW state): it needs devices with more memory, or "
            "several devices per run to shard them over (train.shard=fsdp)")


# -- data budget -------------------------------------------------------------------------------------------------
# Whether a run's video files, decoded on its CPU cores, can feed its GPUs: a rate measured on the user's own files
# (benchmarks/video_loader.py --list writes it; the study dry run reads it with --loader-rate) against the clips/s
# one GPU trains.
LOADER_RATE_FORMAT = "salt-loader-rate"
LOADER_RATE_VERSION = 1
# the clip settings a decode's cost depends on: a rate holds for these (crops and flips cost about the same)
CLIP_KEYS = ("frames_per_clip", "frame_step", "fps", "duration", "num_clips", "resolution", "fast_decode")


def clip_settings(video: VideoListConfig) -> dict[str, float]:
    """The settings of `video` (data.video) that a measured loader rate holds for (CLIP_KEYS)."""
    return {key: getattr(video, key) for key in CLIP_KEYS}


@dataclass(frozen=True)
class LoaderRate:
    """Training clips/s that one CPU core decodes (one process, one thread) and, when measured, the clip settings
    and the file it was measured with; a number given by hand has neither."""
    clips_per_s_per_core: float
    clip: dict[str, float] | None = None
    source: str = ""            # where the number came from, for messages

    def __post_init__(self):
        if not (isinstance(self.clips_per_s_per_core, (int, float)) and math.isfinite(self.clips_per_s_per_core)
                and self.clips_per_s_per_core > 0):
            raise ValueError(f"clips/s per core must be a finite number > 0, got {self.clips_per_s_per_core!r}")

    def differences(self, video: VideoListConfig) -> list[str]:
        """The clip settings in which `video` differs from the measured ones, as "key rate-value -> run-value":
        the rate does not hold for such runs (more frames or pixels cost more to decode). The frame step counts
        only where neither side samples by fps or duration (those set the step from each video's rate)."""
        if self.clip is None:
            return []
        run = clip_settings(video)
        by_time = any(d.get(k) for d in (self.clip, run) for k in ("fps", "duration"))
        keys = ["frames_per_clip", "resolution", "num_clips", *(("fps", "duration") if by_time else ("frame_step",)),
                "fast_decode"]
        return [f"{k} {self.clip[k]} -> {run[k]}" for k in keys if self.clip[k] != run[k]]


def read_loader_rate(path: str | Path) -> LoaderRate:
    """A rate file written by `benchmarks/video_loader.py --list` (format LOADER_RATE_FORMAT). ValueError, saying
    what is wrong, for a file that is not one, of a newer version, or without a positive rate."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != LOADER_RATE_FORMAT:
        raise ValueError(f"{path}: not a loader rate file (format {LOADER_RATE_FORMAT!r}; write one with "
                         "`python benchmarks/video_loader.py --list LIST --out FILE`)")
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= LOADER_RATE_VERSION:
        raise ValueError(f"{path}: {LOADER_RATE_FORMAT} version {version!r}; this code reads versions 1 to "
                         f"{LOADER_RATE_VERSION} (a newer salt wrote it?)")
    clip = data.get("clip")
    if not isinstance(clip, dict) or set(CLIP_KEYS) - set(clip):
        raise ValueError(f"{path}: 'clip' must hold the clip settings {', '.join(CLIP_KEYS)}")
    try:
        return LoaderRate(data.get("clips_per_s_per_core"), clip=clip,
                          source=f"{path}: {data.get('videos', '?')} videos of {data.get('list', '?')}, measured "
                                 f"{data.get('measured_at', '?')}")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


@dataclass(frozen=True)
class LoaderBudget:
    """What one GPU asks of its data loader in a run: per GPU, since each GPU trains its share of the global batch
    at the same rate however many share it."""
    clip_flops: float           # a clip's share of the step: step_flops(cfg) / train.batch_size (clips)
    clips_per_s: float          # clips one GPU trains per second at the assumed achieved FLOP/s
    cores_needed: float         # loader cores that takes at the measured clips/s per core
    loader_cores: int           # cores that decode: data.num_workers, at most cpus_per_task - 1 (the training
    #                             process keeps one); 0 workers: the training process decodes between steps
    clips_per_s_per_core: float

    @property
    def starves(self) -> bool:
        return self.cores_needed > self.loader_cores

    @property
    def gpu_busy(self) -> float:
        """The share of time the GPU can compute when the loader sets the pace (1: it keeps up). Without workers
        decoding and training take turns, so the step time and the decode time add up."""
        supply = self.loader_cores * self.clips_per_s_per_core
        if self.loader_cores == 0:
            return self.clips_per_s_per_core / (self.clips_per_s_per_core + self.clips_per_s)
        return min(1.0, supply / self.clips_per_s)


def loader_cores(cfg: RunConfig, clips_per_s_per_core: float, gpu_tflops: float,
                 cpus_per_task: int) -> LoaderBudget:
    """The data budget of one GPU of a run on video files: the clips/s it trains at `gpu_tflops` achieved (the
    step's FLOPs in this code's accounting, `step_flops`, per clip of train.batch_size), the CPU cores that takes
    at `clips_per_s_per_core`, and the cores a task of `cpus_per_task` has for it (one task per GPU)."""
    if not get_source(cfg.data.source).decodes_video:
        decoding = [name for name in source_names() if get_source(name).decodes_video]
        raise ValueError(f"data.source={cfg.data.source!r} decodes no video files, so it has no data budget (sources "
                         f"that do: {', '.join(decoding)})")
    if gpu_tflops <= 0 or cpus_per_task < 1:
        raise ValueError(f"gpu_tflops must be > 0 and cpus_per_task >= 1, got {gpu_tflops}, {cpus_per_task}")
    rate = LoaderRate(clips_per_s_per_core).clips_per_s_per_core   # checked like a rate read from a file
    clip_flops = step_flops(cfg) / cfg.train.batch_size
    clips_per_s = gpu_tflops * 1e12 / clip_flops
    return LoaderBudget(clip_flops=clip_flops, clips_per_s=clips_per_s, cores_needed=clips_per_s / rate,
                        loader_cores=min(cfg.data.num_workers, cpus_per_task - 1), clips_per_s_per_core=rate)
