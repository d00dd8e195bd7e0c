"""Moving digits: a small, offline, deterministic video dataset with an appearance and a motion label.

Real handwritten digits (scikit-learn's bundled 8x8 ``load_digits``, no download) are upsampled to
``digit_size`` and moved across a black canvas. Each clip has two labels:

- ``appearance``: which digit (10 classes);
- ``motion``: the trajectory class, which one frame cannot tell. The classes are laid out as
  ``motion = (direction * len(speeds) + speed_index) * phases + phase``. Direction ``k`` moves at angle
  ``2*pi*k/directions`` with velocity ``speed * (sin, cos)`` in (row, col) pixels per frame, so
  direction 0 moves right and (with 4 directions) direction 1 moves down.
  With ``phases > 1`` a perpendicular zigzag is added:
  ``WOBBLE_AMPLITUDE * (sin(2*pi*t/frames + phi) - sin(phi))`` with ``phi = 2*pi*phase/phases``;
  classes that differ only in phase share direction and speed (and start at the same place) and differ
  only in the shape of the path, which is the harder knob.

Start positions: with ``bounce=True`` the first frame's position is uniform over the canvas for every class
(so frame 0 says nothing about motion) and the digit reflects at the edges. With ``bounce=False`` the
start is drawn so the whole path stays on the canvas; the first/last frames then hint at the direction
(a rightward digit starts on the left), which is the price of never leaving the canvas.

Train and test clips are made from disjoint digit *images* (a seeded, per-class 70/30 split of the 1797
images); ``image_id`` indexes ``load_digits`` to prove it. Distractor digits come from the same split's
images, move in random directions at random speeds within ``[min(speeds), max(speeds)]`` and always bounce.

Generation is vectorised (the default 10k clips take seconds) and cached as a versioned ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from salt.identity import ALWAYS, SCHEDULING

FORMAT_VERSION = 1
NUM_DIGIT_CLASSES = 10
TEST_IMAGE_FRACTION = 0.3
WOBBLE_AMPLITUDE = 2.0  # pixels; the perpendicular zigzag used when phases > 1
SPLITS = ("train", "test")
SPLIT_FIELDS = ("video", "appearance", "motion", "image_id")
_RENDER_CHUNK = 1024  # clips rendered at once: bounds the temporary index arrays to tens of MB
# Independent random streams, so that e.g. adding distractors leaves the labelled digit untouched.
_STREAM_SPLIT, _STREAM_CLIPS, _STREAM_DISTRACTORS, _STREAM_NOISE = range(4)


@dataclass
class MovingDigitsConfig:
    canvas: int = field(default=32, metadata=ALWAYS)
    digit_size: int = field(default=12, metadata=ALWAYS)
    frames: int = field(default=8, metadata=ALWAYS)
    num_train: int = field(default=8000, metadata=ALWAYS)
    num_test: int = field(default=2000, metadata=ALWAYS)
    directions: int = field(default=4, metadata=ALWAYS)
    speeds: list[float] = field(default_factory=lambda: [1.0, 2.0], metadata=ALWAYS)
    phases: int = field(default=1, metadata=ALWAYS)
    bounce: bool = field(default=True, metadata=ALWAYS)
    distractors: int = field(default=0, metadata=ALWAYS)
    noise: float = field(default=0.0, metadata=ALWAYS)
    seed: int = field(default=0, metadata=ALWAYS)
    cache_dir: str = field(default="", metadata=SCHEDULING)

    def __post_init__(self) -> None:
        if self.canvas < 2:
            raise ValueError(f"canvas must be >= 2, got {self.canvas}")
        if not 1 <= self.digit_size < self.canvas:
            raise ValueError(f"digit_size must be in [1, canvas={self.canvas}), got {self.digit_size}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2 (motion needs several frames), got {self.frames}")
        if self.num_train < 1:
            raise ValueError(f"num_train must be >= 1, got {self.num_train}")
        if self.num_test < 1:
            raise ValueError(f"num_test must be >= 1, got {self.num_test}")
        if self.directions < 1:
            raise ValueError(f"directions must be >= 1, got {self.directions}")
        if not self.speeds:
            raise ValueError("speeds must not be empty")
        self.speeds = [float(s) for s in self.speeds]
        if any(s <= 0 for s in self.speeds):
            raise ValueError(f"speeds must all be > 0, got {self.speeds}")
        if len(set(self.speeds)) != len(self.speeds):
            raise ValueError(f"speeds must be distinct (else motion classes coincide), got {self.speeds}")
        if self.phases < 1:
            raise ValueError(f"phases must be >= 1, got {self.phases}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}")
        self.noise = float(self.noise)
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not self.bounce:
            span = np.ptp(_motion_offsets(self), axis=1).max()
            room = self.canvas - self.digit_size
            if span > room:
                raise ValueError(
                    f"bounce=False needs every path to fit on the canvas, but a path spans {span:.1f} px "
                    f"and canvas - digit_size = {room}: lower speeds or frames, raise canvas, or set bounce=True"
                )


def num_motion_classes(cfg: MovingDigitsConfig) -> int:
    return cfg.directions * len(cfg.speeds) * cfg.phases


def cache_path(cfg: MovingDigitsConfig) -> Path:
    """The cache file for this config: named by format version and a hash of the content-defining fields."""
    root = cfg.cache_dir or os.environ.get("SALT_CACHE") or "~/.cache/salt"
    digest = hashlib.sha256(_content_json(cfg).encode()).hexdigest()[:16]
    return Path(root).expanduser() / f"moving_digits_v{FORMAT_VERSION}_{digest}.npz"


def load_moving_digits(cfg: MovingDigitsConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Both splits plus train-split pixel statistics, generated once and then read from the disk cache.

    Returns ``{"train": {...}, "test": {...}, "stats": {"mean": 0-d float64, "std": 0-d float64}}`` where
    each split holds ``video`` uint8 [N, T, H, W], ``appearance``/``motion``/``image_id`` int64 [N], and the
    stats are the mean/std of ``video / 255`` over the train split (for ``MovingDigitsDataset``).
    """
    path = cache_path(cfg)
    arrays = None
    if path.exists():
        try:
            arrays = _read_cache(path, cfg)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            warnings.warn(f"moving digits cache {path} is unusable ({err}); regenerating it", stacklevel=2)
    if arrays is None:
        arrays = _generate(cfg)
        _write_cache(path, cfg, arrays)
    data: dict[str, dict[str, torch.Tensor]] = {
        split: {name: torch.from_numpy(arrays[f"{split}_{name}"]) for name in SPLIT_FIELDS} for split in SPLITS
    }
    data["stats"] = {
        name: torch.tensor(float(arrays[f"pixel_{name}"]), dtype=torch.float64) for name in ("mean", "std")
    }
    return data


class MovingDigitsDataset(torch.utils.data.Dataset):
    """A thin normalising view over one split; no augmentation, since a flip would change the motion label."""

    def __init__(self, split: dict[str, torch.Tensor], mean: float, std: float):
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        missing = [name for name in ("video", "appearance", "motion") if name not in split]
        if missing:
            raise ValueError(f"split is missing {missing}")
        self.video = split["video"]
        self.appearance = split["appearance"]
        self.motion = split["motion"]
        self.mean = float(mean)
        self.std = float(std)

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``item`` is ``(index, sample_seed)``; the seed is accepted for loop uniformity and unused."""
        index = item[0] if isinstance(item, tuple) else item
        video = (self.video[index].float() / 255.0 - self.mean) / self.std
        return {"video": video.unsqueeze(0), "appearance": self.appearance[index], "motion": self.motion[index]}


# ---------------------------------------------------------------- generation


def _generate(cfg: MovingDigitsConfig) -> dict[str, np.ndarray]:
    digits, targets = _digit_images(cfg.digit_size)
    pools = _split_images(targets, _rng(cfg, _STREAM_SPLIT))
    arrays: dict[str, np.ndarray] = {}
    for split_index, split in enumerate(SPLITS):
        count = cfg.num_train if split == "train" else cfg.num_test
        clips = _make_clips(cfg, digits, targets, pools[split], count, split_index)
        arrays.update({f"{split}_{name}": value for name, value in clips.items()})
    mean, std = _pixel_stats(arrays["train_video"])
    arrays["pixel_mean"] = np.float64(mean)
    arrays["pixel_std"] = np.float64(std)
    return arrays


def _rng(cfg: MovingDigitsConfig, stream: int, split_index: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, split_index, stream])


def _digit_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 [K, size, size] (bilinear upsampling of the 0-16 originals), and labels."""
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import and only needed here

    bunch = load_digits()
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).float().unsqueeze(1)
    upsampled = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
    return upsampled.round().clamp(0, 255).to(torch.uint8).numpy(), bunch.target.astype(np.int64)


def _split_images(targets: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-class seeded 70/30 split of image ids, so test clips show handwriting never seen in training."""
    train, test = [], []
    for digit in range(NUM_DIGIT_CLASSES):
        ids = rng.permutation(np.flatnonzero(targets == digit))
        n_test = int(round(TEST_IMAGE_FRACTION * len(ids)))
        test.append(ids[:n_test])
        train.append(ids[n_test:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _motion_offsets(cfg: MovingDigitsConfig) -> np.ndarray:
    """Continuous (row, col) offset from the start position, [classes, frames, 2], in the label layout order."""
    direction, speed_index, phase = np.meshgrid(
        np.arange(cfg.directions), np.arange(len(cfg.speeds)), np.arange(cfg.phases), indexing="ij"
    )
    angle = 2 * np.pi * direction.ravel() / cfg.directions
    speed = np.asarray(cfg.speeds)[speed_index.ravel()]
    phi = 2 * np.pi * phase.ravel() / cfg.phases
    t = np.arange(cfg.frames, dtype=np.float64)
    along = np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # unit velocity (row, col)
    across = np.stack([np.cos(angle), -np.sin(angle)], axis=-1)  # perpendicular to it
    drift = speed[:, None] * t[None, :]
    wobble = np.zeros_like(drift)
    if cfg.phases > 1:
        cycle = 2 * np.pi * t[None, :] / cfg.frames + phi[:, None]
        wobble = WOBBLE_AMPLITUDE * (np.sin(cycle) - np.sin(phi)[:, None])
    return drift[..., None] * along[:, None, :] + wobble[..., None] * across[:, None, :]


def _reflect(position: np.ndarray, room: int) -> np.ndarray:
    """Fold positions into [0, room] as a ball bouncing between two walls."""
    period = 2 * room
    folded = np.mod(position, period)
    return np.where(folded > room, period - folded, folded)


def _balanced_labels(count: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(count) % classes).astype(np.int64)


def _make_clips(
    cfg: MovingDigitsConfig, digits: np.ndarray, targets: np.ndarray, pool: np.ndarray, count: int, split_index: int
) -> dict[str, np.ndarray]:
    """``count`` labelled clips of one split, using only the digit images in ``pool``."""
    room = cfg.canvas - cfg.digit_size
    rng = _rng(cfg, _STREAM_CLIPS, split_index)
    appearance = _balanced_labels(count, NUM_DIGIT_CLASSES, rng)
    motion = _balanced_labels(count, num_motion_classes(cfg), rng)
    image_id = np.empty(count, dtype=np.int64)
    for digit in range(NUM_DIGIT_CLASSES):
        clips = np.flatnonzero(appearance == digit)
        candidates = pool[targets[pool] == digit]
        image_id[clips] = candidates[rng.integers(len(candidates), size=len(clips))]

    offsets = _motion_offsets(cfg)[motion]  # [N, T, 2]
    if cfg.bounce:
        start = rng.uniform(0, room, size=(count, 1, 2))
        positions = _reflect(start + offsets, room)
    else:
        low, high = -offsets.min(axis=1, keepdims=True), room - offsets.max(axis=1, keepdims=True)
        positions = low + rng.uniform(size=(count, 1, 2)) * (high - low)
        positions = positions + offsets
    layers = [(image_id, np.rint(positions).astype(np.int64))]
    layers += _distractor_layers(cfg, pool, count, _rng(cfg, _STREAM_DISTRACTORS, split_index))

    video = np.zeros((count, cfg.frames, cfg.canvas, cfg.canvas), dtype=np.uint8)
    noise_rng = _rng(cfg, _STREAM_NOISE, split_index)
    for lo in range(0, count, _RENDER_CHUNK):
        chunk = slice(lo, min(lo + _RENDER_CHUNK, count))
        for layer_images, layer_positions in layers:
            _composite(video[chunk], digits[layer_images[chunk]], layer_positions[chunk])
        if cfg.noise > 0:
            gaussian = noise_rng.standard_normal(video[chunk].shape, dtype=np.float32)
            noisy = video[chunk] + gaussian * np.float32(cfg.noise * 255)
            video[chunk] = np.rint(np.clip(noisy, 0, 255)).astype(np.uint8)
    return {"video": video, "appearance": appearance, "motion": motion, "image_id": image_id}


def _distractor_layers(
    cfg: MovingDigitsConfig, pool: np.ndarray, count: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Unlabelled digits on random bouncing straight paths, drawn from this split's images only."""
    room = cfg.canvas - cfg.digit_size
    t = np.arange(cfg.frames, dtype=np.float64)
    layers = []
    for _ in range(cfg.distractors):
        images = pool[rng.integers(len(pool), size=count)]
        angle = rng.uniform(0, 2 * np.pi, size=count)
        speed = rng.uniform(min(cfg.speeds), max(cfg.speeds), size=count)
        velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # [N, 2]
        start = rng.uniform(0, room, size=(count, 1, 2))
        positions = _reflect(start + t[None, :, None] * velocity[:, None, :], room)
        layers.append((images, np.rint(positions).astype(np.int64)))
    return layers


def _composite(video: np.ndarray, patches: np.ndarray, positions: np.ndarray) -> None:
    """Max-composite one digit per clip (patches [n, D, D]) at integer top-left positions [n, T, 2], clipped."""
    n, frames, height, width = video.shape
    size = patches.shape[-1]
    span = np.arange(size)
    rows = positions[:, :, 0, None, None] + span[:, None]  # [n, T, D, 1]
    cols = positions[:, :, 1, None, None] + span[None, :]  # [n, T, 1, D]
    clip_index = np.arange(n)[:, None, None, None]
    frame_index = np.arange(frames)[None, :, None, None]
    clip_index, frame_index, rows, cols, values = np.broadcast_arrays(
        clip_index, frame_index, rows, cols, patches[:, None, :, :]
    )
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    index = (clip_index[inside], frame_index[inside], rows[inside], cols[inside])
    # One digit per clip and frame never covers a pixel twice, so this read-modify-write is exact.
    video[index] = np.maximum(video[index], values[inside])


def _pixel_stats(video: np.ndarray) -> tuple[float, float]:
    """Mean and std of video / 255, accumulated in float64 over chunks to bound memory."""
    total = total_sq = 0.0
    for lo in range(0, len(video), _RENDER_CHUNK):
        chunk = video[lo : lo + _RENDER_CHUNK].astype(np.float64) / 255.0
        total += chunk.sum()
        total_sq += np.square(chunk).sum()
    count = video.size
    mean = total / count
    return mean, float(np.sqrt(max(total_sq / count - mean**2, 0.0)))


# ---------------------------------------------------------------- cache


def _content_json(cfg: MovingDigitsConfig) -> str:
    fields = asdict(cfg)
    del fields["cache_dir"]  # where the file lives does not change what is in it
    return json.dumps(fields, sort_keys=True)


def _expected_shapes(cfg: MovingDigitsConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    shapes = {}
    for split, count in (("train", cfg.num_train), ("test", cfg.num_test)):
        shapes[f"{split}_video"] = ((count, cfg.frames, cfg.canvas, cfg.canvas), np.dtype(np.uint8))
        for name in SPLIT_FIELDS[1:]:
            shapes[f"{split}_{name}"] = ((count,), np.dtype(np.int64))
    shapes["pixel_mean"] = shapes["pixel_std"] = ((), np.dtype(np.float64))
    return shapes


def _read_cache(path: Path, cfg: MovingDigitsConfig) -> dict[str, np.ndarray]:
    """Load and verify a cache file; raises ValueError (or a zip/IO error) when it is not the one asked for."""
    with np.load(path, allow_pickle=False) as archive:
        version = int(archive["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, expected {FORMAT_VERSION}")
        if str(archive["config_json"]) != _content_json(cfg):
            raise ValueError("stored config differs from the requested one")
        arrays = {}
        for key, (shape, dtype) in _expected_shapes(cfg).items():
            value = archive[key]
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(f"{key} has shape {value.shape} {value.dtype}, expected {shape} {dtype}")
            arrays[key] = value
    return arrays


def _write_cache(path: Path, cfg: MovingDigitsConfig, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temp file beside the target and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        # Mostly-black clips compress ~50x; noisy ones barely compress and zlib would take seconds.
        save = np.savez_compressed if cfg.noise == 0 else np.savez
        with os.fdopen(fd, "wb") as handle:
            save(
                handle,
                format_version=np.int64(FORMAT_VERSION),
                config_json=np.array(_content_json(cfg)),
                **arrays,
            )
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
