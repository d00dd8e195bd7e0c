"""Data: the embedded moving-digits clips and video files listed in a CSV, behind one builder.

Every dataset takes items `(index, sample_seed)` and returns a dict with "video" float [C, T, H, W] and its
label(s); `salt.data.sampler` decides which items make up each step's batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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


def label_specs(data_cfg) -> list[LabelSpec]:
    """The labels a probe can be trained on, for this data source."""
    if data_cfg.source == "moving_digits":
        from salt.data.moving_digits import num_motion_classes
        return [LabelSpec("appearance", 10), LabelSpec("motion", num_motion_classes(data_cfg.moving_digits))]
    from salt.data.video import read_video_list
    labels = {entry.label for entry in read_video_list(data_cfg.video.list_path)}
    return [LabelSpec("label", max(labels) + 1)]
