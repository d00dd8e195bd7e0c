"""Frozen-encoder evaluation used by the demo: load any run's encoder, extract time-pooled features,
and probe them (linear, full labels and k labels per class) for every label of the data."""
from __future__ import annotations

from pathlib import Path

import torch

from salt.config import from_dict
from salt.data import ClipGeometry, build_dataset, label_specs
from salt.eval.probes import extract_features, low_shot_probe, pool_tokens
from salt.eval.spectral import rankme
from salt.models import VideoViT, build_encoder
from salt.schema import RunConfig
from salt.train.checkpoint import load_checkpoint, load_matching


def encoder_from_checkpoint(path: str | Path) -> tuple[VideoViT, RunConfig]:
    """The trained encoder of a run folder (latest checkpoint) or checkpoint file, built from its own config."""
    state = load_checkpoint(path)
    cfg = from_dict(RunConfig, state["config"])
    _, geometry = build_dataset(cfg.data, "test")
    encoder = build_encoder(cfg.model, img_size=geometry.size, num_frames=geometry.frames,
                            in_chans=geometry.channels)
    load_matching(encoder, state["models"]["encoder"], f"encoder of {path}")
    return encoder.eval(), cfg


def random_encoder(cfg: RunConfig, geometry: ClipGeometry, seed: int) -> VideoViT:
    """A random-init encoder of the same size and init scheme: the baseline every encoder must beat."""
    torch.manual_seed(seed)
    return build_encoder(cfg.model, img_size=geometry.size, num_frames=geometry.frames,
                         in_chans=geometry.channels).eval()


def clips_and_labels(dataset, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The first `count` clips of a dataset as one tensor, and each label as a tensor."""
    items = [dataset[(i, 0)] for i in range(min(count, len(dataset)))]
    videos = torch.stack([it["video"] for it in items])
    labels = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("video", "decode_failures")}
    return videos, labels


def time_pooled_features(encoder: VideoViT, videos: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return extract_features(lambda v: pool_tokens(encoder(v), encoder.grid, "time"), videos, batch_size)


def probe_all(features: dict[str, tuple[torch.Tensor, torch.Tensor]], data_cfg,
              train_labels: dict[str, torch.Tensor], test_labels: dict[str, torch.Tensor],
              shots: list[int | None], draws: int, seed: int = 0, rankme_clips: int = 1024) -> list[dict]:
    """One row per encoder: RankMe of its features (on the first `rankme_clips` training clips, the same for
    every encoder: an exact SVD of 3000 x 8192 raw pixels takes ~30 s) and the linear-probe test accuracy
    for each label and number of shots."""
    rows = []
    for name, (train_x, test_x) in features.items():
        row = {"encoder": name, "rankme": rankme(train_x[:rankme_clips])}
        for spec in label_specs(data_cfg):
            for k in shots:
                result = low_shot_probe(train_x, train_labels[spec.name], test_x, test_labels[spec.name],
                                        num_classes=spec.num_classes, shots=k, draws=draws, seed=seed)
                key = f"{spec.name}_{'full' if k is None else f'{k}shot'}"
                row[key], row[key + "_std"] = result["accuracy"], result["std"]
        rows.append(row)
    return rows
