"""One data-source registry: a source defined here, in the test file, is accepted by the config, builds its datasets,
gives the clips' shape, the sampler and the labels, and trains, without any other module knowing its name; an
unknown source is an error naming the registered ones."""
from __future__ import annotations

import pytest
import torch

from salt.config import ConfigError
from salt.data import (DataSource, LabelSpec, build_dataset, clip_geometry, clips_per_sample, collate, get_source,
                       items_per_step, label_specs, register_source, source_names, step_sampler, unregister_source)
from salt.data.sampler import Mixture
from salt.data.sources import ClipGeometry


class StripesDataset(torch.utils.data.Dataset):
    """Two clips an item: grey stripes whose direction is the label."""

    def __init__(self, count: int, frames: int, size: int, offset: int):
        self.labels = [(i + offset) % 2 for i in range(count)]
        self.frames, self.size = frames, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        index, seed = item
        noise = torch.rand(2, 1, self.frames, self.size, self.size, generator=torch.Generator().manual_seed(seed))
        stripes = torch.arange(self.size).float().remainder(4).div(4)
        pattern = stripes.view(1, -1) if self.labels[index] else stripes.view(-1, 1)
        return {"video": pattern.expand(self.size, self.size) + 0.1 * noise,
                "label": torch.tensor(self.labels[index])}


class Stripes(DataSource):
    name = "stripes"

    def geometry(self, data_cfg) -> ClipGeometry:   # the moving-digits section's shape, so micro models fit
        md = data_cfg.moving_digits
        return ClipGeometry(channels=1, frames=md.frames, size=md.canvas)

    def dataset(self, data_cfg, split: str):
        geometry = self.geometry(data_cfg)
        return StripesDataset(12 if split == "train" else 6, geometry.frames, geometry.size, split == "test")

    def label_specs(self, data_cfg) -> list[LabelSpec]:
        return [LabelSpec("label", 2)]

    def class_keys(self, dataset) -> torch.Tensor:
        return torch.tensor(dataset.labels)

    def clips_per_sample(self, data_cfg) -> int:
        return 2

    def mixture(self, dataset) -> Mixture:
        return Mixture((8, 4), (1.0, 3.0))


@pytest.fixture
def stripes():
    source = register_source(Stripes())
    yield source
    unregister_source(source.name)


def test_unknown_sources_are_named_with_the_registered_ones(micro_config):
    assert source_names()[:2] == ("moving_digits", "video_list")
    with pytest.raises(ValueError, match="unknown data.source 'nope'; registered: moving_digits, video_list"):
        get_source("nope")
    with pytest.raises(ConfigError, match="source must be one of moving_digits, video_list; got 'nope'"):
        micro_config("teacher", "x", "data.source=nope")
    with pytest.raises(ValueError, match="already registered"):
        register_source(get_source("video_list"))


def test_a_source_defined_in_a_test_serves_every_data_question(stripes, micro_config):
    cfg = micro_config("teacher", "stripes", "data.source=stripes").data
    dataset, geometry = build_dataset(cfg, "train")
    assert isinstance(dataset, StripesDataset) and len(build_dataset(cfg, "test")[0]) == 6
    assert geometry == clip_geometry(cfg) == ClipGeometry(1, 4, 16)
    assert clips_per_sample(cfg) == 2 and items_per_step(cfg, 8) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        items_per_step(cfg, 7)
    sampler = step_sampler(cfg, dataset, 8, seed=0, start_step=0, end_step=50)
    items = [index for batch in sampler for index, _ in batch]
    assert len(items) == 200 and 0.65 < sum(index >= 8 for index in items) / len(items) < 0.85   # the mixture
    batch = collate([dataset[item] for item in next(iter(sampler))])
    assert batch["video"].shape == (8, 1, 4, 16, 16) and batch["label"].shape == (8,)
    assert label_specs(cfg) == [LabelSpec("label", 2)]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        build_dataset(cfg, "val")


def test_a_source_defined_in_a_test_trains(stripes, micro_config):
    from salt.train.loop import train
    summary = train(micro_config("teacher", "stripes", "data.source=stripes", steps=2))
    assert summary["steps"] == 2


def test_the_evaluation_draws_probe_clips_as_the_source_says(stripes, micro_config):
    from salt.eval.evaluate import load_probe_data
    from salt.eval.protocol import eval_protocol
    cfg = micro_config("teacher", "stripes", "data.source=stripes").data
    data = load_probe_data(cfg, eval_protocol("smoke"))   # labelled splits: stratified by the source's class keys
    assert data.labels == [LabelSpec("label", 2)] and data.train_videos.shape == (12, 2, 1, 4, 16, 16)
    assert sorted(data.train_labels["label"].tolist()) == [0] * 6 + [1] * 6 and len(data.test_videos) == 6
    stripes.labelled_splits = False   # its clips serve the label-free metrics only
    data = load_probe_data(cfg, eval_protocol("smoke"))
    assert data.labels == [] and data.train_videos.shape == (6, 1, 4, 16, 16) and len(data.test_videos) == 0


def test_the_data_budget_and_an_import_ask_the_source(stripes, micro_config):
    """Only a source that decodes video files has a data budget, and its normalisation is what an imported
    encoder re-normalises from; neither is switched on the source's name."""
    from salt.study.estimate import loader_cores
    cfg = micro_config("teacher", "stripes", "data.source=stripes")
    with pytest.raises(ValueError, match="data.source='stripes' decodes no video files"):
        loader_cores(cfg, 100.0, 100.0, 8)
    assert stripes.normalisation(cfg.data) is None
    video = micro_config("teacher", "v", "data.source=video_list").data
    assert get_source("video_list").decodes_video and get_source("video_list").normalisation(video) == (
        video.video.mean, video.video.std)
