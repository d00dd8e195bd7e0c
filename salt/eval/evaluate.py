"""Evaluate a run's frozen encoder (or a baseline) and write one EvalRecord per (run, checkpoint, evaluation,
benchmark).

Every evaluation measures the same things the SALT and V-JEPA papers do, without their selection bias:
label-free metrics (RankMe, LiDAR, alpha-ReQ), the held-out loss of the run's own objective on fixed clips
and masks, and probes (linear on time-pooled features, low-shot and full; k-NN; attentive). With the default
`strict` selection hyperparameters are chosen on a held-out part of the probe's training set and the test split
is scored once; `paper` selection reports the best of the grid on test, as V-JEPA 2 publishes (optimistic).

Two kinds of probe data: the default benchmark (the run's own data, the embedded moving digits: small clips held
in memory, `ProbeData`) and named benchmarks (salt.eval.benchmark: video lists streamed through DataLoader
workers into an on-disk fp16 feature cache, salt.eval.cache; the probes train on the cached features).
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
from salt.config import from_dict
from salt.data import DATA_COUNTERS, ClipGeometry, LabelSpec, build_dataset, label_specs
from salt.data.video import VideoListDataset
from salt.eval.attentive import fit_attentive_probes
from salt.eval.benchmark import (BenchmarkConfig, check_fits, draw_count, load_benchmark, probe_rows,
                                 read_lists)
from salt.eval.cache import cache_key, encoder_fingerprint, extract_split, resolve_device
from salt.eval.knn import knn_probe
from salt.eval.probes import (ProbeResult, check_selection, extract_features, low_shot_probe, pool_tokens,
                              stratified_subset)
from salt.eval.record import (EvalRecord, ProbeScore, code_version, hardware_description, read_record,
                              train_losses, write_record)
from salt.eval.spectral import alpha_req, lidar, rankme
from salt.identity import BASELINE_KINDS, config_hash, run_id
from salt.masks import build_mask_generator
from salt.layout import DEFAULT_BENCHMARK, RunLayout, read_metrics
from salt.models import VideoViT
from salt.objectives import build_network, build_objective, get_method
from salt.runlock import hold as hold_run
from salt.schema import RunConfig

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
    attentive_self_attn_depth: int = 0  # 0 on CPU (one cross-attention block); the paper's probe has 3 (4 blocks)
    attentive_num_heads: int = 4       # attention heads of the probe's blocks (V-JEPA 2's probe: 16)
    selection: str = "strict"          # strict | paper (salt.eval.probes.check_selection)
    knn_k: int = 20
    metric_clips: int = 512            # clips for RankMe / alpha-ReQ / LiDAR
    lidar_views: int = 2               # views per surrogate class: the clip + (lidar_views - 1) shifted copies
    heldout_clips: int = 128

    def __post_init__(self):
        if self.lidar_views < 2:
            raise ValueError(f"lidar_views must be >= 2 (a clip and at least one view of it), got {self.lidar_views}")
        check_selection(self.selection)


EVAL_PROTOCOLS = {
    "fast": EvalProtocol(),
    # seconds, for tests and smoke runs: exercises every measurement on few clips
    "smoke": EvalProtocol(name="smoke", probe_train_clips=200, probe_test_clips=100, shots=[10, 0], draws=1,
                          attentive_train_clips=200, attentive_epochs=1, metric_clips=100, lidar_views=2,
                          heldout_clips=32),
    "systematic": EvalProtocol(name="systematic", probe_train_clips=3000, draws=5, linear_poolings=["time", "mean"],
                               attentive="systematic", attentive_train_clips=3000, attentive_epochs=20, attentive_batch_size=256,
                               attentive_self_attn_depth=3, attentive_num_heads=16, probe_test_clips=2000, metric_clips=1024,
                               lidar_views=4),
}


def eval_protocol(name: str | EvalProtocol, selection: str | None = None) -> EvalProtocol:
    """A protocol by name (or as given); `selection="paper"` gives its paper-selection variant, named
    "<name>-paper" so its records stand beside the strict ones."""
    if isinstance(name, EvalProtocol):
        proto = name
    elif name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid: {', '.join(EVAL_PROTOCOLS)}")
    else:
        proto = EVAL_PROTOCOLS[name]
    if selection is None or check_selection(selection) == proto.selection:
        return proto
    if proto.selection != "strict":
        raise ValueError(f"protocol {proto.name!r} already has selection {proto.selection!r}")
    return dataclasses.replace(proto, name=f"{proto.name}-paper", selection="paper")


def resolve_benchmark(benchmark: str | BenchmarkConfig | None) -> BenchmarkConfig | None:
    """None or "default": the run's own data; a name / YAML path: a loaded benchmark; a config: checked."""
    if benchmark is None or benchmark == DEFAULT_BENCHMARK:
        return None
    if isinstance(benchmark, BenchmarkConfig):
        return benchmark.check()
    return load_benchmark(benchmark)


def benchmark_name(benchmark: BenchmarkConfig | None) -> str:
    return DEFAULT_BENCHMARK if benchmark is None else benchmark.name


def random_encoder(cfg: RunConfig, geometry: ClipGeometry, seed: int) -> VideoViT:
    """A random-init encoder of the same size and init scheme: the baseline every encoder must beat."""
    with torch.random.fork_rng(devices=[]):   # leaves the caller's RNG stream untouched
        torch.manual_seed(seed)
        return build_network(cfg.model, geometry).eval()


def clips_and_labels(dataset, rows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clips `rows` (a count: the first ones; or indices) of a dataset as one tensor, each label as a tensor."""
    rows = range(min(rows, len(dataset))) if isinstance(rows, int) else rows
    items = [dataset[(int(i), 0)] for i in rows]
    videos = torch.stack([it["video"] for it in items])
    labels = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "video" and k not in DATA_COUNTERS}
    return videos, labels


def class_keys(dataset) -> torch.Tensor:
    """One class id per item of a default-benchmark dataset, to stratify draws on: the joint (appearance, motion)
    class of moving digits, the label of a video list."""
    if isinstance(dataset, VideoListDataset):
        return torch.tensor(dataset.labels)
    motion = dataset.motion.long()
    return dataset.appearance.long() * (int(motion.max()) + 1) + motion


@dataclass
class ProbeData:
    """Clips and labels for probing, loaded once per dataset and shared by every encoder."""
    train_videos: torch.Tensor
    train_labels: dict[str, torch.Tensor]
    test_videos: torch.Tensor
    test_labels: dict[str, torch.Tensor]
    labels: list                      # LabelSpec per label; none: label-free metrics only


@dataclass
class ProbeLabels:
    """What the probe builders read: the label specs and each split's labels (ProbeData has the same fields)."""
    train_labels: dict[str, torch.Tensor]
    test_labels: dict[str, torch.Tensor]
    labels: list


PROBE_DRAW_SEED = 0   # stratified draws of the default benchmark's probe clips


def load_probe_data(data_cfg, protocol: EvalProtocol) -> ProbeData:
    """The default benchmark's probe clips: stratified draws (by class, seeded) of the train and test splits.
    A video-list run's own data has no separate probe split (probes need a benchmark): its clips (eval
    transforms, first view) serve the label-free metrics only, and no probe is trained on them."""
    test_set, _ = build_dataset(data_cfg, "test")
    if data_cfg.source == "video_list":
        rows = stratified_subset(class_keys(test_set), protocol.metric_clips, PROBE_DRAW_SEED)
        videos, _ = clips_and_labels(test_set, rows)
        videos = videos[:, 0] if videos.dim() == 6 else videos
        return ProbeData(videos, {}, videos[:0], {}, [])
    train_set, _ = build_dataset(data_cfg, "train")
    train_rows = stratified_subset(class_keys(train_set), protocol.probe_train_clips, PROBE_DRAW_SEED)
    test_rows = stratified_subset(class_keys(test_set), protocol.probe_test_clips, PROBE_DRAW_SEED)
    train_videos, train_labels = clips_and_labels(train_set, train_rows)
    test_videos, test_labels = clips_and_labels(test_set, test_rows)
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


def _linear_probes(train_x, test_x, pooling: str, data: ProbeLabels, protocol: EvalProtocol) -> list[ProbeTask]:
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
                                           num_classes=spec.num_classes, shots=shots or None, draws=protocol.draws,
                                           selection=protocol.selection)))
    return tasks


def _knn_probes(train_x, test_x, pooling: str, data: ProbeLabels, protocol: EvalProtocol) -> list[ProbeTask]:
    return [ProbeTask("knn", pooling, spec.name, 0, f"k={protocol.knn_k}",
                      partial(knn_probe, train_x, data.train_labels[spec.name], test_x, data.test_labels[spec.name],
                              num_classes=spec.num_classes, k=protocol.knn_k))
            for spec in data.labels]


def _attentive_probes(train_tokens, test_tokens, data: ProbeLabels, protocol: EvalProtocol,
                      rows: torch.Tensor | None = None) -> list[ProbeTask]:
    """Attentive probes of every label on the train tokens `rows` (None: every row of train_tokens, which are
    then the probe's clips already, e.g. the feature cache's token rows)."""
    if protocol.attentive == "none":
        return []
    tokens = train_tokens if rows is None else train_tokens[rows]
    m = len(tokens)
    return [ProbeTask("attentive", "tokens", spec.name, 0, protocol.attentive,
                      partial(fit_attentive_probes, tokens,
                              data.train_labels[spec.name][:m] if rows is None else data.train_labels[spec.name][rows],
                              test_tokens, data.test_labels[spec.name], num_classes=spec.num_classes,
                              protocol=protocol.attentive, epochs=protocol.attentive_epochs,
                              self_attn_depth=protocol.attentive_self_attn_depth,
                              num_heads=protocol.attentive_num_heads, selection=protocol.selection,
                              batch_size=min(protocol.attentive_batch_size, m)))
            for spec in data.labels]


def attentive_rows(data: ProbeLabels, protocol: EvalProtocol) -> torch.Tensor:
    """The attentive probe's clips of the default benchmark: a stratified draw (first label) of the train clips."""
    first = data.train_labels[data.labels[0].name]
    return stratified_subset(first, protocol.attentive_train_clips, PROBE_DRAW_SEED + 1)


def check_protocol_fits(encoder: VideoViT, protocol: EvalProtocol) -> None:
    """The attentive probe's heads must divide the feature width: checked before anything is encoded."""
    if protocol.attentive != "none" and encoder.embed_dim % protocol.attentive_num_heads:
        raise ValueError(f"protocol {protocol.name}: attentive_num_heads={protocol.attentive_num_heads} does not "
                         f"divide the encoder's width {encoder.embed_dim}")


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


def spectral_metrics(train_mean: torch.Tensor, train_time: torch.Tensor, n: int) -> dict:
    """RankMe (mean- and time-pooled) and alpha-ReQ of the first n clips' features."""
    spectrum = alpha_req(train_mean[:n])
    return {"rankme": rankme(train_mean[:n]), "rankme_time": rankme(train_time[:n]), "alpha_req": spectrum.alpha,
            "alpha_req_r2": spectrum.r2}


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
    return {**spectral_metrics(train_mean, train_time, n), "lidar": lidar(view_embeddings)}


def probe_scores(pooled: dict[str, tuple[torch.Tensor, torch.Tensor]], train_tokens, test_tokens,
                 data: ProbeLabels, protocol: EvalProtocol, attentive_train_rows=None) -> list[ProbeScore]:
    """Every probe of one encoder's features: linear on each of the protocol's poolings, k-NN on time-pooled
    features, attentive on tokens (rows `attentive_train_rows` of train_tokens, or all of them)."""
    tasks = [t for how in protocol.linear_poolings for t in _linear_probes(*pooled[how], how, data, protocol)]
    tasks += _knn_probes(*pooled["time"], "time", data, protocol)
    tasks += _attentive_probes(train_tokens, test_tokens, data, protocol, attentive_train_rows)
    return [t.score() for t in tasks]


def encoder_scores(encoder: VideoViT, data: ProbeData, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """Label-free metrics and every probe for one frozen encoder on the default benchmark: encode once -> pooled
    features -> metrics -> probes. Data without labels (a video-list run's own clips) gets the metrics only."""
    check_protocol_fits(encoder, protocol)
    if not data.labels:
        encoder = encoder.eval()
        tokens = extract_features(encoder, data.train_videos, batch_size=512)
        pooled = {how: (pool_tokens(tokens, encoder.grid, how), None) for how in ("time", "mean")}
        return encoder_metrics(encoder, EncodedClips(tokens, tokens[:0], pooled), data, protocol), []
    encoded = encode_clips(encoder, data)
    metrics = encoder_metrics(encoder, encoded, data, protocol)
    rows = attentive_rows(data, protocol) if protocol.attentive != "none" else None
    return metrics, probe_scores(encoded.pooled, encoded.train_tokens, encoded.test_tokens, data, protocol, rows)


def benchmark_scores(encoder: VideoViT, bench: BenchmarkConfig, protocol: EvalProtocol, layout: RunLayout,
                     device=None) -> tuple[dict, list[ProbeScore]]:
    """Label-free metrics and every probe of one frozen encoder on a named benchmark. Lists and clip settings are
    checked first; the probes' videos (stratified draws) are streamed into the feature cache under `layout`
    (reused when complete, resumed when not), and the probes train on the cached features. Linear and k-NN
    probes see each video's features averaged over its views; the attentive probe averages its logits over the
    test views. LiDAR needs several views of a clip: it is computed when train_views has two or more."""
    lists = read_lists(bench)
    check_fits(bench, encoder)
    check_protocol_fits(encoder, protocol)
    p = bench.probe
    n_train = draw_count(p.train_clips, protocol.probe_train_clips, len(lists.train))
    n_test = draw_count(p.test_clips, protocol.probe_test_clips, len(lists.val))
    n_attentive = 0 if protocol.attentive == "none" else draw_count(p.attentive_train_clips,
                                                                    protocol.attentive_train_clips, n_train)
    train_rows, val_rows, m = probe_rows(lists, bench, n_train, n_test, n_attentive)
    device = resolve_device(device)
    encoder = encoder.eval().to(device)
    fingerprint = encoder_fingerprint(encoder)
    cached = {}
    for split, rows, entries, token_rows in (("train", train_rows, lists.train, m),
                                             ("val", val_rows, lists.val, len(val_rows) if m else 0)):
        clip_cfg = bench.split_config(split)
        description = {"encoder": fingerprint, "benchmark": bench.name, "split": split,
                       "clip": dataclasses.asdict(clip_cfg), "token_rows": token_rows,
                       "videos": [(entries[i].path, entries[i].label) for i in rows]}
        cache = layout.feature_cache(bench.name, split, cache_key(description))
        cached[split] = extract_split(encoder, encoder.grid, VideoListDataset(clip_cfg, train=False), rows, cache,
                                      description, views=clip_cfg.eval_clips * clip_cfg.eval_crops,
                                      token_rows=token_rows, shard_size=bench.shard_size,
                                      batch_size=bench.batch_size, num_workers=bench.num_workers, device=device)
    train, val = cached["train"], cached["val"]
    data = ProbeLabels({"label": train.labels}, {"label": val.labels}, [LabelSpec("label", lists.num_classes)])
    pooled = {how: (train.averaged(how), val.averaged(how)) for how in ("time", "mean")}
    n = min(protocol.metric_clips, len(train.labels))
    metrics = spectral_metrics(pooled["mean"][0], pooled["time"][0], n)
    if train.pooled["mean"].shape[1] >= 2:
        metrics["lidar"] = lidar(train.pooled["mean"][:n].float())
    if protocol.attentive != "none":
        protocol = dataclasses.replace(protocol, attentive_epochs=p.attentive_epochs or protocol.attentive_epochs,
                                       attentive_batch_size=p.attentive_batch_size or protocol.attentive_batch_size)
    probes = probe_scores(pooled, train.tokens, val.tokens, data, protocol)
    for score in probes:
        score.details.update(train_videos=len(train.labels), test_videos=len(val.labels),
                             train_views=train.pooled["mean"].shape[1], test_views=val.pooled["mean"].shape[1],
                             decode_failures=train.decode_failures + val.decode_failures)
    return metrics, probes


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


ENCODER_CHOICES = ("default", "online", "ema")


def probed_encoder(objective, method, choice: str = "default") -> tuple[VideoViT, str]:
    """The encoder an evaluation probes and its record name: a method with an EMA copy (V-JEPA's target encoder,
    what V-JEPA's own evaluation loads) is probed through it by default ("ema"), its online encoder on request
    ("online"); other methods have their trained encoder only."""
    if choice not in ENCODER_CHOICES:
        raise ValueError(f"encoder must be one of {', '.join(ENCODER_CHOICES)}; got {choice!r}")
    if choice == "ema" and not method.ema:
        raise ValueError(f"method {method.name!r} keeps no EMA encoder: evaluate its online encoder")
    if method.ema and choice != "online":
        return getattr(objective, method.ema), "ema"
    return getattr(objective, method.probed), "online"


def evaluation_name(protocol: EvalProtocol, method, encoder: str) -> str:
    """The record's evaluation name: the protocol's, with "-online" when a method with an EMA encoder is probed
    through its online one (so both records stand side by side)."""
    return protocol.name + ("-online" if method.ema and encoder == "online" else "")


def evaluate_run(run_dir: str | Path, step: int | None = None, protocol: str | EvalProtocol = "fast",
                 data: ProbeData | None = None, *, benchmark: str | BenchmarkConfig | None = None,
                 selection: str | None = None, encoder: str = "default") -> EvalRecord:
    """Evaluate a run's checkpoint (latest if `step` is None) on a benchmark (None: the default, the run's own
    data) and write its record into run_dir/evals/. `selection` "paper" evaluates the protocol's paper-selection
    variant; `encoder` picks V-JEPA's EMA ("default", "ema") or online encoder. Bad settings fail before any
    clip is encoded. Holds the run folder's lock (salt.runlock; a training job's periodic evaluation shares its
    job's): while another job trains or evaluates the run, this fails with RunLockedError naming it."""
    with hold_run(run_dir, "evaluate", create=False):
        return _evaluate_run(Path(run_dir), step, protocol, data, benchmark, selection, encoder)


def _evaluate_run(run_dir: Path, step, protocol, data, benchmark, selection, encoder) -> EvalRecord:
    layout = RunLayout(run_dir)
    t0 = time.perf_counter()
    proto = eval_protocol(protocol, selection)
    bench = resolve_benchmark(benchmark)
    state = load_checkpoint(layout.checkpoint(step) if step is not None else run_dir)
    cfg = from_dict(RunConfig, state["config"])
    test_set, geometry = build_dataset(cfg.data, "test")
    objective = restored_objective(cfg, state, geometry)
    method = get_method(cfg.objective.method)
    probed, which = probed_encoder(objective, method, encoder)
    losses = logged_train_losses(layout, int(state["step"]), cfg.train.steps)
    if bench is None:
        data = data or load_probe_data(cfg.data, proto)
        metrics, probes = encoder_scores(probed, data, proto)
        losses["heldout"] = heldout_loss(objective, cfg, test_set, proto)
    else:   # the held-out loss is the run's objective on its own data: the default benchmark's
        metrics, probes = benchmark_scores(probed, bench, proto, layout)
    teacher_run_id, teacher_step = objective.teacher_source
    record = EvalRecord(
        run_id=state["run_id"], method=method.name, stage=method.stage, checkpoint_step=int(state["step"]),
        steps_total=cfg.train.steps, evaluation=evaluation_name(proto, method, which), seed=cfg.train.seed,
        config_hash=config_hash(cfg), code_version=code_version(),
        model_size=cfg.model.size, params={"encoder": sum(p.numel() for p in probed.parameters())},
        teacher_run_id=teacher_run_id, teacher_step=teacher_step,
        flops_teacher_stage=float(state["flops_total"]) - float(state["flops"]), flops_run=float(state["flops"]),
        flops_total=float(state["flops_total"]), losses=losses, metrics=metrics, probes=probes,
        wall_time_s=time.perf_counter() - t0, hardware=hardware_description(), benchmark=benchmark_name(bench),
        selection=proto.selection, encoder=which)
    return read_record(write_record(run_dir, record))   # as stored (created_at filled in)


def evaluate_baseline(kind: str, cfg: RunConfig, out_dir: str | Path, protocol: str | EvalProtocol = "fast",
                      data: ProbeData | None = None, *, benchmark: str | BenchmarkConfig | None = None,
                      selection: str | None = None) -> EvalRecord:
    """Random-init encoder of cfg.model's size, or raw pixels, on cfg.data (or a named benchmark: random init
    only): evaluated once per (data, model, protocol, benchmark) and reused from out_dir/baselines/ afterwards
    (written under the baseline folder's lock, salt.runlock)."""
    if kind not in BASELINE_KINDS:
        raise ValueError(f"baseline must be one of {', '.join(BASELINE_KINDS)}, got {kind!r}")
    layout = RunLayout.baseline(out_dir, run_id(cfg, kind))   # one per data (and model): salt.identity
    with hold_run(layout.root, "evaluate baseline"):
        return _evaluate_baseline(kind, cfg, layout, protocol, data, benchmark, selection)


def _evaluate_baseline(kind: str, cfg: RunConfig, layout: RunLayout, protocol, data, benchmark,
                       selection) -> EvalRecord:
    proto = eval_protocol(protocol, selection)
    bench = resolve_benchmark(benchmark)
    if bench is not None and kind == "raw_pixels":
        raise ValueError(f"the raw-pixel baseline is evaluated on the default benchmark only, not on {bench.name!r}")
    path = layout.record(0, proto.name, benchmark_name(bench))
    if path.exists():
        return read_record(path)
    t0 = time.perf_counter()
    _, geometry = build_dataset(cfg.data, "test")
    if kind == "raw_pixels":
        data = data or load_probe_data(cfg.data, proto)
        metrics, probes = pixel_scores(data, proto)
        params = {}
    else:
        encoder = random_encoder(cfg, geometry, seed=cfg.train.seed)
        if bench is None:
            metrics, probes = encoder_scores(encoder, data or load_probe_data(cfg.data, proto), proto)
        else:
            metrics, probes = benchmark_scores(encoder, bench, proto, layout)
        params = {"encoder": sum(p.numel() for p in encoder.parameters())}
    record = EvalRecord(run_id=layout.root.name, method=kind, stage="baseline", checkpoint_step=0, steps_total=0,
                        evaluation=proto.name, seed=cfg.train.seed, code_version=code_version(),
                        model_size=cfg.model.size if kind == "random_init" else "", params=params, metrics=metrics,
                        probes=probes, wall_time_s=time.perf_counter() - t0, hardware=hardware_description(),
                        benchmark=benchmark_name(bench), selection=proto.selection, encoder="")
    return read_record(write_record(layout.root, record))   # as stored (created_at filled in)
