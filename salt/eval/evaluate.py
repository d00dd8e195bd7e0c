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
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from salt.checkpoint import load_checkpoint, load_matching
from salt.config import config_hash, from_dict
from salt.data import ClipGeometry, build_dataset, label_specs
from salt.eval.attentive import fit_attentive_probes
from salt.eval.knn import knn_probe
from salt.eval.probes import ProbeResult, extract_features, low_shot_probe, pool_tokens
from salt.eval.record import (EvalRecord, ProbeScore, code_version, hardware_description, read_record,
                              train_losses, write_record)
from salt.eval.spectral import alpha_req, lidar, rankme
from salt.masks import build_mask_generator
from salt.layout import RunLayout, read_metrics
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


@dataclass(frozen=True)
class ProbeTask:
    """One probe of an evaluation: the record's name for it and the call that scores it."""
    probe: str                         # "linear" | "knn" | "attentive"
    pooling: str                       # "time" | "mean" | "tokens" | "pixels"
    label: str
    shots: int                         # labelled clips per class; 0 = all
    protocol: str                      # "lbfgs", "k=20", the attentive head grid
    run: Callable[[], ProbeResult]

    def score(self) -> ProbeScore:
        """The one place a probe's result becomes a record's score."""
        r = self.run()
        return ProbeScore(self.probe, self.pooling, self.label, self.shots, self.protocol, r.accuracy, r.std,
                          r.selection_score, r.draws, r.details)


def _linear_probes(train_x, test_x, pooling: str, data: ProbeData, protocol: EvalProtocol) -> list[ProbeTask]:
    """Low-shot and all-label linear probes of every label; a shot count above a class's clip count is skipped."""
    tasks = []
    for spec in data.labels:
        train_y, test_y = data.train_labels[spec.name], data.test_labels[spec.name]
        smallest_class = int(torch.bincount(train_y, minlength=spec.num_classes).min())
        for shots in protocol.shots:
            if shots > smallest_class:
                warnings.warn(f"skipping the {shots}-shot {spec.name} probe: a class has only {smallest_class} "
                              f"of the {len(train_y)} probe training clips", stacklevel=2)
                continue
            tasks.append(ProbeTask("linear", pooling, spec.name, shots, "lbfgs",
                                   partial(low_shot_probe, train_x, train_y, test_x, test_y,
                                           num_classes=spec.num_classes, shots=shots or None, draws=protocol.draws)))
    return tasks


def _knn_probes(train_x, test_x, pooling: str, data: ProbeData, protocol: EvalProtocol) -> list[ProbeTask]:
    return [ProbeTask("knn", pooling, spec.name, 0, f"k={protocol.knn_k}",
                      partial(knn_probe, train_x, data.train_labels[spec.name], test_x, data.test_labels[spec.name],
                              num_classes=spec.num_classes, k=protocol.knn_k))
            for spec in data.labels]


def _attentive_probes(train_tokens, test_tokens, data: ProbeData, protocol: EvalProtocol) -> list[ProbeTask]:
    if protocol.attentive == "none":
        return []
    m = protocol.attentive_train_clips
    return [ProbeTask("attentive", "tokens", spec.name, 0, protocol.attentive,
                      partial(fit_attentive_probes, train_tokens[:m], data.train_labels[spec.name][:m], test_tokens,
                              data.test_labels[spec.name], num_classes=spec.num_classes, protocol=protocol.attentive,
                              epochs=protocol.attentive_epochs, self_attn_depth=protocol.attentive_self_attn_depth,
                              batch_size=min(protocol.attentive_batch_size, m)))
            for spec in data.labels]


def _view_rows(test_videos: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Test clips [M, V, C, T, H, W] (video lists with eval_clips > 1) as rows [M*V, C, T, H, W], and V;
    clips without a view axis unchanged, with V = 0."""
    if test_videos.dim() == 6:
        return test_videos.flatten(0, 1), test_videos.shape[1]
    return test_videos, 0


def average_views(rows: torch.Tensor, views: int) -> torch.Tensor:
    """Per-view rows [M*V, ...] -> per-clip [M, ...], the mean of each clip's V views (V = 0: unchanged). The one
    place features of multi-view clips are averaged; attentive probes average their logits instead."""
    return rows.unflatten(0, (-1, views)).mean(dim=1) if views else rows


@dataclass
class EncodedClips:
    """One frozen encoder's features of the probe clips, computed once and read by every metric and probe."""
    train_tokens: torch.Tensor                          # [N, tokens, D]
    test_tokens: torch.Tensor                           # [M, tokens, D], or [M, V, tokens, D] with views
    pooled: dict[str, tuple[torch.Tensor, torch.Tensor]]   # "time" / "mean" -> (train, test), test views averaged


def encode_clips(encoder: VideoViT, data: ProbeData) -> EncodedClips:
    """Run the encoder once per clip set and pool its tokens per clip."""
    encoder = encoder.eval()
    train_tokens = extract_features(encoder, data.train_videos, batch_size=512)
    test_rows, views = _view_rows(data.test_videos)
    test_tokens = extract_features(encoder, test_rows, batch_size=512)
    pooled = {how: (pool_tokens(train_tokens, encoder.grid, how),
                    average_views(pool_tokens(test_tokens, encoder.grid, how), views)) for how in ("time", "mean")}
    return EncodedClips(train_tokens, test_tokens.unflatten(0, (-1, views)) if views else test_tokens, pooled)


def encoder_metrics(encoder: VideoViT, encoded: EncodedClips, data: ProbeData, protocol: EvalProtocol) -> dict:
    """Label-free metrics on the first `metric_clips` train clips: RankMe (mean- and time-pooled), alpha-ReQ,
    and LiDAR, whose surrogate class is a clip (already encoded) and lidar_views - 1 shifted copies of it."""
    train_mean, train_time = encoded.pooled["mean"][0], encoded.pooled["time"][0]
    n = min(protocol.metric_clips, len(train_mean))
    shifted = shifted_views(data.train_videos[:n], protocol.lidar_views - 1, max_shift=max(1, encoder.patch_size // 2))
    shifted_embeddings = extract_features(lambda v: pool_tokens(encoder(v), encoder.grid, "mean"),
                                          shifted.flatten(0, 1), batch_size=256)
    shifted_embeddings = shifted_embeddings.reshape(n, protocol.lidar_views - 1, -1)
    view_embeddings = torch.cat([train_mean[:n, None], shifted_embeddings], dim=1)
    spectrum = alpha_req(train_mean[:n])
    return {"rankme": rankme(train_mean[:n]), "rankme_time": rankme(train_time[:n]),
            "lidar": lidar(view_embeddings), "alpha_req": spectrum.alpha, "alpha_req_r2": spectrum.r2}


def encoder_scores(encoder: VideoViT, data: ProbeData, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """Label-free metrics and every probe for one frozen encoder: encode once -> pooled features -> metrics ->
    probes (linear on each of the protocol's poolings, k-NN on time-pooled features, attentive on tokens)."""
    encoded = encode_clips(encoder, data)
    metrics = encoder_metrics(encoder, encoded, data, protocol)
    tasks = [t for how in protocol.linear_poolings for t in _linear_probes(*encoded.pooled[how], how, data, protocol)]
    tasks += _knn_probes(*encoded.pooled["time"], "time", data, protocol)
    tasks += _attentive_probes(encoded.train_tokens, encoded.test_tokens, data, protocol)
    return metrics, [t.score() for t in tasks]


def pixel_scores(data: ProbeData, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """The raw-pixel baseline: RankMe and the same linear and k-NN probes on flattened clips."""
    test_rows, views = _view_rows(data.test_videos)
    train_x, test_x = data.train_videos.flatten(1), average_views(test_rows.flatten(1), views)
    n = min(protocol.metric_clips, len(train_x))
    tasks = _linear_probes(train_x, test_x, "pixels", data, protocol) + _knn_probes(train_x, test_x, "pixels", data,
                                                                                    protocol)
    return {"rankme": rankme(train_x[:n])}, [t.score() for t in tasks]


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
    videos, _ = _view_rows(videos)   # every clip of a multi-clip test video (video lists) is a clip here
    masks = build_mask_generator(cfg.mask, objective.encoder.grid)
    losses = []
    for i, start in enumerate(range(0, len(videos), 64)):
        batch = {"video": videos[start:start + 64]}
        batch["masks"] = masks(len(batch["video"]), torch.Generator().manual_seed(HELDOUT_MASK_SEED + i))
        losses.append(float(objective.loss(batch, 0)["loss"]) * len(batch["video"]))
    return sum(losses) / len(videos)


def logged_train_losses(layout: RunLayout, step: int, steps_total: int) -> dict[str, float]:
    """losses["train"] and ["train_early"] of a checkpoint from the run's metrics log (salt.eval.record.train_losses):
    the training loss itself, the paper's teacher-selection signal; none when the run kept no log."""
    return train_losses(read_metrics(layout.metrics), step, steps_total) if layout.metrics.is_file() else {}


def evaluate_run(run_dir: str | Path, step: int | None = None, protocol: str | EvalProtocol = "fast",
                 data: ProbeData | None = None) -> EvalRecord:
    """Evaluate a run's checkpoint (latest if `step` is None) and write its record into run_dir/evals/."""
    run_dir, layout = Path(run_dir), RunLayout(run_dir)
    t0 = time.perf_counter()
    state = load_checkpoint(layout.checkpoint(step) if step is not None else run_dir)
    cfg = from_dict(RunConfig, state["config"])
    proto = eval_protocol(protocol)
    data = data or load_probe_data(cfg.data, proto)
    test_set, geometry = build_dataset(cfg.data, "test")
    objective = restored_objective(cfg, state, geometry)
    method = get_method(cfg.objective.method)
    encoder = getattr(objective, method.probed)
    metrics, probes = encoder_scores(encoder, data, proto)
    teacher_run_id, teacher_step = objective.teacher_source
    summary_losses = {"heldout": heldout_loss(objective, cfg, test_set, proto),
                      **logged_train_losses(layout, int(state["step"]), cfg.train.steps)}
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
