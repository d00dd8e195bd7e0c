"""Data: the embedded moving-digits clips and video files listed in a CSV, behind one builder.

Every dataset takes items `(index, sample_seed)` and returns a dict with "video" float [C, T, H, W] and its
label(s); `salt.data.sampler` decides which items make up each step's batch (`step_sampler` builds it for a data
config) and `collate` stacks them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import default_collate

from salt.data.sampler import StepBatchSampler

# Keys of a sample that count problems of the data pipeline (summed and logged by the loop), not labels.
DATA_COUNTERS = ("decode_failures", "seek_fallbacks")


@dataclass(frozen=True)
class ClipGeometry:
    """What the models need to know about the clips: channels, frames, square size."""
    channels: int
    frames: int
    size: int


@dataclass(frozen=True)
class LabelSpec:
    name: str
    num_classes: int


def clip_geometry(data_cfg) -> ClipGeometry:
    """The clips' shape from the config alone (no data is read): for planning and compute estimates."""
    if data_cfg.source == "moving_digits":
        md = data_cfg.moving_digits
        return ClipGeometry(channels=1, frames=md.frames, size=md.canvas)
    if data_cfg.source == "video_list":
        v = data_cfg.video
        return ClipGeometry(channels=3, frames=v.frames_per_clip, size=v.resolution)
    raise ValueError(f"unknown data.source {data_cfg.source!r}")


def build_dataset(data_cfg, split: str) -> tuple[torch.utils.data.Dataset, ClipGeometry]:
    """split: "train" (augmented for video files) or "test" (eval transforms)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_cfg.source == "moving_digits":
        from salt.data.moving_digits import MovingDigitsDataset, load_moving_digits
        md = data_cfg.moving_digits
        data = load_moving_digits(md)
        dataset = MovingDigitsDataset(data[split], float(data["stats"]["mean"]), float(data["stats"]["std"]))
        return dataset, clip_geometry(data_cfg)
    if data_cfg.source == "video_list":
        from salt.data.video import VideoListDataset
        v = data_cfg.video
        dataset = VideoListDataset(v, train=split == "train")
        return dataset, clip_geometry(data_cfg)
    raise ValueError(f"unknown data.source {data_cfg.source!r}")


def clips_per_sample(data_cfg) -> int:
    """Training clips each dataset item gives (several clips of one video: data.video.num_clips)."""
    return data_cfg.video.num_clips if data_cfg.source == "video_list" else 1


def items_per_step(data_cfg, batch_size: int) -> int:
    """Dataset items a step of `batch_size` clips reads (each item gives `clips_per_sample` clips)."""
    per_item = clips_per_sample(data_cfg)
    if batch_size % per_item:
        raise ValueError(f"train.batch_size={batch_size} is not a multiple of data.video.num_clips={per_item}")
    return batch_size // per_item


def step_sampler(data_cfg, dataset, batch_size: int, seed: int, start_step: int, end_step: int) -> StepBatchSampler:
    """The batch sampler of steps [start_step, end_step) for `batch_size` clips a step: batch_size / num_clips
    items (each gives num_clips clips), drawn by the mixture's weights when the data is a weighted mixture."""
    mixture = dataset.mixture if data_cfg.source == "video_list" else None
    return StepBatchSampler(len(dataset), items_per_step(data_cfg, batch_size), seed, start_step, end_step,
                            mixture=mixture)


def collate(samples: list[dict]) -> dict:
    """default_collate, then items of several clips ([N, k, C, T, H, W] video) flattened to N * k clips, each
    clip with its item's labels; an item's data counters go with its first clip (their sums stay right)."""
    batch = default_collate(samples)
    video = batch["video"]
    if video.ndim != 6:
        return batch
    n, k = video.shape[:2]
    flat = {"video": video.flatten(0, 1)}
    for key, value in batch.items():
        if key in DATA_COUNTERS:
            flat[key] = torch.cat([value[:, None], value.new_zeros(n, k - 1)], dim=1).flatten()
        elif key != "video":
            flat[key] = value.repeat_interleave(k, dim=0)
    return flat


def label_specs(data_cfg) -> list[LabelSpec]:
    """The labels a probe can be trained on, for this data source."""
    if data_cfg.source == "moving_digits":
        from salt.data.moving_digits import num_motion_classes
        return [LabelSpec("appearance", 10), LabelSpec("motion", num_motion_classes(data_cfg.moving_digits))]
    from salt.data.video import list_files, read_video_list
    labels = {entry.label for path in list_files(data_cfg.video) for entry in read_video_list(path)}
    return [LabelSpec("label", max(labels) + 1)]
