"""Moving digits: determinism, disk cache, disjoint splits, label semantics and difficulty knobs."""

import math
import os
import warnings

import pytest
import torch

from salt.data.moving_digits import (
    MovingDigitsConfig,
    MovingDigitsDataset,
    cache_path,
    load_moving_digits,
    num_motion_classes,
)

WOBBLE_AMPLITUDE = 2.0  # the documented zigzag amplitude used when phases > 1


def small(tmp_path, **overrides) -> MovingDigitsConfig:
    fields = dict(num_train=400, num_test=120, cache_dir=str(tmp_path))
    fields.update(overrides)
    return MovingDigitsConfig(**fields)


def centre_of_mass(video: torch.Tensor) -> torch.Tensor:
    """(row, col) intensity centroid per frame: [N, T, 2]."""
    video = video.double()
    span = torch.arange(video.shape[-1], dtype=torch.float64)
    mass = video.sum((-1, -2))
    rows = (video.sum(-1) * span).sum(-1) / mass
    cols = (video.sum(-2) * span).sum(-1) / mass
    return torch.stack([rows, cols], dim=-1)


def expected_paths(cfg: MovingDigitsConfig) -> torch.Tensor:
    """Offsets from frame 0 per motion class, written from the documented label layout: [M, T, 2]."""
    t = torch.arange(cfg.frames, dtype=torch.float64)
    paths = []
    for direction in range(cfg.directions):
        angle = 2 * math.pi * direction / cfg.directions
        along = torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64)
        across = torch.tensor([math.cos(angle), -math.sin(angle)], dtype=torch.float64)
        for speed in cfg.speeds:
            for phase in range(cfg.phases):
                phi = 2 * math.pi * phase / cfg.phases
                wobble = torch.zeros_like(t)
                if cfg.phases > 1:
                    wobble = WOBBLE_AMPLITUDE * (torch.sin(2 * math.pi * t / cfg.frames + phi) - math.sin(phi))
                paths.append(speed * t[:, None] * along + wobble[:, None] * across)
    return torch.stack(paths)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(canvas=1), "canvas"),
        (dict(digit_size=32), "digit_size"),
        (dict(frames=1), "frames"),
        (dict(num_train=0), "num_train"),
        (dict(num_test=0), "num_test"),
        (dict(directions=0), "directions"),
        (dict(speeds=[]), "speeds"),
        (dict(speeds=[1.0, -1.0]), "speeds"),
        (dict(speeds=[1.0, 1.0]), "speeds"),
        (dict(phases=0), "phases"),
        (dict(distractors=-1), "distractors"),
        (dict(noise=-0.1), "noise"),
        (dict(bounce=False, speeds=[4.0]), "bounce=False"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        MovingDigitsConfig(**overrides)


def test_shapes_dtypes_label_ranges_and_balance(tmp_path):
    cfg = small(tmp_path, phases=2)
    data = load_moving_digits(cfg)
    assert num_motion_classes(cfg) == 4 * 2 * 2
    for split, count in (("train", cfg.num_train), ("test", cfg.num_test)):
        clips = data[split]
        assert clips["video"].shape == (count, cfg.frames, cfg.canvas, cfg.canvas)
        assert clips["video"].dtype == torch.uint8
        for name, classes in (("appearance", 10), ("motion", num_motion_classes(cfg))):
            labels = clips[name]
            assert labels.shape == (count,) and labels.dtype == torch.int64
            counts = torch.bincount(labels, minlength=classes)
            assert len(counts) == classes
            assert counts.max() - counts.min() <= 1  # cycled through the classes, then shuffled
        assert clips["image_id"].dtype == torch.int64
        assert 0 <= clips["image_id"].min() and clips["image_id"].max() < 1797
    assert data["stats"]["mean"].ndim == 0 and 0 < data["stats"]["mean"] < 1
    assert data["stats"]["std"].ndim == 0 and data["stats"]["std"] > 0


def test_appearance_label_matches_the_digit_image(tmp_path):
    from sklearn.datasets import load_digits

    data = load_moving_digits(small(tmp_path))
    targets = torch.from_numpy(load_digits().target)
    for split in ("train", "test"):
        assert torch.equal(targets[data[split]["image_id"]], data[split]["appearance"])


def test_same_seed_gives_identical_data_and_other_seed_differs(tmp_path):
    first = load_moving_digits(small(tmp_path / "a", distractors=1, noise=0.05))
    again = load_moving_digits(small(tmp_path / "b", distractors=1, noise=0.05))  # fresh generation, no cache
    other = load_moving_digits(small(tmp_path / "a", distractors=1, noise=0.05, seed=1))
    for split in ("train", "test"):
        for name in ("video", "appearance", "motion", "image_id"):
            assert torch.equal(first[split][name], again[split][name])
        assert not torch.equal(first[split]["video"], other[split]["video"])
        assert not torch.equal(first[split]["motion"], other[split]["motion"])
    assert first["stats"]["mean"] == again["stats"]["mean"]


def test_train_and_test_use_disjoint_digit_images(tmp_path):
    data = load_moving_digits(small(tmp_path, num_train=2000, num_test=800))
    train_ids = set(data["train"]["image_id"].tolist())
    test_ids = set(data["test"]["image_id"].tolist())
    assert not train_ids & test_ids
    assert len(train_ids) > 600 and len(test_ids) > 250  # many distinct images are used, not a handful


def test_cache_is_reused_and_a_config_change_gets_its_own_file(tmp_path):
    cfg = small(tmp_path)
    fresh = load_moving_digits(cfg)
    path = cache_path(cfg)
    before = os.stat(path)
    cached = load_moving_digits(cfg)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert torch.equal(fresh["train"]["video"], cached["train"]["video"])
    assert fresh["stats"]["std"] == cached["stats"]["std"]

    changed = small(tmp_path, noise=0.1)
    load_moving_digits(changed)
    assert cache_path(changed) != path and cache_path(changed).exists() and path.exists()
    assert "_v1_" in path.name and path.suffix == ".npz"
    # Where the cache lives does not change its name; no temp files are left behind.
    assert cache_path(small(tmp_path / "elsewhere")).name == path.name
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_default_cache_dir_comes_from_salt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SALT_CACHE", str(tmp_path / "env-cache"))
    assert cache_path(MovingDigitsConfig()).parent == tmp_path / "env-cache"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_config"])
def test_corrupt_or_foreign_cache_is_regenerated_with_a_warning(tmp_path, damage):
    cfg = small(tmp_path)
    expected = load_moving_digits(cfg)
    path = cache_path(cfg)
    if damage == "garbage":
        path.write_bytes(b"not an npz file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # a valid cache file of another config placed under this name must not be used
        other = small(tmp_path, seed=7)
        load_moving_digits(other)
        os.replace(cache_path(other), path)

    with pytest.warns(UserWarning, match="regenerating"):
        regenerated = load_moving_digits(cfg)
    assert torch.equal(regenerated["train"]["video"], expected["train"]["video"])
    assert torch.equal(regenerated["test"]["motion"], expected["test"]["motion"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again
        load_moving_digits(cfg)


@pytest.mark.parametrize("directions, phases", [(4, 1), (8, 2)])
def test_centre_of_mass_path_matches_the_motion_class(tmp_path, directions, phases):
    """Known answer: without bounce or distractors, each clip's digit follows exactly its class's path."""
    cfg = small(tmp_path, bounce=False, directions=directions, phases=phases)
    clips = load_moving_digits(cfg)["train"]
    mass = clips["video"].double().sum((-1, -2))
    assert torch.equal(mass, mass[:, :1].expand_as(mass))  # the digit never leaves the canvas
    com = centre_of_mass(clips["video"])
    moved = com - com[:, :1]  # [N, T, 2]
    paths = expected_paths(cfg)  # [M, T, 2]
    error_to_own_path = (moved - paths[clips["motion"]]).abs()
    assert error_to_own_path.max() <= 1.0 + 1e-9  # integer placement rounds each frame by < 1 px per axis
    distance = ((moved[:, None] - paths[None]) ** 2).sum((-1, -2))  # [N, M]
    assert torch.equal(distance.argmin(dim=1), clips["motion"])


def test_one_frame_says_nothing_about_motion_with_bounce(tmp_path):
    """With bounce, frame 0 is placed uniformly for every class, so its position cannot reveal the motion."""
    cfg = small(tmp_path, num_train=3200, directions=4, speeds=[1.0, 2.0])
    clips = load_moving_digits(cfg)["train"]
    mass = clips["video"].double().sum((-1, -2))
    assert torch.equal(mass, mass[:, :1].expand_as(mass))  # bouncing keeps the whole digit visible
    com = centre_of_mass(clips["video"])
    first, last = com[:, 0], com[:, -1]
    overall = first.mean(0)
    spread_of_class_means = [
        (first[clips["motion"] == m].mean(0) - overall).abs().max().item() for m in range(num_motion_classes(cfg))
    ]
    assert max(spread_of_class_means) < 1.5  # pixels; a class-dependent start would shift it by several
    # ...while the clip does: the mean first-to-last displacement of each class points along its direction.
    for motion in range(num_motion_classes(cfg)):
        direction = motion // len(cfg.speeds)
        angle = 2 * math.pi * direction / cfg.directions
        mean_move = (last - first)[clips["motion"] == motion].mean(0)
        heading = torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64)
        assert torch.dot(mean_move, heading) > 0.5


def test_distractors_add_mass_without_moving_the_labelled_digit(tmp_path):
    plain = load_moving_digits(small(tmp_path))["train"]
    busy = load_moving_digits(small(tmp_path, distractors=2))["train"]
    for name in ("appearance", "motion", "image_id"):
        assert torch.equal(plain[name], busy[name])
    assert bool((busy["video"] >= plain["video"]).all())  # max-composited on top of the same clip
    added = busy["video"].double().sum((1, 2, 3)) / plain["video"].double().sum((1, 2, 3))
    assert added.mean() > 1.8  # two extra digits roughly add two digits' worth of ink


def test_noise_changes_pixels_by_about_its_std(tmp_path):
    clean = load_moving_digits(small(tmp_path))["train"]["video"]
    noisy = load_moving_digits(small(tmp_path, noise=0.2))["train"]["video"]
    assert not torch.equal(clean, noisy)
    background = noisy[clean == 0].double()
    # Clipping at 0 leaves E[max(0, N(0, s))] = s / sqrt(2 pi) ~= 20.3 on a black background for s = 0.2 * 255.
    assert 15 < background.mean() < 26
    assert (background > 0).double().mean() > 0.4


def test_dataset_view_normalises_the_default_train_split(tmp_path):
    cfg = MovingDigitsConfig(cache_dir=str(tmp_path))
    data = load_moving_digits(cfg)
    dataset = MovingDigitsDataset(data["train"], float(data["stats"]["mean"]), float(data["stats"]["std"]))
    assert len(dataset) == cfg.num_train
    item = dataset[(3, 12345)]
    assert item["video"].shape == (1, cfg.frames, cfg.canvas, cfg.canvas) and item["video"].dtype == torch.float32
    assert item["appearance"].shape == () and item["appearance"].dtype == torch.int64
    assert item["motion"] == data["train"]["motion"][3]
    assert torch.equal(item["video"], dataset[(3, 0)]["video"])  # no augmentation: the seed changes nothing
    total = total_sq = 0.0
    for index in range(len(dataset)):
        video = dataset[(index, index)]["video"].double()
        total += video.sum().item()
        total_sq += video.square().sum().item()
    count = len(dataset) * item["video"].numel()
    mean = total / count
    std = math.sqrt(total_sq / count - mean**2)
    assert abs(mean) < 1e-3 and abs(std - 1) < 1e-3
    with pytest.raises(ValueError, match="std"):
        MovingDigitsDataset(data["train"], 0.0, 0.0)
