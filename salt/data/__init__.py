"""Data: the embedded moving-digits clips and video files listed in a CSV, behind one builder.

Each kind of data is a source in one registry (salt.data.sources: `data.source` names it); the functions here ask
it. Every dataset takes items `(index, sample_seed)` and returns a dict with "video" float [C, T, H, W] and its
label(s); `salt.data.sampler` decides which items make up each step's batch (`step_sampler` builds it for a data
config) and `collate` stacks them.
"""
from __future__ import annotations

import torch
from torch.utils.data import default_collate

from salt.data.sampler import StepBatchSampler
from salt.data.sources import (ClipGeometry, DataSource, LabelSpec, get_source, register_source, source_names,
                               unregister_source)

__all__ = ["DATA_COUNTERS", "ClipGeometry", "DataSource", "LabelSpec", "build_dataset", "clip_geometry",
           "clips_per_sample", "collate", "get_source", "items_per_step", "label_specs", "register_source",
           "source_names", "step_sampler", "unregister_source"]

# Keys of a sample that count problems of the data pipeline (summed and logged by the loop), not labels.
DATA_COUNTERS = ("decode_failures", "seek_fallbacks")


def clip_geometry(data_cfg) -> ClipGeometry:
    """The clips' shape from the config alone (no data is read): for planning and compute estimates."""
    return get_source(data_cfg.source).geometry(data_cfg)


def build_dataset(data_cfg, split: str) -> tuple[torch.utils.data.Dataset, ClipGeometry]:
    """split: "train" (augmented for video files) or "test" (eval transforms)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    source = get_source(data_cfg.source)
    return source.dataset(data_cfg, split), source.geometry(data_cfg)


def clips_per_sample(data_cfg) -> int:
    """Training clips each dataset item gives (several clips of one video: data.video.num_clips)."""
    return get_source(data_cfg.source).clips_per_sample(data_cfg)


def items_per_step(data_cfg, batch_size: int) -> int:
    """Dataset items a step of `batch_size` clips reads (each item gives `clips_per_sample` clips)."""
    per_item = clips_per_sample(data_cfg)
    if batch_size % per_item:
        raise ValueError(f"train.batch_size={batch_size} is not a multiple of data.video.num_clips={per_item}")
    return batch_size // per_item


def step_sampler(data_cfg, dataset, batch_size: int, seed: int, start_step: int, end_step: int) -> StepBatchSampler:
    """The batch sampler of steps [start_step, end_step) for `batch_size` clips a step: batch_size / num_clips
    items (each gives num_clips clips), drawn by the mixture's weights when the data is a weighted mixture."""
    return StepBatchSampler(len(dataset), items_per_step(data_cfg, batch_size), seed, start_step, end_step,
                            mixture=get_source(data_cfg.source).mixture(dataset))


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
    return get_source(data_cfg.source).label_specs(data_cfg)
