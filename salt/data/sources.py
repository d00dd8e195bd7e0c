"""The one registry of data sources. Everything that depends on which data a run reads (building its datasets,
the clips' shape, the batch sampler, the labels a probe can learn, the evaluation's probe draws) asks this
registry; nothing else switches on `data.source`.

A source is a `DataSource` subclass registered under its `data.source` name: it builds the dataset of a split
("train": augmented where the source augments; "test": evaluation transforms) and says, from the data config
alone, what shape its clips have, how many clips one dataset item gives, which labels it carries, and how its
items are grouped into classes for stratified probe draws. Datasets take items `(index, sample_seed)` and return
a dict with "video" float [C, T, H, W] (or [k, C, T, H, W] for k clips an item) and their labels.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from salt.data.sampler import Mixture
from salt.registry import Registry


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


class DataSource(ABC):
    """What salt.data, the training loop and the evaluation need of one kind of data."""

    name: str = ""                # data.source
    labelled_splits: bool = True  # its own train/test splits carry the labels a default-benchmark probe learns;
    #                               False: its clips serve the label-free metrics only (probes need a benchmark)
    decodes_video: bool = False   # its clips are decoded from the files of data.video, so a study's data budget
    #                               (CPU cores per GPU, salt.study.estimate.loader_cores) applies to it

    @abstractmethod
    def geometry(self, data_cfg) -> ClipGeometry:
        """The clips' shape from the config alone (no data is read): for planning and compute estimates."""

    @abstractmethod
    def dataset(self, data_cfg, split: str) -> torch.utils.data.Dataset:
        """The dataset of `split` ("train" or "test")."""

    @abstractmethod
    def label_specs(self, data_cfg) -> list[LabelSpec]:
        """The labels a probe can be trained on."""

    @abstractmethod
    def class_keys(self, dataset) -> torch.Tensor:
        """One class id per item of a dataset it built, to stratify probe draws on."""

    def clips_per_sample(self, data_cfg) -> int:
        """Training clips each dataset item gives."""
        return 1

    def mixture(self, dataset) -> Mixture | None:
        """The sampler's mixture of a dataset it built (lists drawn by weight), or None: items drawn uniformly."""
        return None

    def normalisation(self, data_cfg) -> tuple[list[float], list[float]] | None:
        """The per-channel (mean, std) its clips are normalised with, where the config sets them (an imported
        encoder re-normalises to its release's statistics); None: fixed by the data themselves."""
        return None


_SOURCES: Registry[DataSource] = Registry("data.source", "data source")


def register_source(source: DataSource, *, replace: bool = False) -> DataSource:
    """Add a source under its name. A second source of the same name is an error unless `replace`."""
    return _SOURCES.add(source.name, source, replace=replace)


def unregister_source(name: str) -> None:
    """Remove a source (tests that register a toy source clean up with this)."""
    _SOURCES.remove(name)


def get_source(name: str) -> DataSource:
    """The source `data.source` names; an unknown name is an error listing the registered ones."""
    return _SOURCES.get(name)


def source_names() -> tuple[str, ...]:
    """Every registered source's name, in registration order."""
    return _SOURCES.names()


class MovingDigits(DataSource):
    """The embedded moving digits (salt.data.moving_digits): grey clips with an appearance and a motion label."""

    name = "moving_digits"

    def geometry(self, data_cfg) -> ClipGeometry:
        md = data_cfg.moving_digits
        return ClipGeometry(channels=1, frames=md.frames, size=md.canvas)

    def dataset(self, data_cfg, split: str) -> torch.utils.data.Dataset:
        from salt.data.moving_digits import MovingDigitsDataset, load_moving_digits
        data = load_moving_digits(data_cfg.moving_digits)
        return MovingDigitsDataset(data[split], float(data["stats"]["mean"]), float(data["stats"]["std"]))

    def label_specs(self, data_cfg) -> list[LabelSpec]:
        from salt.data.moving_digits import num_motion_classes
        return [LabelSpec("appearance", 10), LabelSpec("motion", num_motion_classes(data_cfg.moving_digits))]

    def class_keys(self, dataset) -> torch.Tensor:
        """The joint (appearance, motion) class."""
        motion = dataset.motion.long()
        return dataset.appearance.long() * (int(motion.max()) + 1) + motion


class VideoLists(DataSource):
    """Video files listed in text files, or a weighted mixture of lists (salt.data.video)."""

    name = "video_list"
    labelled_splits = False   # one list, no separate probe split: probes need a benchmark (salt.eval.benchmark)
    decodes_video = True

    def geometry(self, data_cfg) -> ClipGeometry:
        v = data_cfg.video
        return ClipGeometry(channels=3, frames=v.frames_per_clip, size=v.resolution)

    def dataset(self, data_cfg, split: str) -> torch.utils.data.Dataset:
        from salt.data.video.dataset import VideoListDataset
        return VideoListDataset(data_cfg.video, train=split == "train")

    def label_specs(self, data_cfg) -> list[LabelSpec]:
        from salt.data.video.lists import list_files, read_video_list
        labels = {entry.label for path in list_files(data_cfg.video) for entry in read_video_list(path)}
        return [LabelSpec("label", max(labels) + 1)]

    def class_keys(self, dataset) -> torch.Tensor:
        return torch.tensor(dataset.labels)

    def clips_per_sample(self, data_cfg) -> int:
        return data_cfg.video.num_clips

    def mixture(self, dataset) -> Mixture | None:
        return dataset.mixture

    def normalisation(self, data_cfg) -> tuple[list[float], list[float]] | None:
        return data_cfg.video.mean, data_cfg.video.std


register_source(MovingDigits())
register_source(VideoLists())
