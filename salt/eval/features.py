"""Feature sources: what one frozen encoder (or raw pixels) gives every label-free metric and probe.

Each source ends in one `Features`, and salt.eval.scores turns any `Features` into metrics and probe scores the
same way:

- `clip_features`: the default benchmark's clips, held in memory (`ProbeData`): encoded once (tokens kept),
  pooled, test views averaged; LiDAR's views are shifted copies of the first train clips.
- `benchmark_features`: a named benchmark's stratified draws, streamed through the feature cache
  (salt.eval.cache: decoded by DataLoader workers, encoded, pooled per view and stored as fp16 shards, reused
  when complete); views averaged per video; LiDAR's views are the benchmark's train views.
- `pixel_features`: the raw-pixel baseline, flattened clips ("pixels").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from salt.data import LabelSpec
from salt.data.video.dataset import VideoListDataset
from salt.eval.benchmark import BenchmarkConfig, check_fits, draw_count, probe_rows, read_lists
from salt.eval.cache import TokenRows, cache_key, encoder_fingerprint, extract_split, resolve_device
from salt.eval.probes import extract_features, pool_tokens, stratified_subset
from salt.eval.protocol import EvalProtocol, check_protocol_fits
from salt.layout import RunLayout
from salt.models import VideoViT

PROBE_DRAW_SEED = 0   # stratified draws of the default benchmark's probe clips
PIXELS = "pixels"     # the raw-pixel baseline's one "pooling": flattened clips


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


@dataclass
class Features:
    """One source's features of the probe clips, computed once and read by every metric and probe."""
    labels: ProbeLabels
    pooled: dict[str, tuple]            # "time" / "mean" (or "pixels") -> (train [N, F], test [M, F]: views averaged)
    train_tokens: torch.Tensor | TokenRows | None = None   # the attentive probe's tokens; None: no attentive probe
    test_tokens: torch.Tensor | TokenRows | None = None    # [M, tokens, D] or [M, V, tokens, D]
    attentive_rows: torch.Tensor | None = None   # rows of train_tokens the attentive probe trains on (None: all)
    lidar_views: torch.Tensor | None = None      # [n, views, F]: LiDAR's surrogate classes; None: no LiDAR
    details: dict = field(default_factory=dict)  # extras every probe score of the source carries

    @property
    def raw_pixels(self) -> bool:
        return PIXELS in self.pooled


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


def view_rows(test_videos: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Test clips [M, V, C, T, H, W] (video lists with eval_clips > 1) as rows [M*V, C, T, H, W], and V;
    clips without a view axis unchanged, with V = 0."""
    if test_videos.dim() == 6:
        return test_videos.flatten(0, 1), test_videos.shape[1]
    return test_videos, 0


def average_views(rows: torch.Tensor, views: int) -> torch.Tensor:
    """Per-view rows [M*V, ...] -> per-clip [M, ...], the mean of each clip's V views (V = 0: unchanged). The one
    place features of multi-view clips held in memory are averaged; attentive probes average their logits instead."""
    return rows.unflatten(0, (-1, views)).mean(dim=1) if views else rows


def attentive_rows(data: ProbeData, protocol: EvalProtocol) -> torch.Tensor:
    """The attentive probe's clips of the default benchmark: a stratified draw (first label) of the train clips."""
    first = data.train_labels[data.labels[0].name]
    return stratified_subset(first, protocol.attentive_train_clips, PROBE_DRAW_SEED + 1)


def clip_features(encoder: VideoViT, data: ProbeData, protocol: EvalProtocol) -> Features:
    """Clips held in memory: each clip set encoded once, tokens pooled per clip, test views averaged; LiDAR's
    surrogate class is a train clip (already encoded) and lidar_views - 1 shifted copies of it. Data without
    labels (a video-list run's own clips) has train clips only: label-free metrics, no probe."""
    check_protocol_fits(encoder, protocol)
    encoder = encoder.eval()
    train_tokens = extract_features(encoder, data.train_videos, batch_size=512)
    pooled = {how: pool_tokens(train_tokens, encoder.grid, how) for how in ("time", "mean")}
    if data.labels:
        test_rows, views = view_rows(data.test_videos)
        test_tokens = extract_features(encoder, test_rows, batch_size=512)
        pooled = {how: (pooled[how], average_views(pool_tokens(test_tokens, encoder.grid, how), views))
                  for how in pooled}
        test_tokens = test_tokens.unflatten(0, (-1, views)) if views else test_tokens
    else:
        pooled, test_tokens = {how: (train, None) for how, train in pooled.items()}, None
    n = min(protocol.metric_clips, len(train_tokens))
    shifted = shifted_views(data.train_videos[:n], protocol.lidar_views - 1, max_shift=max(1, encoder.patch_size // 2))
    shifted_embeddings = extract_features(lambda v: pool_tokens(encoder(v), encoder.grid, "mean"),
                                          shifted.flatten(0, 1), batch_size=256)
    shifted_embeddings = shifted_embeddings.reshape(n, protocol.lidar_views - 1, -1)
    rows = attentive_rows(data, protocol) if data.labels and protocol.attentive != "none" else None
    return Features(ProbeLabels(data.train_labels, data.test_labels, data.labels), pooled,
                    train_tokens if data.labels else None, test_tokens, rows,
                    lidar_views=torch.cat([pooled["mean"][0][:n, None], shifted_embeddings], dim=1))


def benchmark_features(encoder: VideoViT, bench: BenchmarkConfig, protocol: EvalProtocol, layout: RunLayout,
                       device=None) -> Features:
    """A named benchmark: lists and clip settings checked first; the probes' videos (stratified draws) streamed
    into the feature cache under `layout` (reused when complete, resumed when not). Linear and k-NN inputs are
    each video's features averaged over its views; the attentive probe averages its logits over the test views.
    LiDAR needs several views of a clip: it is there when train_views has two or more."""
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
    n = min(protocol.metric_clips, len(train.labels))
    train_views = train.pooled["mean"].shape[1]
    labels = ProbeLabels({"label": train.labels}, {"label": val.labels}, [LabelSpec("label", lists.num_classes)])
    return Features(labels,
                    {how: (train.averaged(how), val.averaged(how)) for how in ("time", "mean")},
                    train.tokens, val.tokens,
                    lidar_views=train.pooled["mean"][:n].float() if train_views >= 2 else None,
                    details=dict(train_videos=len(train.labels), test_videos=len(val.labels), train_views=train_views,
                                 test_views=val.pooled["mean"].shape[1],
                                 decode_failures=train.decode_failures + val.decode_failures))


def pixel_features(data: ProbeData) -> Features:
    """The raw-pixel baseline: flattened clips (test views averaged), for RankMe, linear and k-NN probes."""
    test_rows, views = view_rows(data.test_videos)
    return Features(ProbeLabels(data.train_labels, data.test_labels, data.labels),
                    {PIXELS: (data.train_videos.flatten(1), average_views(test_rows.flatten(1), views))})
