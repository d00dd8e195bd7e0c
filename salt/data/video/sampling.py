"""Which frames a clip takes: the frame step (fixed, or from the video's rate: V-JEPA 2's fps / duration), the
training clip's start from a uniform draw (per segment with several clips a video) and the evaluation's evenly
spread starts. "Frame i" is the i-th frame a decode from the start gives (salt.data.video.decode)."""

from __future__ import annotations

import math

import torch

from salt.data.video.decode import UnreadableVideoError
from salt.data.video.lists import VideoListConfig


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw in [low, high) from `generator` (a sample's every random choice comes from its seeded generator)."""
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


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
