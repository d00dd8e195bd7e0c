"""Decoding: the frames a clip plan asks for, from one open of the file.

"Frame i" of a video is the i-th frame a decode from the start gives. A sample opens its file once: the header
gives the frame count, size and rate; the file's frame index (salt.data.frame_index: every frame's presentation
timestamp and the keyframes, from one demux of the whole file, built once per file and kept in memory and on
disk) names frame i exactly even when frames are not evenly spaced (variable frame rate), so a clip costs the same
whatever the video's length. The decoder then seeks to the last keyframe at or before each clip's first frame and
decodes forward, keeping the frames whose timestamps were asked for; a non-reference frame that was not asked for
is skipped (no other frame is predicted from it). Where the timestamps cannot be trusted (missing or repeated) or
the frames after a seek are not the ones asked for, the sample is decoded from the start instead and counted
apart from unreadable files (`seek_fallbacks`): a slower clip, never a wrong one.

Fast decoding (`data.video.fast_decode`, off by default) skips H.264's in-loop deblocking filter and allows the
decoder's non-spec-compliant speed-ups (FFmpeg's skip_loop_filter=all, flags2=+fast): faster, not bit-exact
(benchmarks/README.md measures the speed and the PSNR against exact decoding).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import torch

from salt.data.frame_index import FrameIndex, SeekMissed, frame_index


class UnreadableVideoError(Exception):
    """A listed file that opens but cannot give frames (no video stream, nothing decodes)."""


# What a bad file can raise; anything else is a bug here and must surface.
DECODE_ERRORS = (av.FFmpegError, OSError, UnreadableVideoError)


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


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """A container's first video stream; a file without one is unreadable."""
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
    stream = video_stream(container)
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
