"""Benchmarks: named probe datasets, separate from the pretraining data.

A benchmark is a name, a train list and a val list (V-JEPA's "path label" format, read by salt.data.video.lists), the
clip settings (frames, frame step, resolution, normalisation: a `salt.data.video.lists.VideoListConfig` under `clip`),
the test views (temporal clips x spatial crops per video; V-JEPA uses 8x3 on K400 and 2x3 on SSv2) and probe
settings (how many videos the probes see, drawn stratified by class with a seed). It is a YAML file loaded like
every config (unknown keys fail; `key=value` overrides); packaged examples live in salt/configs/benchmarks/
(`k400`, `ssv2`: the paper's settings, with list paths to fill in). Relative list paths resolve against the YAML
file's folder.

The default benchmark ("default", no file) is the run's own data: the embedded moving digits of the packaged
configs (salt.eval.evaluate holds those small clips in memory). Everything here is checked before any clip is
decoded: lists that do not exist or are empty, a train list with one class, val labels the train list lacks, the
same list for both, and clip settings that do not fit the encoder (`check_fits`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.config import PACKAGED_CONFIGS, ConfigError, load_config
from salt.data.video.lists import VideoEntry, VideoListConfig, read_video_list
from salt.eval.probes import stratified_subset
from salt.layout import ALL_BENCHMARKS, DEFAULT_BENCHMARK, EVALUATION_NAME

PACKAGED_BENCHMARKS = PACKAGED_CONFIGS / "benchmarks"


@dataclass
class ViewConfig:
    clips: int = 1      # temporal clips per video, evenly spread over it
    crops: int = 1      # spatial crops per clip, evenly spread along the long side (3: V-JEPA's)

    def __post_init__(self):
        if self.clips < 1 or self.crops < 1:
            raise ValueError(f"clips and crops must be >= 1, got {self.clips} and {self.crops}")

    @property
    def count(self) -> int:
        return self.clips * self.crops


@dataclass
class BenchmarkProbeConfig:
    # videos drawn (stratified by class, seeded) for the probes: 0 = the protocol's count, -1 = the whole list
    train_clips: int = 0
    test_clips: int = 0
    attentive_train_clips: int = 0   # of the train draw, for the attentive probe; 0 = the protocol's, -1 = all
    attentive_epochs: int = 0        # 0 = the protocol's
    attentive_batch_size: int = 0    # 0 = the protocol's
    seed: int = 0

    def __post_init__(self):
        for name in ("train_clips", "test_clips", "attentive_train_clips"):
            if getattr(self, name) < -1:
                raise ValueError(f"{name} must be -1 (all), 0 (the protocol's) or a count, got {getattr(self, name)}")
        for name in ("attentive_epochs", "attentive_batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the protocol's), got {getattr(self, name)}")


@dataclass
class BenchmarkConfig:
    name: str = ""                   # file-name-safe; names records (evals/..._<protocol>@<name>.json) and caches
    train_list: str = ""             # "path label" per line: the probes' training videos
    val_list: str = ""               # ... and the videos they are scored on
    # frames_per_clip, frame_step, resolution, mean, std (its training augmentations are not used: evaluation
    # clips are fixed, as in V-JEPA's frozen evaluation); views are set below, not by clip.eval_clips
    clip: VideoListConfig = field(default_factory=VideoListConfig)
    train_views: ViewConfig = field(default_factory=ViewConfig)
    test_views: ViewConfig = field(default_factory=ViewConfig)
    probe: BenchmarkProbeConfig = field(default_factory=BenchmarkProbeConfig)
    num_workers: int = 4             # DataLoader workers decoding clips during feature extraction
    batch_size: int = 64             # clips (views) encoded at once
    shard_size: int = 128            # videos per feature-cache shard (bounds extraction memory and lost work)

    def __post_init__(self):
        if self.num_workers < 0 or self.batch_size < 1 or self.shard_size < 1:
            raise ValueError(f"need num_workers >= 0, batch_size >= 1 and shard_size >= 1; got {self.num_workers}, "
                             f"{self.batch_size}, {self.shard_size}")

    def check(self) -> "BenchmarkConfig":
        """The checks that need the whole file (the defaults alone are no benchmark); returns self."""
        if not EVALUATION_NAME.match(self.name) or self.name in (DEFAULT_BENCHMARK, ALL_BENCHMARKS):
            raise ValueError(f"benchmark name must be file-name-safe ([A-Za-z0-9_.-]) and not "
                             f"{DEFAULT_BENCHMARK!r} or {ALL_BENCHMARKS!r}, got {self.name!r}")
        for key in ("train_list", "val_list"):
            if not getattr(self, key):
                raise ValueError(f"benchmark {self.name}: {key} is empty (a 'path label' list file)")
        if self.clip.list_path:
            raise ValueError(f"benchmark {self.name}: set train_list and val_list, not clip.list_path")
        if self.clip.eval_clips != 1 or self.clip.eval_crops != 1:
            raise ValueError(f"benchmark {self.name}: set views with test_views (clips, crops) and train_views, not "
                             "clip.eval_clips / clip.eval_crops")
        if Path(self.train_list).resolve() == Path(self.val_list).resolve():
            raise ValueError(f"benchmark {self.name}: train_list and val_list are the same file ({self.train_list}); "
                             "probes need videos they were not trained on")
        return self

    def split_config(self, split: str) -> VideoListConfig:
        """The clip settings of one split ("train" or "val") as the video loader reads them."""
        views = {"train": self.train_views, "val": self.test_views}[split]
        path = {"train": self.train_list, "val": self.val_list}[split]
        return dataclasses.replace(self.clip, list_path=path, eval_clips=views.clips, eval_crops=views.crops)


def packaged_benchmarks() -> list[str]:
    return sorted(p.stem for p in PACKAGED_BENCHMARKS.glob("*.yaml"))


def load_benchmark(name: str | Path, overrides: list[str] = ()) -> BenchmarkConfig:
    """A benchmark YAML file, or the name of a packaged one (salt/configs/benchmarks/NAME.yaml), with `key=value`
    overrides (e.g. train_list=/data/k400/train.csv). The name defaults to the file's stem."""
    path = Path(name)
    if not path.is_file():
        path = PACKAGED_BENCHMARKS / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"benchmark {name!r} is neither a YAML file nor a packaged benchmark (packaged: "
                              f"{', '.join(packaged_benchmarks())})")
    bench = load_config(BenchmarkConfig, [path], list(overrides))
    bench.name = bench.name or path.stem
    for key in ("train_list", "val_list"):
        value = getattr(bench, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(bench, key, str(path.parent.resolve() / value))
    return bench.check()


@dataclass
class BenchmarkLists:
    """A benchmark's two lists, read and checked."""
    train: list[VideoEntry]
    val: list[VideoEntry]
    num_classes: int

    @property
    def train_labels(self) -> torch.Tensor:
        return torch.tensor([e.label for e in self.train])

    @property
    def val_labels(self) -> torch.Tensor:
        return torch.tensor([e.label for e in self.val])


def read_lists(bench: BenchmarkConfig) -> BenchmarkLists:
    """Both lists parsed (a missing file, an empty list or a malformed line is an error naming it) and checked:
    two classes or more in train, every val label present in train."""
    train, val = read_video_list(bench.train_list), read_video_list(bench.val_list)
    counts = Counter(e.label for e in train)
    if len(counts) < 2:
        raise ValueError(f"benchmark {bench.name}: the train list {bench.train_list} has one class "
                         f"(label {next(iter(counts))}); a probe needs two or more")
    if min(counts) < 0:
        raise ValueError(f"benchmark {bench.name}: labels must be >= 0, the train list has {min(counts)}")
    unseen = [e for e in val if e.label not in counts]
    if unseen:
        labels = sorted({e.label for e in unseen})
        raise ValueError(f"benchmark {bench.name}: the val list {bench.val_list} has label(s) "
                         f"{', '.join(map(str, labels[:10]))} that the train list {bench.train_list} lacks (first "
                         f"at line {unseen[0].line}); a probe cannot learn a class it never sees")
    return BenchmarkLists(train, val, max(counts) + 1)


def check_fits(bench: BenchmarkConfig, encoder) -> None:
    """Clip settings the encoder can take: RGB input, frames a multiple of its tubelet and resolution of its patch,
    and the token grid its positions were built for. Raised before any clip is decoded."""
    clip = bench.clip
    problems = []
    if encoder.in_chans != 3:
        problems.append(f"the encoder takes {encoder.in_chans}-channel clips, the benchmark's videos are RGB")
    if clip.frames_per_clip % encoder.tubelet_size:
        problems.append(f"clip.frames_per_clip={clip.frames_per_clip} is not a multiple of the tubelet size "
                        f"{encoder.tubelet_size}")
    if clip.resolution % encoder.patch_size:
        problems.append(f"clip.resolution={clip.resolution} is not a multiple of the patch size {encoder.patch_size}")
    grid = (clip.frames_per_clip // encoder.tubelet_size, clip.resolution // encoder.patch_size,
            clip.resolution // encoder.patch_size)
    if not problems and grid != tuple(encoder.grid):
        t, h, _ = encoder.grid
        problems.append(f"clip.frames_per_clip={clip.frames_per_clip}, clip.resolution={clip.resolution} give the "
                        f"token grid {grid}, the encoder was built for {tuple(encoder.grid)} "
                        f"({t * encoder.tubelet_size} frames of {h * encoder.patch_size} pixels)")
    if problems:
        raise ValueError(f"benchmark {bench.name} does not fit the encoder: " + "; ".join(problems))


def draw_count(setting: int, protocol_count: int, available: int) -> int:
    """A probe setting (0 = the protocol's count, -1 = all) as a number of videos, at most `available`."""
    wanted = available if setting == -1 else (setting or protocol_count)
    return min(wanted, available)


def probe_rows(lists: BenchmarkLists, bench: BenchmarkConfig, train_count: int, test_count: int,
               attentive_count: int) -> tuple[list[int], list[int], int]:
    """Which list entries the probes see: (train rows, val rows, m). Both draws are stratified by class with the
    benchmark's probe seed; the train rows start with a stratified draw of `attentive_count` of them (the
    attentive probe's m clips), so the cache keeps tokens for its first m rows only."""
    seed = bench.probe.seed
    train = stratified_subset(lists.train_labels, train_count, seed)
    val = stratified_subset(lists.val_labels, test_count, seed)
    m = min(attentive_count, len(train))
    first = stratified_subset(lists.train_labels[train], m, seed + 1) if m else torch.zeros(0, dtype=torch.long)
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[first] = False
    order = torch.cat([train[first], train[rest]])
    return order.tolist(), val.tolist(), m
