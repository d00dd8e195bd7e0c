"""Evaluate a run's frozen encoder (or a baseline) and write one EvalRecord per (run, checkpoint, evaluation).

Every evaluation measures the same things the SALT and V-JEPA papers do, without their selection bias:
label-free metrics (RankMe, LiDAR, alpha-ReQ), the held-out loss of the run's own objective on fixed clips
and masks, and probes (linear on time-pooled features, low-shot and full; k-NN; attentive). Hyperparameters
are always chosen on a held-out part of the probe's training set; the test split is scored once.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.checkpoint import load_checkpoint, load_matching
from salt.config import config_hash, from_dict
from salt.data import ClipGeometry, build_dataset, label_specs
from salt.eval.attentive import fit_attentive_probes
from salt.eval.knn import knn_probe
from salt.eval.probes import extract_features, low_shot_probe, pool_tokens
from salt.eval.record import (EvalRecord, ProbeScore, code_version, hardware_description, read_record,
                              write_record)
from salt.eval.spectral import alpha_req, lidar, rankme
from salt.masks import build_mask_generator
from salt.layout import RunLayout
from salt.models import VideoViT
from salt.objectives import build_network, build_objective, get_method
from salt.schema import NON_SEMANTIC_KEYS, RunConfig

HELDOUT_MASK_SEED = 20250929   # fixed masks for held-out losses: comparable across runs and checkpoints


@dataclass
class EvalProtocol:
    name: str = "fast"
    probe_train_clips: int = 2000      # encoded once; 10-shot draws, selection holdouts and full-label probes use them
    probe_test_clips: int = 1000
    shots: list[int] = field(default_factory=lambda: [10, 0])   # labelled clips per class; 0 = all
    draws: int = 3
    linear_poolings: list[str] = field(default_factory=lambda: ["time"])   # "time" and/or "mean"
    attentive: str = "fast"            # attentive-probe head grid: fast (1 head) | systematic (20) | none
    attentive_train_clips: int = 1500
    attentive_epochs: int = 10
    attentive_batch_size: int = 128
    attentive_self_attn_depth: int = 0  # 0 on CPU (one cross-attention block); the paper's probe has 3
    knn_k: int = 20
    metric_clips: int = 512            # clips for RankMe / alpha-ReQ / LiDAR
    lidar_views: int = 2               # views per surrogate class: the clip + (lidar_views - 1) shifted copies
    heldout_clips: int = 128

    def __post_init__(self):
        if self.lidar_views < 2:
            raise ValueError(f"lidar_views must be >= 2 (a clip and at least one view of it), got {self.lidar_views}")


EVAL_PROTOCOLS = {
    "fast": EvalProtocol(),
    # seconds, for tests and smoke runs: exercises every measurement on few clips
    "smoke": EvalProtocol(name="smoke", probe_train_clips=200, probe_test_clips=100, shots=[10, 0], draws=1,
                          attentive_train_clips=200, attentive_epochs=1, metric_clips=100, lidar_views=2,
                          heldout_clips=32),
    "systematic": EvalProtocol(name="systematic", probe_train_clips=3000, draws=5, linear_poolings=["time", "mean"],
                               attentive="systematic", attentive_train_clips=3000, attentive_epochs=20, attentive_batch_size=256,
                               attentive_self_attn_depth=3, probe_test_clips=2000, metric_clips=1024,
                               lidar_views=4),
}


def eval_protocol(name: str | EvalProtocol) -> EvalProtocol:
    if isinstance(name, EvalProtocol):
        return name
    if name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid: {', '.join(EVAL_PROTOCOLS)}")
    return EVAL_PROTOCOLS[name]


def random_encoder(cfg: RunConfig, geometry: ClipGeometry, seed: int) -> VideoViT:
    """A random-init encoder of the same size and init scheme: the baseline every encoder must beat."""
    with torch.random.fork_rng(devices=[]):   # leaves the caller's RNG stream untouched
        torch.manual_seed(seed)
        return build_network(cfg.model, geometry).eval()


def clips_and_labels(dataset, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The first `count` clips of a dataset as one tensor, and each label as a tensor."""
    items = [dataset[(i, 0)] for i in range(min(count, len(dataset)))]
    videos = torch.stack([it["video"] for it in items])
    labels = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("video", "decode_failures")}
    return videos, labels


@dataclass
class ProbeData:
    """Clips and labels for probing, loaded once per dataset and shared by every encoder."""
    train_videos: torch.Tensor
    train_labels: dict[str, torch.Tensor]
    test_videos: torch.Tensor
    test_labels: dict[str, torch.Tensor]
    labels: list                      # LabelSpec per label


def load_probe_data(data_cfg, protocol: EvalProtocol) -> ProbeData:
    train_set, _ = build_dataset(data_cfg, "train")
    test_set, _ = build_dataset(data_cfg, "test")
    train_videos, train_labels = clips_and_labels(train_set, protocol.probe_train_clips)
    test_videos, test_labels = clips_and_labels(test_set, protocol.probe_test_clips)
    return ProbeData(train_videos, train_labels, test_videos, test_labels, label_specs(data_cfg))


def shifted_views(videos: torch.Tensor, views: int, max_shift: int, seed: int = 0) -> torch.Tensor:
    """[N, C, T, H, W] -> [N, views, C, T, H, W]: each clip moved by a random whole-pixel shift (the same for
    all its frames). LiDAR's surrogate classes need views of one clip that keep its content and motion (a flip
    would change the motion label of moving digits); a small translation does."""
    g = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-max_shift, max_shift + 1, (videos.shape[0], views, 2), generator=g)
    out = torch.empty(videos.shape[0], views, *videos.shape[1:], dtype=videos.dtype)
    for i in range(videos.shape[0]):
        for v in range(views):
            out[i, v] = torch.roll(videos[i], shifts=tuple(shifts[i, v].tolist()), dims=(-2, -1))
    return out


def _linear_scores(train_x, test_x, data: ProbeData, protocol: EvalProtocol, pooling: str) -> list[ProbeScore]:
    scores = []
    for spec in data.labels:
        smallest_class = int(torch.bincount(data.train_labels[spec.name], minlength=spec.num_classes).min())
        for shots in protocol.shots:
            if shots > smallest_class:
                warnings.warn(f"skipping the {shots}-shot {spec.name} probe: a class has only {smallest_class} "
                              f"of the {len(data.train_labels[spec.name])} probe training clips", stacklevel=2)
                continue
            r = low_shot_probe(train_x, data.train_labels[spec.name], test_x, data.test_labels[spec.name],
                               num_classes=spec.num_classes, shots=shots or None, draws=protocol.draws)
            scores.append(ProbeScore("linear", pooling, spec.name, shots, "lbfgs", r["accuracy"], r["std"],
                                     draws=r["draws"], details={"weight_decays": r["weight_decays"],
                                                                "accuracies": r["accuracies"]}))
    return scores


def _knn_scores(train_x, test_x, data: ProbeData, protocol: EvalProtocol, pooling: str) -> list[ProbeScore]:
    return [ProbeScore("knn", pooling, spec.name, 0, f"k={protocol.knn_k}",
                       knn_probe(train_x, data.train_labels[spec.name], test_x, data.test_labels[spec.name],
                                 num_classes=spec.num_classes, k=protocol.knn_k))
            for spec in data.labels]


def encoder_scores(encoder: VideoViT, data: ProbeData, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """Label-free metrics and every probe for one frozen encoder. The encoder runs once per clip set.

    Multi-clip x multi-view test videos ([N, V, C, T, H, W], from video lists with eval_clips > 1): the
    attentive probe averages its logits over the V views; linear and k-NN probes average pooled features."""
    encoder = encoder.eval()
    train_tokens = extract_features(encoder, data.train_videos, batch_size=512)
    views = data.test_videos.shape[1] if data.test_videos.dim() == 6 else 0
    test_tokens = extract_features(encoder, data.test_videos.flatten(0, 1) if views else data.test_videos, 512)
    grid = encoder.grid
    train_time, test_time = pool_tokens(train_tokens, grid, "time"), pool_tokens(test_tokens, grid, "time")
    if views:
        test_tokens = test_tokens.unflatten(0, (-1, views))
        test_time = test_time.unflatten(0, (-1, views)).mean(dim=1)
    train_mean = pool_tokens(train_tokens, grid, "mean")
    n = min(protocol.metric_clips, len(train_mean))
    # LiDAR's surrogate class: the clip itself (already encoded) and lidar_views - 1 shifted copies of it
    shifted = shifted_views(data.train_videos[:n], protocol.lidar_views - 1, max_shift=max(1, encoder.patch_size // 2))
    shifted_embeddings = extract_features(lambda v: pool_tokens(encoder(v), grid, "mean"), shifted.flatten(0, 1),
                                          batch_size=256).reshape(n, protocol.lidar_views - 1, -1)
    view_embeddings = torch.cat([train_mean[:n, None], shifted_embeddings], dim=1)
    spectrum = alpha_req(train_mean[:n])
    metrics = {"rankme": rankme(train_mean[:n]), "rankme_time": rankme(train_time[:n]),
               "lidar": lidar(view_embeddings), "alpha_req": spectrum.alpha, "alpha_req_r2": spectrum.r2}
    test_mean = pool_tokens(test_tokens.flatten(0, 1) if views else test_tokens, grid, "mean")
    if views:
        test_mean = test_mean.unflatten(0, (-1, views)).mean(dim=1)
    pooled = {"time": (train_time, test_time), "mean": (train_mean, test_mean)}
    probes = [s for how in protocol.linear_poolings for s in _linear_scores(*pooled[how], data, protocol, how)]
    probes += _knn_scores(train_time, test_time, data, protocol, "time")
    if protocol.attentive != "none":
        m = protocol.attentive_train_clips
        for spec in data.labels:
            r = fit_attentive_probes(train_tokens[:m], data.train_labels[spec.name][:m], test_tokens,
                                     data.test_labels[spec.name], num_classes=spec.num_classes,
                                     protocol=protocol.attentive, epochs=protocol.attentive_epochs,
                                     self_attn_depth=protocol.attentive_self_attn_depth,
                                     batch_size=min(protocol.attentive_batch_size, m))
            probes.append(ProbeScore("attentive", "tokens", spec.name, 0, protocol.attentive, r["test_accuracy"],
                                     selection_score=r["val_accuracy"],
                                     details={"selected": r["selected"], "per_head": r["per_head"],
                                              "epochs": r["epochs"], "train_clips": m}))
    return metrics, probes


def pixel_scores(data: ProbeData, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """The raw-pixel baseline: the same probes on flattened clips."""
    test = data.test_videos
    train_x, test_x = data.train_videos.flatten(1), (test.flatten(2).mean(1) if test.dim() == 6 else test.flatten(1))
    n = min(protocol.metric_clips, len(train_x))
    probes = _linear_scores(train_x, test_x, data, protocol, "pixels") + _knn_scores(train_x, test_x, data,
                                                                                     protocol, "pixels")
    return {"rankme": rankme(train_x[:n])}, probes


def restored_objective(cfg: RunConfig, state: dict, geometry: ClipGeometry):
    """The run's objective (encoder, predictor/decoder, target network) with the checkpoint's weights."""
    objective = build_objective(cfg, geometry)
    for name, module in objective.saved().items():
        load_matching(module, state["models"][name], f"checkpoint of {state['run_id']} ({name})")
    return objective.eval()


@torch.no_grad()
def heldout_loss(objective, cfg: RunConfig, test_set, protocol: EvalProtocol) -> float:
    """The run's own objective on the first test clips with fixed masks (the same for every run and
    checkpoint), so losses are comparable along a run and across runs."""
    videos, _ = clips_and_labels(test_set, protocol.heldout_clips)
    masks = build_mask_generator(cfg.mask, objective.encoder.grid)
    losses = []
    for i, start in enumerate(range(0, len(videos), 64)):
        batch = {"video": videos[start:start + 64]}
        batch["masks"] = masks(len(batch["video"]), torch.Generator().manual_seed(HELDOUT_MASK_SEED + i))
        losses.append(float(objective.loss(batch, 0)["loss"]) * len(batch["video"]))
    return sum(losses) / len(videos)


def evaluate_run(run_dir: str | Path, step: int | None = None, protocol: str | EvalProtocol = "fast",
                 data: ProbeData | None = None) -> EvalRecord:
    """Evaluate a run's checkpoint (latest if `step` is None) and write its record into run_dir/evals/."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    state = load_checkpoint(RunLayout(run_dir).checkpoint(step) if step is not None else run_dir)
    cfg = from_dict(RunConfig, state["config"])
    proto = eval_protocol(protocol)
    data = data or load_probe_data(cfg.data, proto)
    test_set, geometry = build_dataset(cfg.data, "test")
    objective = restored_objective(cfg, state, geometry)
    method = get_method(cfg.objective.method)
    encoder = getattr(objective, method.probed)
    metrics, probes = encoder_scores(encoder, data, proto)
    teacher_run_id, teacher_step = objective.teacher_source
    summary_losses = {"heldout": heldout_loss(objective, cfg, test_set, proto)}
    record = EvalRecord(
        run_id=state["run_id"], method=method.name, stage=method.stage, checkpoint_step=int(state["step"]),
        steps_total=cfg.train.steps, evaluation=proto.name, seed=cfg.train.seed,
        config_hash=config_hash(cfg, exclude=NON_SEMANTIC_KEYS), code_version=code_version(),
        model_size=cfg.model.size, params={"encoder": sum(p.numel() for p in encoder.parameters())},
        teacher_run_id=teacher_run_id, teacher_step=teacher_step,
        flops_teacher_stage=float(state["flops_total"]) - float(state["flops"]), flops_run=float(state["flops"]),
        flops_total=float(state["flops_total"]), losses=summary_losses, metrics=metrics, probes=probes,
        wall_time_s=time.perf_counter() - t0, hardware=hardware_description())
    return read_record(write_record(run_dir, record))   # as stored (created_at filled in)


def baseline_run_id(kind: str, cfg: RunConfig) -> str:
    """One baseline per data (raw pixels) or per data and model (random init): reused by every run on them."""
    if kind not in ("random_init", "raw_pixels"):
        raise ValueError(f"baseline must be 'random_init' or 'raw_pixels', got {kind!r}")
    data = dataclasses.replace(cfg.data, moving_digits=dataclasses.replace(cfg.data.moving_digits, cache_dir=""),
                               num_workers=0)   # where data is cached or how it is loaded changes no score
    key = config_hash(data) if kind == "raw_pixels" else config_hash(data) + "-" + config_hash(cfg.model)
    return f"{kind}-{key}"


def evaluate_baseline(kind: str, cfg: RunConfig, out_dir: str | Path, protocol: str | EvalProtocol = "fast",
                      data: ProbeData | None = None) -> EvalRecord:
    """Random-init encoder of cfg.model's size, or raw pixels, on cfg.data: evaluated once per (data, model,
    protocol) and reused from out_dir/baselines/ afterwards."""
    layout = RunLayout.baseline(out_dir, baseline_run_id(kind, cfg))
    proto = eval_protocol(protocol)
    path = layout.record(0, proto.name)
    if path.exists():
        return read_record(path)
    t0 = time.perf_counter()
    data = data or load_probe_data(cfg.data, proto)
    _, geometry = build_dataset(cfg.data, "test")
    if kind == "raw_pixels":
        metrics, probes = pixel_scores(data, proto)
        params = {}
    else:
        encoder = random_encoder(cfg, geometry, seed=cfg.train.seed)
        metrics, probes = encoder_scores(encoder, data, proto)
        params = {"encoder": sum(p.numel() for p in encoder.parameters())}
    record = EvalRecord(run_id=layout.root.name, method=kind, stage="baseline", checkpoint_step=0, steps_total=0,
                        evaluation=proto.name, seed=cfg.train.seed, code_version=code_version(),
                        model_size=cfg.model.size if kind == "random_init" else "", params=params, metrics=metrics,
                        probes=probes, wall_time_s=time.perf_counter() - t0, hardware=hardware_description())
    return read_record(write_record(layout.root, record))   # as stored (created_at filled in)
