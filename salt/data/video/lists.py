"""Video lists: the `data.video` settings (`VideoListConfig`) and the list files, one `path label` per line (a comma
in a .csv), parsed up front so a malformed line fails before any training starts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from salt.identity import ALWAYS, SCHEDULING_UNLESS_DEFAULT, UNLESS_DEFAULT


@dataclass
class VideoListConfig:
    # One clip per line, "path label", separated by whitespace (or a comma in a .csv).
    # Relative paths resolve against the list file's folder.
    list_path: str = field(default="", metadata=ALWAYS)
    frames_per_clip: int = field(default=16, metadata=ALWAYS)
    frame_step: int = field(default=4, metadata=ALWAYS)   # take every frame_step-th frame
    resolution: int = field(default=224, metadata=ALWAYS)   # output height = width
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0], metadata=ALWAYS)   # random-resized-crop area
    crop_aspect: list[float] = field(default_factory=lambda: [0.75, 1.35], metadata=ALWAYS)   # ... and its w/h
    hflip: bool = field(default=True, metadata=ALWAYS)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406], metadata=ALWAYS)
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225], metadata=ALWAYS)
    eval_clips: int = field(default=1, metadata=ALWAYS)   # uniformly spaced clips per video at evaluation
    # V-JEPA 2's sampling. The frame step from the video's own rate instead of frame_step: a target rate in frames
    # per second (fps), or the clip's length in seconds (duration); at most one of them. num_clips: clips per
    # video per training sample, from equal segments of the video (train.batch_size counts clips, so a step
    # draws batch_size / num_clips videos)
    fps: float = field(default=0.0, metadata=UNLESS_DEFAULT)
    duration: float = field(default=0.0, metadata=UNLESS_DEFAULT)
    num_clips: int = field(default=1, metadata=UNLESS_DEFAULT)
    # A mixture (V-JEPA 2's datasets / datasets_weights): several list files instead of list_path, each sample's
    # list drawn by weight. Without weights the lists are one concatenated list.
    lists: list[str] = field(default_factory=list, metadata=UNLESS_DEFAULT)
    list_weights: list[float] = field(default_factory=list, metadata=UNLESS_DEFAULT)
    # FFmpeg decoding threads per process: 0 = automatic (1 in each DataLoader worker, which together already
    # use the cores; FFmpeg's own count with frame threading when the main process decodes, num_workers=0)
    decode_threads: int = field(default=0, metadata=SCHEDULING_UNLESS_DEFAULT)
    # spatial crops per clip at evaluation: squares spread evenly along the frame's long side (1 = the centre)
    eval_crops: int = field(default=1, metadata=UNLESS_DEFAULT)
    # fast decoding: skip H.264's deblocking filter and allow FFmpeg's inexact speed-ups (faster, not bit-exact:
    # benchmarks/README.md gives the speed and PSNR); off keeps every frame exactly as a full decode gives it
    fast_decode: bool = field(default=False, metadata=UNLESS_DEFAULT)

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
        if self.num_clips < 1 or self.decode_threads < 0:
            raise ValueError(f"num_clips must be >= 1 and decode_threads >= 0, got {self.num_clips}, "
                             f"{self.decode_threads}")
        if self.fps < 0 or self.duration < 0 or (self.fps and self.duration):
            raise ValueError(f"set at most one of fps and duration (each >= 0), got {self.fps} and {self.duration}")
        if self.lists and self.list_path:
            raise ValueError(f"give either list_path or lists (a mixture), not both: {self.list_path!r}, {self.lists}")
        if self.list_weights and (len(self.list_weights) != len(self.lists) or min(self.list_weights) <= 0):
            raise ValueError(f"list_weights needs one weight > 0 per entry of lists, got {self.list_weights} for "
                             f"{len(self.lists)} lists")


def _check_range(name: str, bounds: list[float], upper: float) -> None:
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] <= upper:
        raise ValueError(f"{name} must be [low, high] with 0 < low <= high <= {upper}, got {bounds}")


@dataclass(frozen=True)
class VideoEntry:
    path: str
    label: int
    line: int  # 1-based line in the list file, for messages
    list_path: str = ""  # the list file it came from, for messages


def list_files(cfg: VideoListConfig) -> list[str]:
    """The list file(s) of a config: the mixture's `lists`, or `[list_path]`."""
    return cfg.lists or [cfg.list_path]


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
        try:
            for line_number, raw in enumerate(handle, start=1):
                line = raw.strip()
                if line:
                    entries.append(_parse_line(line, line_number, list_path, root, comma_separated))
        except UnicodeDecodeError as e:
            raise ValueError(f"video list {list_path} is not UTF-8 text ({e.reason}): "
                             "a list is one 'path label' per line") from None
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
    return VideoEntry(path=os.path.join(root, path), label=label, line=line_number, list_path=list_path)
