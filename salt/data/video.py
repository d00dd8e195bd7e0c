"""Video clips listed in a text file (V-JEPA list format), decoded with PyAV.

A sample is a pure function of ``(index, sample_seed)``: every random choice (clip start, crop,
flip) is drawn from a ``torch.Generator`` seeded with ``sample_seed``. The training loop derives
the seed from (run seed, step, position), so a resumed run sees exactly the batches it would have
seen, however many DataLoader workers decode them.

Unreadable files (missing, corrupt, no video frames) are skipped with a warning and the next
list entry is used instead; the number skipped travels with the sample (``decode_failures``) so
the loop can log it even when decoding happens in worker processes. A file whose seek does not
give the clip is decoded from the start instead (``seek_fallbacks``, counted apart).

Decoding (see "decoding" below) opens each file once per sample, seeks to the keyframe before the
clip and identifies frames by their timestamps, so a clip is exactly the frames a full decode from
the start would give.
"""

from __future__ import annotations

import dataclasses
import itertools
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

from salt.data.frame_index import FrameIndex, SeekMissed, frame_index
from salt.data.sampler import Mixture
from salt.errors import UserError
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


class UnreadableVideoError(Exception):
    """A listed file that opens but cannot give frames (no video stream, nothing decodes)."""


class UnreadableVideoListError(UserError, RuntimeError):
    """Every file of a video list failed to give frames (each one's error was an UnreadableVideoWarning)."""


class UnreadableVideoWarning(UserWarning):
    """Emitted once per skipped file, so users can filter or escalate it on its own."""


# What a bad file can raise; anything else is a bug here and must surface.
DECODE_ERRORS = (av.FFmpegError, OSError, UnreadableVideoError)


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


# ---------------------------------------------------------------- which frames to take


def frame_step(cfg: VideoListConfig, rate: float) -> int:
    """Frames between a clip's frames: `frame_step`, or, when `fps` or `duration` is set, from the video's
    average rate as V-JEPA 2 computes it (the rate rounded up to a whole number, then rate // fps, or
    int(duration * rate / frames_per_clip)), at least 1."""
    if not (cfg.fps or cfg.duration):
        return cfg.frame_step
    if rate <= 0:
        raise UnreadableVideoError("the file gives no frame rate, which data.video.fps / duration sampling needs")
    whole = math.ceil(rate)
    step = whole // cfg.fps if cfg.fps else cfg.duration * whole / cfg.frames_per_clip
    return max(1, int(step))


def clip_indices(start: int, num_frames: int, cfg: VideoListConfig, step: int) -> list[int]:
    """Frame indices of one clip. A video shorter than the clip span repeats its last frame
    (padding keeps the clip's frame rate, which looping would break at the wrap)."""
    return [min(start + i * step, num_frames - 1) for i in range(cfg.frames_per_clip)]


def _last_start(num_frames: int, cfg: VideoListConfig, step: int) -> int:
    span = (cfg.frames_per_clip - 1) * step + 1
    return max(num_frames - span, 0)


def train_clip_start(u: float, num_frames: int, cfg: VideoListConfig, step: int, segment: int = 0) -> int:
    """Map a uniform draw u in [0, 1) to a start; drawing u before the frame count is known keeps the draw
    order fixed whatever the video. With num_clips = k (V-JEPA 2) the video is cut into k equal segments and
    clip `segment` starts in its own one (a segment shorter than the clip lets the clip run into the next
    one); with k = 1 the start is anywhere in [0, last start]."""
    length = num_frames // cfg.num_clips
    first = min(segment * length, num_frames - 1)
    return first + int(u * (_last_start(length, cfg, step) + 1))


def eval_clip_starts(num_frames: int, cfg: VideoListConfig, step: int) -> list[int]:
    """Centres of eval_clips equal segments of the valid start range: one clip is the central
    clip, several are evenly spread and symmetric about the middle."""
    last, clips = _last_start(num_frames, cfg, step), cfg.eval_clips
    return [(2 * i + 1) * last // (2 * clips) for i in range(clips)]


# ---------------------------------------------------------------- decoding
#
# "Frame i" of a video is the i-th frame a decode from the start gives. A sample opens its file once: the header
# gives the frame count, size and rate; the file's frame index (salt.data.frame_index: every frame's presentation
# timestamp and the keyframes, from one demux of the whole file, built once per file and kept in memory and on
# disk) names frame i exactly even when frames are not evenly spaced (variable frame rate), so a clip costs the same
# whatever the video's length. The decoder then seeks to the last keyframe at or before each clip's first frame and
# decodes forward, keeping the frames whose timestamps were asked for; a non-reference frame that was not asked for
# is skipped (no other frame is predicted from it). Where the timestamps cannot be trusted (missing or repeated) or
# the frames after a seek are not the ones asked for, the sample is decoded from the start instead and counted
# apart from unreadable files (`seek_fallbacks`): a slower clip, never a wrong one.
#
# Fast decoding (`data.video.fast_decode`, off by default) skips H.264's in-loop deblocking filter and allows the
# decoder's non-spec-compliant speed-ups (FFmpeg's skip_loop_filter=all, flags2=+fast): faster, not bit-exact
# (benchmarks/README.md measures the speed and the PSNR against exact decoding).


class SeekFallbackWarning(UserWarning):
    """A file decoded from the start because seeking in it did not give the clip (same frames, more time)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a clip plan needs to know of a file, from its one open container."""

    num_frames: int
    height: int
    width: int
    rate: float  # average frames per second in the header, 0 when it gives none


@dataclass
class DecodedFrames:
    frames: list[av.VideoFrame]  # the frames the plan asked for, in its order
    info: VideoInfo
    seek_fallback: bool  # decoded from the start because the seek path could not be trusted
    decoded: int  # frames the decoder gave to get them (skipped non-reference frames not counted)


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise UnreadableVideoError("no video stream")
    return container.streams.video[0]


def thread_count(configured: int) -> int:
    """The decode-thread policy: `decode_threads`, or when it is 0, one thread inside a DataLoader worker (the
    workers already share the cores between them; FFmpeg's own threads on top oversubscribe them) and FFmpeg's
    automatic count (0: one per core) when the main process decodes."""
    if configured:
        return configured
    return 1 if torch.utils.data.get_worker_info() is not None else 0


# FFmpeg decoder options of fast decoding (set before the decoder opens)
FAST_DECODE_OPTIONS = {"skip_loop_filter": "all", "flags2": "+fast"}


def _open_stream(container: av.container.InputContainer, threads: int, fast: bool = False
                 ) -> av.video.stream.VideoStream:
    stream = _video_stream(container)
    count = thread_count(threads)
    stream.codec_context.thread_count = count
    if count != 1:  # frame threading: several frames at once (slice threading alone helps few files)
        stream.codec_context.thread_type = "AUTO"
    if fast:
        stream.codec_context.options = dict(FAST_DECODE_OPTIONS)
    return stream


def _header_info(stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(num_frames=stream.frames, height=stream.codec_context.height, width=stream.codec_context.width,
                     rate=float(rate) if rate else 0.0)


def _decoded_after_seek(container, stream, keyframe: tuple[int, int], wanted: set[int]):
    """Frames from `keyframe` (pts, dts) on, in presentation order. Demuxers seek by presentation time (mp4,
    matroska) or by decoding time: the seek goes to the keyframe's pts, and if it lands past that keyframe, to its
    dts (a dts-based seek then lands on it or before it)."""
    for target in dict.fromkeys(keyframe):
        container.seek(target, stream=stream, backward=True, any_frame=False)  # also flushes the decoder
        packets = container.demux(stream)
        first = next(packets, None)
        if first is not None and first.is_keyframe and first.pts is not None and first.pts <= keyframe[0]:
            break
    else:
        raise SeekMissed(f"seeking to the keyframe at pts {keyframe[0]} lands after it")
    context = stream.codec_context
    for packet in itertools.chain([first], packets):
        # Decided per packet: a non-reference frame nobody asked for is not decoded (others never refer to it).
        context.skip_frame = "DEFAULT" if packet.size == 0 or packet.pts in wanted else "NONREF"
        yield from context.decode(packet)


def _decode_by_seeking(container, stream, index: FrameIndex, wanted: set[int]
                       ) -> tuple[dict[int, av.VideoFrame], int]:
    """pts -> frame for every wanted pts, and how many frames were decoded. A clip whose keyframe lies past what
    was decoded gets its own seek."""
    found: dict[int, av.VideoFrame] = {}
    frames, position, decoded = None, None, 0
    for target in sorted(wanted):
        if target in found:
            continue
        keyframe = index.keyframe_for(target)
        if frames is None or position is None or keyframe[0] > position:
            frames, position = _decoded_after_seek(container, stream, keyframe, wanted), None
        for frame in frames:
            if frame.pts is None:
                raise SeekMissed("a decoded frame has no timestamp")
            position, decoded = frame.pts, decoded + 1
            if frame.pts in wanted and frame.pts not in found:  # (a second seek may show an earlier one again)
                found[frame.pts] = frame
            if frame.pts >= target:
                break
        if target not in found:
            raise SeekMissed(f"the frame at pts {target} did not come out after seeking to pts {keyframe[0]}")
    return found, decoded


def _decode_from_start(path: str, wanted: set[int], threads: int, fast: bool = False
                       ) -> tuple[dict[int, av.VideoFrame], int]:
    """The reference: decode from the start up to the last wanted frame, counting frames. Returns the wanted
    frames and how many frames were decoded (the true count if the stream ended early)."""
    kept: dict[int, av.VideoFrame] = {}
    decoded, last = 0, max(wanted)
    with av.open(path) as container:
        for frame in container.decode(_open_stream(container, threads, fast)):
            if decoded in wanted:
                kept[decoded] = frame
            decoded += 1
            if decoded > last:
                break
    return kept, decoded


def read_video(path: str, plan: Callable[[VideoInfo], list[int]], threads: int = 0, seek: bool = True,
               fast: bool = False) -> DecodedFrames:
    """The frames ``plan(info)`` asks for (frame indices of a decode from the start), in that order. If the
    header overstates the frame count, the plan is redone against the true count. `seek=False` decodes from the
    start (the reference the seek path is tested against); `fast`: fast decoding (not bit-exact)."""
    with av.open(path) as container:
        stream = _open_stream(container, threads, fast)
        info = _header_info(stream)
        index = frame_index(path, container, stream) if seek or info.num_frames <= 0 else None
        if info.num_frames <= 0:  # no count in the header (e.g. some mkv/webm): the index counted the packets
            info = dataclasses.replace(info, num_frames=index.count)
        if info.num_frames == 0:
            raise UnreadableVideoError("no video frames")
        indices = plan(info)
        if seek:
            if index.usable and max(indices) >= index.count > 0:  # the header overstated the count
                info = dataclasses.replace(info, num_frames=index.count)
                indices = plan(info)
            reason = "its timestamps are missing or repeated"
            if index.usable:
                try:
                    found, decoded = _decode_by_seeking(container, stream, index,
                                                        {index.timestamp(i) for i in indices})
                    return _decoded([found[index.timestamp(i)] for i in indices], info, False, decoded)
                except (SeekMissed, av.FFmpegError) as error:
                    reason = f"{type(error).__name__}: {error}"
            warnings.warn(f"decoding {path} from the start: seeking cannot be trusted ({reason})",
                          SeekFallbackWarning, stacklevel=3)
    for _ in range(2):
        kept, decoded = _decode_from_start(path, set(indices), threads, fast)
        if len(kept) == len(set(indices)):
            return _decoded([kept[i] for i in indices], info, seek_fallback=seek, decoded=decoded)
        if decoded == 0:
            raise UnreadableVideoError("no decodable video frames")
        info = dataclasses.replace(info, num_frames=decoded)
        indices = plan(info)
    raise UnreadableVideoError(f"decoding stopped early twice (last time after {info.num_frames} frames)")


def _decoded(frames: list[av.VideoFrame], info: VideoInfo, seek_fallback: bool, decoded: int) -> DecodedFrames:
    if not (info.width and info.height):  # a header without the frame size: the first frame's
        info = dataclasses.replace(info, width=frames[0].width, height=frames[0].height)
    return DecodedFrames(frames, info, seek_fallback, decoded)


def read_frames(path: str, plan: Callable[[VideoInfo], list[int]], threads: int = 0, fast: bool = False
                ) -> tuple[list[np.ndarray], bool]:
    """``read_video`` as full-size RGB uint8 [H, W, 3] arrays (every frame at the header's size, so they stack),
    and whether the seek path fell back to a decode from the start."""
    decoded = read_video(path, plan, threads, fast=fast)
    size = {"width": decoded.info.width, "height": decoded.info.height}
    return [frame.to_ndarray(format="rgb24", **size) for frame in decoded.frames], decoded.seek_fallback


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
    return _model_input(cropped, cfg, flip=False).transpose(0, 1).contiguous()


def decoded_clip(frames: list[av.VideoFrame], box: tuple[int, int, int, int], info: VideoInfo,
                 cfg: VideoListConfig, flip: bool = False) -> torch.Tensor:
    """Decoded frames cropped with `box`, resized, flipped if asked, normalised: float32 [3, T, R, R].

    Each frame is converted to RGB at full size (every frame at the header's size, so they stack), then the crop is
    resized with antialiased bilinear interpolation on uint8 (torch's fast path). FFmpeg's unscaled YUV-to-RGB
    conversion is a fast path of its own: scaling inside the conversion, even to a quarter of the pixels, cost
    more per frame than converting at full size and resizing the crop (benchmarks/video_seek.py)."""
    top, left, h, w = box
    crops = np.stack([frame.to_ndarray(format="rgb24", width=info.width, height=info.height)[top:top + h, left:left + w]
                      for frame in frames])
    return _model_input(crops, cfg, flip)


def _model_input(crops: np.ndarray, cfg: VideoListConfig, flip: bool) -> torch.Tensor:
    """uint8 [T, h, w, 3] -> float32 [3, T, R, R]: resized, flipped if asked, normalised."""
    video = torch.from_numpy(crops).permute(0, 3, 1, 2)
    size = (cfg.resolution, cfg.resolution)
    if tuple(video.shape[-2:]) != size:
        video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    if flip:
        video = video.flip(-1)
    video = video.permute(1, 0, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1, 1), torch.tensor(cfg.std).view(3, 1, 1, 1)
    return video.mul_(1.0 / (255.0 * std)).sub_(mean / std)


# ---------------------------------------------------------------- dataset


class VideoListDataset(torch.utils.data.Dataset):
    """Clips from the videos in ``cfg.list_path`` (or the lists of a mixture, one after the other).

    ``dataset[(index, sample_seed)]`` returns ``{"video": float32, "label": int64 scalar,
    "decode_failures": int64 scalar, "seek_fallbacks": int64 scalar}`` with video
    [3, F, R, R] when training ([num_clips, 3, F, R, R] with num_clips > 1) and
    [eval_clips * eval_crops, 3, F, R, R] at evaluation (clip-major: clip 0's
    crops, then clip 1's, ...). Evaluation is not
    random, so it also accepts a plain int index (a default DataLoader sampler works).
    Files that fail to decode are not remembered: every sample retries them, so a sample stays
    a pure function of (index, seed) in any process.
    """

    def __init__(self, cfg: VideoListConfig, train: bool) -> None:
        self.cfg = cfg
        self.train = train
        parts = [read_video_list(path) for path in list_files(cfg)]
        self.entries = [entry for part in parts for entry in part]
        # The sampler's mixture: the lists one after the other, each drawn by its weight (None: one list).
        self.mixture = Mixture(tuple(map(len, parts)), tuple(cfg.list_weights)) if cfg.list_weights else None

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
                video, seek_fallback = self._load(entry.path, seed)
            except DECODE_ERRORS as error:
                warnings.warn(
                    f"skipping unreadable video {entry.path} (line {entry.line} of {entry.list_path}): "
                    f"{type(error).__name__}: {error}",
                    UnreadableVideoWarning,
                    stacklevel=2,
                )
                continue
            return {
                "video": video,
                "label": torch.tensor(entry.label, dtype=torch.int64),
                "decode_failures": torch.tensor(failures, dtype=torch.int64),
                "seek_fallbacks": torch.tensor(int(seek_fallback), dtype=torch.int64),
            }
        raise UnreadableVideoListError(
            f"all {len(self.entries)} files in the video list {' + '.join(list_files(self.cfg))} were unreadable "
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
            raise IndexError(f"index {index} out of range for {len(self.entries)} videos in "
                             f"{' + '.join(list_files(self.cfg))}")
        return index, seed

    def _load(self, path: str, seed: int) -> tuple[torch.Tensor, bool]:
        """The sample's video and whether its decode fell back from seeking to a decode from the start."""
        if not self.train:
            return self._load_eval(path)
        cfg = self.cfg
        generator = torch.Generator().manual_seed(seed)
        # Fixed draw order: starts, flips, then crops (a crop needs the frame size, from the file's header).
        start_draws = [_uniform(generator, 0.0, 1.0) for _ in range(cfg.num_clips)]
        flips = [cfg.hflip and _uniform(generator, 0.0, 1.0) < 0.5 for _ in range(cfg.num_clips)]

        def plan(info: VideoInfo) -> list[int]:
            step, n = frame_step(cfg, info.rate), info.num_frames
            return [i for clip, u in enumerate(start_draws)
                    for i in clip_indices(train_clip_start(u, n, cfg, step, clip), n, cfg, step)]

        decoded = read_video(path, plan, cfg.decode_threads, fast=cfg.fast_decode)
        clips, length = [], cfg.frames_per_clip
        for clip, flip in enumerate(flips):
            box = random_resized_crop_box(decoded.info.height, decoded.info.width, cfg.crop_scale, cfg.crop_aspect,
                                          generator)
            clips.append(decoded_clip(decoded.frames[clip * length:(clip + 1) * length], box, decoded.info, cfg, flip))
        return (clips[0] if cfg.num_clips == 1 else torch.stack(clips)), decoded.seek_fallback  # [(k,) 3, T, R, R]

    def _load_eval(self, path: str) -> tuple[torch.Tensor, bool]:
        cfg = self.cfg

        def plan(info: VideoInfo) -> list[int]:
            step, n = frame_step(cfg, info.rate), info.num_frames
            return [i for start in eval_clip_starts(n, cfg, step) for i in clip_indices(start, n, cfg, step)]

        frames, seek_fallback = read_frames(path, plan, cfg.decode_threads, cfg.fast_decode)
        views = [crop_resize_normalise(frames, box, cfg) for box in eval_crop_boxes(*frames[0].shape[:2], cfg.eval_crops)]
        video = torch.stack(views, dim=1)  # [clips * T, crops, 3, R, R]
        video = video.view(cfg.eval_clips, cfg.frames_per_clip, cfg.eval_crops, 3, cfg.resolution, cfg.resolution)
        video = video.permute(0, 2, 3, 1, 4, 5).flatten(0, 1).contiguous()  # [clips * crops, 3, T, R, R]
        return video, seek_fallback
