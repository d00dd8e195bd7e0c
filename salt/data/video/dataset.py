"""The video-list dataset.

A sample is a pure function of ``(index, sample_seed)``: every random choice (clip start, crop,
flip) is drawn from a ``torch.Generator`` seeded with ``sample_seed``. The training loop derives
the seed from (run seed, step, position), so a resumed run sees exactly the batches it would have
seen, however many DataLoader workers decode them.

Unreadable files (missing, corrupt, no video frames) are skipped with a warning and the next
list entry is used instead; the number skipped travels with the sample (``decode_failures``) so
the loop can log it even when decoding happens in worker processes. A file whose seek does not
give the clip is decoded from the start instead (``seek_fallbacks``, counted apart).
"""

from __future__ import annotations

import operator
import warnings

import torch

from salt.data.sampler import Mixture
from salt.data.video.decode import DECODE_ERRORS, VideoInfo, read_frames
from salt.data.video.lists import VideoListConfig, list_files, read_video_list
from salt.data.video.sampling import clip_indices, eval_clip_starts, frame_step, train_clip_start, uniform
from salt.data.video.transforms import crop_clip, eval_crop_boxes, random_resized_crop_box
from salt.errors import UserError


class UnreadableVideoListError(UserError, RuntimeError):
    """Every file of a video list failed to give frames (each one's error was an UnreadableVideoWarning)."""


class UnreadableVideoWarning(UserWarning):
    """Emitted once per skipped file, so users can filter or escalate it on its own."""


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
        start_draws = [uniform(generator, 0.0, 1.0) for _ in range(cfg.num_clips)]
        flips = [cfg.hflip and uniform(generator, 0.0, 1.0) < 0.5 for _ in range(cfg.num_clips)]

        def plan(info: VideoInfo) -> list[int]:
            step, n = frame_step(cfg, info.rate), info.num_frames
            return [i for clip, u in enumerate(start_draws)
                    for i in clip_indices(train_clip_start(u, n, cfg, step, clip), n, cfg, step)]

        frames, seek_fallback = read_frames(path, plan, cfg.decode_threads, cfg.fast_decode)
        clips, length = [], cfg.frames_per_clip
        for clip, flip in enumerate(flips):
            box = random_resized_crop_box(*frames[0].shape[:2], cfg.crop_scale, cfg.crop_aspect, generator)
            clips.append(crop_clip(frames[clip * length:(clip + 1) * length], box, cfg, flip))
        return (clips[0] if cfg.num_clips == 1 else torch.stack(clips)), seek_fallback  # [(k,) 3, T, R, R]

    def _load_eval(self, path: str) -> tuple[torch.Tensor, bool]:
        cfg = self.cfg

        def plan(info: VideoInfo) -> list[int]:
            step, n = frame_step(cfg, info.rate), info.num_frames
            return [i for start in eval_clip_starts(n, cfg, step) for i in clip_indices(start, n, cfg, step)]

        frames, seek_fallback = read_frames(path, plan, cfg.decode_threads, cfg.fast_decode)
        views = [crop_clip(frames, box, cfg) for box in eval_crop_boxes(*frames[0].shape[:2], cfg.eval_crops)]
        video = torch.stack(views)  # [crops, 3, clips * T, R, R]
        video = video.view(cfg.eval_crops, 3, cfg.eval_clips, cfg.frames_per_clip, cfg.resolution, cfg.resolution)
        video = video.permute(2, 0, 1, 3, 4, 5).flatten(0, 1).contiguous()  # [clips * crops, 3, T, R, R]
        return video, seek_fallback
