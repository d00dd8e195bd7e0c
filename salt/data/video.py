"""Video clips listed in a text file (V-JEPA list format), decoded with PyAV.

A sample is a pure function of ``(index, sample_seed)``: every random choice (clip start, crop,
flip) is drawn from a ``torch.Generator`` seeded with ``sample_seed``. The training loop derives
the seed from (run seed, step, position), so a resumed run sees exactly the batches it would have
seen, however many DataLoader workers decode them.

Unreadable files (missing, corrupt, no video frames) are skipped with a warning and the next
list entry is used instead; the number skipped travels with the sample (``decode_failures``) so
the loop can log it even when decoding happens in worker processes.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import torch
import torch.nn.functional as F

from salt.config import ADDED_LATER


@dataclass
class VideoListConfig:
    # One clip per line, "path label", separated by whitespace (or a comma in a .csv).
    # Relative paths resolve against the list file's folder.
    list_path: str = ""
    frames_per_clip: int = 16
    frame_step: int = 4  # take every frame_step-th frame
    resolution: int = 224  # output height = width
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # random-resized-crop area fraction
    crop_aspect: list[float] = field(default_factory=lambda: [0.75, 1.35])  # random-resized-crop w/h
    hflip: bool = True
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    eval_clips: int = 1  # uniformly spaced clips per video at evaluation
    # spatial crops per clip at evaluation: squares spread evenly along the frame's long side (1 = the centre)
    eval_crops: int = field(default=1, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        for name in ("frames_per_clip", "frame_step", "resolution", "eval_clips", "eval_crops"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        _check_range("crop_scale", self.crop_scale, upper=1.0)
        _check_range("crop_aspect", self.crop_aspect, upper=math.inf)
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must have 3 values (one per RGB channel), got {getattr(self, name)}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")


def _check_range(name: str, bounds: list[float], upper: float) -> None:
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= upper:
        raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= {upper}, got {bounds}")


class UnreadableVideoError(Exception):
    """A listed file that opens but cannot give frames (no video stream, nothing decodes)."""


class UnreadableVideoWarning(UserWarning):
    """Emitted once per skipped file, so users can filter or escalate it on its own."""


# What a bad file can raise; anything else is a bug here and must surface.
_DECODE_ERRORS = (av.FFmpegError, OSError, UnreadableVideoError)


@dataclass(frozen=True)
class VideoEntry:
    path: str
    label: int
    line: int  # 1-based line in the list file, for messages


def read_video_list(list_path: str) -> list[VideoEntry]:
    """Parse a list file up front so malformed lines fail before any training starts."""
    if not list_path:
        raise ValueError("list_path is empty: set it to a file with one 'path label' per line")
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"video list not found: {list_path}")
    root = os.path.dirname(os.path.abspath(list_path))
    comma_separated = list_path.lower().endswith(".csv")
    entries = []
    with open(list_path, encoding="utf-8") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if line:
                entries.append(_parse_line(line, line_number, list_path, root, comma_separated))
    if not entries:
        raise ValueError(f"video list {list_path} has no entries")
    return entries


def _parse_line(line: str, line_number: int, list_path: str, root: str, comma_separated: bool) -> VideoEntry:
    # Split at the last separator so paths may contain spaces.
    parts = line.rsplit(",", 1) if comma_separated and "," in line else line.rsplit(None, 1)
    where = f"{list_path}, line {line_number}"
    if len(parts) != 2 or not parts[0].strip():
        raise ValueError(f"{where}: expected 'path label', got {line!r}")
    path, label_text = parts[0].strip(), parts[1].strip()
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(f"{where}: label {label_text!r} is not an integer") from None
    path = os.path.expanduser(path)
    return VideoEntry(path=os.path.join(root, path), label=label, line=line_number)


# ---------------------------------------------------------------- which frames to take


def clip_indices(start: int, num_frames: int, cfg: VideoListConfig) -> list[int]:
    """Frame indices of one clip. A video shorter than the clip span repeats its last frame
    (padding keeps the clip's frame rate, which looping would break at the wrap)."""
    return [min(start + i * cfg.frame_step, num_frames - 1) for i in range(cfg.frames_per_clip)]


def _last_start(num_frames: int, cfg: VideoListConfig) -> int:
    span = (cfg.frames_per_clip - 1) * cfg.frame_step + 1
    return max(num_frames - span, 0)


def train_clip_start(u: float, num_frames: int, cfg: VideoListConfig) -> int:
    """Map a uniform draw u in [0, 1) to a start in [0, last start]; drawing u before the frame
    count is known keeps the draw order fixed whatever the video."""
    return int(u * (_last_start(num_frames, cfg) + 1))


def eval_clip_starts(num_frames: int, cfg: VideoListConfig) -> list[int]:
    """Centres of eval_clips equal segments of the valid start range: one clip is the central
    clip, several are evenly spread and symmetric about the middle."""
    last, clips = _last_start(num_frames, cfg), cfg.eval_clips
    return [(2 * i + 1) * last // (2 * clips) for i in range(clips)]


# ---------------------------------------------------------------- decoding


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise UnreadableVideoError("no video stream")
    return container.streams.video[0]


def _frame_count(path: str) -> int:
    """Frame count from the container header; containers without one (e.g. some mkv/webm) are
    counted by demuxing, which reads packets but decodes nothing."""
    with av.open(path) as container:
        stream = _video_stream(container)
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_wanted(path: str, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode from the start up to the last wanted frame, keeping only wanted frames (RGB uint8).
    Returns them and how many frames were decoded (the true count if the stream ended early)."""
    kept: dict[int, np.ndarray] = {}
    size: dict[str, int] = {}  # every frame at the first kept frame's size, so they stack
    decoded = 0
    last = max(wanted)
    with av.open(path) as container:
        for frame in container.decode(_video_stream(container)):
            if decoded in wanted:
                size = size or {"width": frame.width, "height": frame.height}
                kept[decoded] = frame.to_ndarray(format="rgb24", **size)
            decoded += 1
            if decoded > last:
                break
    return kept, decoded


def read_frames(path: str, plan: Callable[[int], list[int]]) -> list[np.ndarray]:
    """Frames ``plan(num_frames)`` asks for, as RGB uint8 [H, W, 3] arrays in that order.
    If the header overstates the frame count, the plan is redone against what really decodes."""
    num_frames = _frame_count(path)
    for _ in range(2):
        if num_frames == 0:
            raise UnreadableVideoError("no decodable video frames")
        indices = plan(num_frames)
        kept, decoded = _decode_wanted(path, set(indices))
        if len(kept) == len(set(indices)):
            return [kept[i] for i in indices]
        num_frames = decoded
    raise UnreadableVideoError(f"decoding stopped early twice (last time after {num_frames} frames)")


# ---------------------------------------------------------------- spatial transforms


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def random_resized_crop_box(
    height: int, width: int, scale: list[float], aspect: list[float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) sampled as torchvision's RandomResizedCrop does, but from ``generator``
    so the crop is reproducible from the sample seed."""
    area = height * width
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(10):
        target_area = area * _uniform(generator, scale[0], scale[1])
        ratio = math.exp(_uniform(generator, *log_aspect))
        w = round(math.sqrt(target_area * ratio))
        h = round(math.sqrt(target_area / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(height - h + 1, (), generator=generator))
            left = int(torch.randint(width - w + 1, (), generator=generator))
            return top, left, h, w
    # Fallback (as torchvision): the whole frame, cut to the nearest allowed aspect ratio.
    w, h = width, height
    if width / height < aspect[0]:
        h = round(width / aspect[0])
    elif width / height > aspect[1]:
        w = round(height * aspect[1])
    return (height - h) // 2, (width - w) // 2, h, w


def centre_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest centred square: cropping it and resizing to R equals 'resize the short side to
    R, then centre-crop R', without resizing pixels that are thrown away."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def eval_crop_boxes(height: int, width: int, crops: int) -> list[tuple[int, int, int, int]]:
    """Test-time spatial views: `crops` largest squares spread evenly along the long side, ends included (3 =
    left/centre/right of a landscape frame, V-JEPA's spatial views); one crop is `centre_square_box`."""
    if crops == 1:
        return [centre_square_box(height, width)]
    side = min(height, width)
    slack = max(height, width) - side
    offsets = [i * slack // (crops - 1) for i in range(crops)]
    if width >= height:
        return [(0, left, side, side) for left in offsets]
    return [(top, 0, side, side) for top in offsets]


def crop_resize_normalise(
    frames: list[np.ndarray], box: tuple[int, int, int, int], cfg: VideoListConfig
) -> torch.Tensor:
    """Crop every frame with the same box, resize to resolution, normalise: float32 [T, 3, R, R]."""
    top, left, h, w = box
    cropped = np.stack([frame[top : top + h, left : left + w] for frame in frames])
    video = torch.from_numpy(cropped).permute(0, 3, 1, 2).float()
    size = (cfg.resolution, cfg.resolution)
    video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (video / 255.0 - mean) / std


# ---------------------------------------------------------------- dataset


class VideoListDataset(torch.utils.data.Dataset):
    """Clips from the videos in ``cfg.list_path``.

    ``dataset[(index, sample_seed)]`` returns
    ``{"video": float32, "label": int64 scalar, "decode_failures": int64 scalar}`` with video
    [3, F, R, R] when training and [eval_clips * eval_crops, 3, F, R, R] at evaluation (clip-major: clip 0's
    crops, then clip 1's, ...). Evaluation is not
    random, so it also accepts a plain int index (a default DataLoader sampler works).
    Files that fail to decode are not remembered: every sample retries them, so a sample stays
    a pure function of (index, seed) in any process.
    """

    def __init__(self, cfg: VideoListConfig, train: bool) -> None:
        self.cfg = cfg
        self.train = train
        self.entries = read_video_list(cfg.list_path)

    @property
    def labels(self) -> list[int]:
        return [entry.label for entry in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        index, seed = self._parse_item(item)
        for failures in range(len(self.entries)):
            entry = self.entries[(index + failures) % len(self.entries)]
            try:
                video = self._load(entry.path, seed)
            except _DECODE_ERRORS as error:
                warnings.warn(
                    f"skipping unreadable video {entry.path} (line {entry.line} of {self.cfg.list_path}): "
                    f"{type(error).__name__}: {error}",
                    UnreadableVideoWarning,
                    stacklevel=2,
                )
                continue
            return {
                "video": video,
                "label": torch.tensor(entry.label, dtype=torch.int64),
                "decode_failures": torch.tensor(failures, dtype=torch.int64),
            }
        raise RuntimeError(
            f"all {len(self.entries)} files in the video list {self.cfg.list_path} were unreadable "
            "(each one's error was given in an UnreadableVideoWarning)"
        )

    def _parse_item(self, item: tuple[int, int] | int) -> tuple[int, int]:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            index, seed = operator.index(item[0]), operator.index(item[1])
        elif not self.train and not isinstance(item, (tuple, list)):
            index, seed = operator.index(item), 0
        else:
            raise TypeError(
                f"a training sample is addressed by (index, sample_seed), got {item!r}: "
                "the seed makes clip start, crop and flip reproducible"
            )
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} videos in {self.cfg.list_path}")
        return index, seed

    def _load(self, path: str, seed: int) -> torch.Tensor:
        if not self.train:
            return self._load_eval(path)
        cfg = self.cfg
        generator = torch.Generator().manual_seed(seed)
        # Fixed draw order: start, flip, then crop (the crop needs the decoded frame size).
        start_draw = _uniform(generator, 0.0, 1.0)
        flip = cfg.hflip and _uniform(generator, 0.0, 1.0) < 0.5
        frames = read_frames(path, lambda n: clip_indices(train_clip_start(start_draw, n, cfg), n, cfg))
        height, width = frames[0].shape[:2]
        box = random_resized_crop_box(height, width, cfg.crop_scale, cfg.crop_aspect, generator)
        video = crop_resize_normalise(frames, box, cfg)
        if flip:
            video = video.flip(-1)
        return video.permute(1, 0, 2, 3).contiguous()  # [3, T, R, R]

    def _load_eval(self, path: str) -> torch.Tensor:
        cfg = self.cfg

        def plan(num_frames: int) -> list[int]:
            starts = eval_clip_starts(num_frames, cfg)
            return [i for start in starts for i in clip_indices(start, num_frames, cfg)]

        frames = read_frames(path, plan)
        views = [crop_resize_normalise(frames, box, cfg) for box in eval_crop_boxes(*frames[0].shape[:2], cfg.eval_crops)]
        video = torch.stack(views, dim=1)  # [clips * T, crops, 3, R, R]
        video = video.view(cfg.eval_clips, cfg.frames_per_clip, cfg.eval_crops, 3, cfg.resolution, cfg.resolution)
        return video.permute(0, 2, 3, 1, 4, 5).flatten(0, 1).contiguous()  # [clips * crops, 3, T, R, R]
