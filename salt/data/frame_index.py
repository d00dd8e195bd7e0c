"""Frame indexes of video files: every frame's presentation timestamp and every keyframe, from one demux of the
whole file (packets read, nothing decoded), built once per file and kept.

A training sample needs "frame i" of a video (the i-th frame a decode from the start gives) and the keyframe to
seek to. Demuxing the file from its start on every sample makes a clip's cost grow with the video's length (a
clip in the middle of a 1-hour video would read half the file); with the index kept, a sample costs one open,
one lookup and a seek, whatever the length.

Where indexes are kept:
- in each process (each DataLoader worker), most recently used first, up to `MEMORY_FRAMES` timestamps in all;
- on disk, one small file per video in a cache folder: `$SALT_VIDEO_INDEX`, else `video-index/` under
  `$SALT_CACHE` (default `~/.cache/salt`). `SALT_VIDEO_INDEX=none` keeps them in memory only. A file's index is
  named by its absolute path, size and modification time, so a changed or replaced video gets a new index and a
  stale one is never read. Writes are atomic; an unreadable index file is rebuilt; a folder that cannot be
  written is warned about once and the indexes stay in memory.
"""
from __future__ import annotations

import bisect
import hashlib
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from salt.io import atomic_write_bytes

FORMAT = 1
_MAGIC = 0x5341_4C54_4958   # "SALTIX"
MEMORY_FRAMES = 4_000_000   # timestamps kept per process (8 bytes each: ~32 MB), least recently used dropped first


class SeekMissed(Exception):
    """The frames after a seek are not the ones the index promised."""


@dataclass(frozen=True)
class FrameIndex:
    """Frame i's presentation timestamp is pts[i] (sorted); keyframes are (pts, dts) rows, sorted (dts = pts where
    the container gives none). `count` is the number of frames demuxed; `usable` is False when a frame had no
    timestamp or two had the same (the index cannot name frames then: such files are decoded from the start)."""

    pts: np.ndarray         # int64 [count] when usable
    keyframes: np.ndarray   # int64 [K, 2]
    count: int
    usable: bool

    def keyframe_for(self, target: int) -> tuple[int, int]:
        """The last keyframe at or before `target` (pts): decoding from it gives every frame from it on."""
        position = int(np.searchsorted(self.keyframes[:, 0], target, side="right")) - 1
        if position < 0:
            raise SeekMissed(f"no keyframe at or before pts {target}")
        pts, dts = self.keyframes[position]
        return int(pts), int(dts)

    def timestamp(self, frame: int) -> int:
        return int(self.pts[frame])


def _seek_point(keyframe: av.Packet) -> tuple[int, int]:
    """A keyframe packet as FrameIndex stores it: (pts, dts), dts = pts when the container gives none."""
    return keyframe.pts, keyframe.pts if keyframe.dts is None else keyframe.dts


def scan(container: av.container.InputContainer, stream) -> FrameIndex:
    """Demux the whole stream, decoding nothing: every frame's timestamp and every keyframe."""
    pts: list[int] = []
    keyframes, count, usable = [], 0, True
    for packet in container.demux(stream):
        if packet.size == 0:  # the end-of-stream flush
            continue
        if packet.is_discard:  # before an edit list's start: the decoder drops its frame, but a discarded
            if packet.is_keyframe and packet.pts is not None:  # keyframe is where the first kept frames decode from
                keyframes.append(_seek_point(packet))
            continue
        count += 1
        if packet.pts is None or not usable:
            usable = False
            continue   # still counted: the count is the frame count of files without one in the header
        position = bisect.bisect_left(pts, packet.pts)
        if position < len(pts) and pts[position] == packet.pts:
            usable = False
            continue
        pts.insert(position, packet.pts)
        if packet.is_keyframe:
            keyframes.append(_seek_point(packet))
    return FrameIndex(np.asarray(pts if usable else [], dtype=np.int64),
                      np.asarray(sorted(keyframes), dtype=np.int64).reshape(-1, 2), count, usable)


# ---------------------------------------------------------------- keeping indexes


def index_folder() -> Path | None:
    """Where index files live (None: memory only), from the environment (see the module's docstring)."""
    configured = os.environ.get("SALT_VIDEO_INDEX", "")
    if configured.lower() == "none":
        return None
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("SALT_CACHE") or "~/.cache/salt").expanduser() / "video-index"


def file_key(path: str) -> tuple[str, int, int]:
    """The video at `path` as it is now: (absolute path, size, modification time). A changed file has another key."""
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    return absolute, stat.st_size, stat.st_mtime_ns


def _index_name(folder: Path, key: tuple[str, int, int]) -> Path:
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:40]
    return folder / digest[:2] / f"{digest}.idx"


def index_file(folder: Path, path: str) -> Path:
    """The index file of the video at `path` as it is now (`file_key`)."""
    return _index_name(folder, file_key(path))


def _encode(index: FrameIndex) -> bytes:
    head = np.array([_MAGIC, FORMAT, index.count, int(index.usable), len(index.pts), len(index.keyframes)],
                    dtype=np.int64)
    return b"".join(a.astype("<i8").tobytes() for a in (head, index.pts, index.keyframes[:, 0],
                                                        index.keyframes[:, 1]))


def _decode(data: bytes) -> FrameIndex | None:
    """The index in `data`, or None if it is not one this code wrote (another format, torn, foreign)."""
    values = np.frombuffer(data, dtype="<i8") if len(data) % 8 == 0 else np.empty(0, np.int64)
    if len(values) < 6 or values[0] != _MAGIC or values[1] != FORMAT:
        return None
    count, usable, frames, keys = (int(v) for v in values[2:6])
    if len(values) != 6 + frames + 2 * keys or min(count, frames, keys) < 0:
        return None
    body = values[6:].astype(np.int64)
    keyframes = np.stack([body[frames:frames + keys], body[frames + keys:]], axis=1)
    return FrameIndex(body[:frames], keyframes, count, bool(usable))


class IndexCache:
    """Indexes by file: in memory (least recently used dropped beyond `memory_frames` timestamps), then on disk
    (`folder`, None for memory only), else built by `scan` and stored in both."""

    def __init__(self, folder: Path | None, memory_frames: int = MEMORY_FRAMES) -> None:
        self.folder, self.memory_frames = folder, memory_frames
        self._memory: OrderedDict[tuple, FrameIndex] = OrderedDict()
        self._frames = 0
        self.built = 0   # indexes made by scanning in this process (the rest came from memory or disk)
        self._unwritable_warned = False

    def get(self, path: str, container: av.container.InputContainer, stream) -> FrameIndex:
        key = file_key(path)   # one stat: names the index in memory and on disk
        index = self._memory.get(key)
        if index is not None:
            self._memory.move_to_end(key)
            return index
        file = _index_name(self.folder, key) if self.folder is not None else None
        index = self._read(file) if file is not None else None
        if index is None:
            index = scan(container, stream)
            self.built += 1
            if file is not None:
                self._write(file, index)
        self._remember(key, index)
        return index

    def _read(self, file: Path) -> FrameIndex | None:
        try:
            return _decode(file.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as error:
            warnings.warn(f"cannot read the frame index {file} ({error}); rebuilding it", stacklevel=4)
            return None

    def _write(self, file: Path, index: FrameIndex) -> None:
        data = _encode(index)
        try:
            atomic_write_bytes(file, lambda f: f.write(data))
        except OSError as error:
            if not self._unwritable_warned:
                self._unwritable_warned = True
                warnings.warn(f"cannot write frame indexes under {self.folder} ({error}); keeping them in memory "
                              "only (set SALT_VIDEO_INDEX to a writable folder, or to 'none')", stacklevel=4)

    def _remember(self, key: tuple, index: FrameIndex) -> None:
        self._memory[key] = index
        self._frames += len(index.pts) + 1
        while self._frames > self.memory_frames and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            self._frames -= len(dropped.pts) + 1


_CACHES: dict[Path | None, IndexCache] = {}


def frame_index(path: str, container: av.container.InputContainer, stream) -> FrameIndex:
    """The index of the video at `path` (open in `container`), from this process's cache for the folder the
    environment names now; built by demuxing the whole file the first time."""
    folder = index_folder()
    cache = _CACHES.get(folder)
    if cache is None:
        cache = _CACHES[folder] = IndexCache(folder)
    return cache.get(path, container, stream)
