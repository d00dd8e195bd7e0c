"""Spatial transforms: the crop boxes (training's random resized crop, evaluation's squares along the long side) and
the one path from decoded RGB frames to the model's clip (crop, resize, flip, normalise) that training and
evaluation share."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from salt.data.video.lists import VideoListConfig
from salt.data.video.sampling import uniform


def random_resized_crop_box(
    height: int, width: int, scale: list[float], aspect: list[float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) sampled as torchvision's RandomResizedCrop does, but from ``generator``
    so the crop is reproducible from the sample seed."""
    area = height * width
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(10):
        target_area = area * uniform(generator, scale[0], scale[1])
        ratio = math.exp(uniform(generator, *log_aspect))
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


def crop_clip(frames: list[np.ndarray], box: tuple[int, int, int, int], cfg: VideoListConfig, flip: bool = False
              ) -> torch.Tensor:
    """RGB uint8 [H, W, 3] frames (salt.data.video.decode.read_frames) cropped with the same `box`, resized to
    resolution, flipped if asked, normalised: float32 [3, T, R, R]. Training and evaluation both make their clips
    here.

    Frames are converted to RGB at full size before the crop, then the crop is resized with antialiased bilinear
    interpolation on uint8 (torch's fast path). FFmpeg's unscaled YUV-to-RGB conversion is a fast path of its own:
    scaling inside the conversion, even to a quarter of the pixels, cost more per frame than converting at full
    size and resizing the crop (benchmarks/video_seek.py)."""
    top, left, h, w = box
    return model_input(np.stack([frame[top:top + h, left:left + w] for frame in frames]), cfg, flip)


def model_input(crops: np.ndarray, cfg: VideoListConfig, flip: bool) -> torch.Tensor:
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
