"""Benchmark (not a test): what a training clip costs as videos get longer, and against a plain reader (issue 20).

    python benchmarks/video_seek.py            # lengths 10 s, 1 min, 5 min, 30 min; a long-keyframe set; fast decoding
    python benchmarks/video_seek.py --quick    # a correctness run: short videos, few clips
    git worktree add /tmp/salt-before 53a0407 && PYTHONPATH=/tmp/salt-before python benchmarks/video_seek.py \
        --parts lengths                        # the lengths part with the loader before issue 20

Three parts, each timed round robin (every row times --clips / --rounds clips per round, the median round is
reported), in the main process, 1 decode thread, 1 torch thread, so clips/s is per core:
  lengths     one encoding (160x120, 30 fps, H.264 keyframe every 60 frames, 2 B-frames), videos of 10 s, 1 min,
              5 min and 30 min; the same clip settings (16 frames, step 4, random resized crop to 64 px) and the same
              draws on each. Frame indexes are built in a first pass (timed apart: the once-per-file cost), then each
              timed clip reads its file's index from disk (the per-process memory cleared first), as in a training
              run after its first epoch on a collection too large to keep every index in memory;
  long GOP    a Kinetics-like set (320x240, 30 fps, 10 s, keyframe every 300 frames, 2 B-frames): the loader against
              a plain reader that decodes from frame 0 with PyAV, keeps the wanted frames as RGB at full size, crops
              and resizes them (the same draws and boxes); the loader, and the loader with its colour conversion
              as before issue 20 (scaled at decode where the crop is >= 2x the output); frames decoded per clip;
  fast        the long-GOP set with data.video.fast_decode: clips/s, and the PSNR of its clips' frames against
              exact decoding.
The sets are written once with PyAV into --data-dir; frame indexes go to a new temporary folder each run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

import salt
import video_loader
from machine import matmul_gflops

try:
    from salt.data.video.dataset import VideoListDataset
    from salt.data.video.decode import read_frames, read_video
    from salt.data.video.lists import VideoListConfig
    from salt.data.video.sampling import clip_indices, train_clip_start, uniform
    from salt.data.video.transforms import crop_clip, model_input, random_resized_crop_box
except ImportError:   # a salt tree from before the data package was split (PYTHONPATH=<older commit>): --parts lengths
    from salt.data.video import VideoListConfig, VideoListDataset

try:
    import salt.data.frame_index as frame_index
except ImportError:   # a salt tree from before issue 20 (PYTHONPATH=<git worktree of an older commit>): no indexes
    frame_index = None


def write_video(path: Path, seconds: float, width: int, height: int, keyint: int, seed: int) -> Path:
    """Once: video_loader's scene at width x height, H.264 crf 23, 2 B-frames, a fixed keyframe interval."""
    if not path.exists():
        video_loader.write_video(path, seed, seconds, keyint, width, height, bframes=2, bit_rate=0)
    return path


def write_list(path: Path, videos: list[Path]) -> str:
    path.write_text("".join(f"{v.name} {i % 4}\n" for i, v in enumerate(videos)))
    return str(path)


def timed_rounds(rows: dict, items: list, rounds: int) -> dict[str, float]:
    """rows: name -> callable(item). Median over rounds of seconds per clip, rows in rotating order each round."""
    per_round = max(1, len(items) // rounds)
    times: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for r in range(rounds):
        chunk = items[r * per_round:(r + 1) * per_round]
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for item in chunk:
                rows[name](item)
            times[name].append((time.perf_counter() - start) / len(chunk))
    return {name: statistics.median(t) for name, t in times.items()}


class PlainReader:
    """The training sample of VideoListDataset (same draws, frames and crop box) read the plain way: decode from
    frame 0, keep the wanted frames as full-size RGB, crop and resize them."""

    def __init__(self, cfg: VideoListConfig):
        self.cfg, self.paths = cfg, [e.path for e in VideoListDataset(cfg, train=True).entries]

    def draws(self, seed: int) -> tuple[VideoListConfig, torch.Generator, float, bool]:
        """The sample's generator after its start and flip draws (the crop's draws come next), the draws."""
        cfg, generator = self.cfg, torch.Generator().manual_seed(seed)
        draw = uniform(generator, 0.0, 1.0)
        return cfg, generator, draw, cfg.hflip and uniform(generator, 0.0, 1.0) < 0.5

    def __call__(self, item) -> torch.Tensor:
        index, seed = item
        cfg, generator, draw, flip = self.draws(seed)
        with av.open(self.paths[index]) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            n = stream.frames
            wanted = clip_indices(train_clip_start(draw, n, cfg, cfg.frame_step), n, cfg, cfg.frame_step)
            kept, last = {}, max(wanted)
            for number, frame in enumerate(container.decode(stream)):
                if number in wanted:
                    kept[number] = frame.to_ndarray(format="rgb24")
                if number >= last:
                    break
        frames = [kept[i] for i in wanted]
        box = random_resized_crop_box(*frames[0].shape[:2], cfg.crop_scale, cfg.crop_aspect, generator)
        return crop_clip(frames, box, cfg, flip)


def lengths_part(root: Path, lengths: list[float], clips: int, rounds: int) -> None:
    print("\n== lengths: 160x120, 30 fps, H.264 keyframe every 60 frames, 2 B-frames; clip 16 frames, step 4, 64 px")
    datasets, build_ms = {}, {}
    for seconds in lengths:
        start = time.perf_counter()
        paths = [write_video(root / f"len{seconds:g}s_{i}.mp4", seconds, 160, 120, 60, seed=i) for i in range(2)]
        written = time.perf_counter() - start
        cfg = VideoListConfig(list_path=write_list(root / f"len{seconds:g}s.txt", paths), frames_per_clip=16,
                              frame_step=4, resolution=64, decode_threads=1)
        dataset = VideoListDataset(cfg, train=True)
        start = time.perf_counter()
        for i in range(len(paths)):   # the once-per-file cost: the first sample scans the file for its index
            dataset[(i, 0)]
        build_ms[seconds] = (time.perf_counter() - start) * 1e3 / len(paths)
        datasets[f"{seconds:g} s"] = dataset
        print(f"  {seconds:g} s videos: {os.path.getsize(paths[0]) / 1e6:.1f} MB each ({written:.0f} s to write or "
              f"find); first sample of a file (index built) {build_ms[seconds]:.1f} ms")
    items = video_loader.items_for(2, 2 * clips, seed=1)

    def from_disk(item, dataset):   # as in a collection whose indexes do not all fit in memory: read from disk
        if frame_index is not None:
            frame_index._CACHES.clear()
        return dataset[item]
    medians = timed_rounds({name: (lambda item, d=d: from_disk(item, d)) for name, d in datasets.items()}, items,
                           rounds)
    reference = medians[f"{lengths[0]:g} s"]
    print(f"  {'video length':<14} {'ms per clip':>11} {'x shortest':>10}   (median of {rounds} rounds)")
    for name, seconds_per_clip in medians.items():
        print(f"  {name:<14} {seconds_per_clip * 1e3:11.1f} {seconds_per_clip / reference:9.2f}x")


def long_gop_part(root: Path, videos: int, seconds: float, clips: int, rounds: int) -> tuple[VideoListConfig, list]:
    print(f"\n== long GOP: {videos} videos x {seconds:g} s, 320x240, 30 fps, keyframe every 300 frames, 2 B-frames; "
          "clip 16 frames, step 4")
    paths = [write_video(root / f"gop300_{seconds:g}s_{i}.mp4", seconds, 320, 240, 300, seed=100 + i)
             for i in range(videos)]
    list_path = write_list(root / f"gop300_{seconds:g}s.txt", paths)
    items = video_loader.items_for(videos, 2 * clips, seed=2)   # twice the clips: a clip's cost varies with its place in the GOP
    for resolution in (64, 224):
        cfg = VideoListConfig(list_path=list_path, frames_per_clip=16, frame_step=4, resolution=resolution,
                              decode_threads=1)
        dataset = VideoListDataset(cfg, train=True)
        for i in range(videos):
            dataset[(i, 0)]   # indexes built
        plain, scaled = PlainReader(cfg), ScaledReader(cfg)
        rows = {"plain reader (decode from 0)": plain, "loader": lambda item, d=dataset: d[item],
                "loader, scaled conversion (before)": scaled}
        medians = timed_rounds(rows, items, rounds)
        reference = medians["plain reader (decode from 0)"]
        decoded = statistics.mean(_decoded_per_clip(cfg, dataset, items[:24]))
        print(f"  {resolution} px output; loader decodes {decoded:.0f} frames per clip")
        for name, s in medians.items():
            print(f"    {name:<32} {1 / s:7.1f} clips/s {reference / s:6.2f}x plain")
    return VideoListConfig(list_path=list_path, frames_per_clip=16, frame_step=4, resolution=224,
                           decode_threads=1), items


def scaled_clip(frames, box, info, cfg, flip=False) -> torch.Tensor:
    """The training clip's conversion before issue 20: a crop of at least twice the output size on both sides was
    scaled inside the YUV-to-RGB conversion (swscale), then resized the rest of the way."""
    top, left, h, w = box
    width, height = info.width, info.height
    scale = max(cfg.resolution / h, cfg.resolution / w)
    if scale <= 0.5:
        width, height = round(width * scale), round(height * scale)
        bottom, right = min(round((top + h) * scale), height), min(round((left + w) * scale), width)
        top, left = round(top * scale), round(left * scale)
        h, w = bottom - top, right - left
    crops = np.stack([frame.to_ndarray(format="rgb24", width=width, height=height)[top:top + h, left:left + w]
                      for frame in frames])
    return model_input(crops, cfg, flip)


class ScaledReader(PlainReader):
    """The loader's training sample (same draws, frames and crop box) converted as before issue 20 (scaled_clip)."""

    def __call__(self, item) -> torch.Tensor:
        index, seed = item
        cfg, generator, draw, flip = self.draws(seed)
        decoded = read_video(self.paths[index], lambda info: clip_indices(
            train_clip_start(draw, info.num_frames, cfg, cfg.frame_step), info.num_frames, cfg, cfg.frame_step),
            cfg.decode_threads)
        box = random_resized_crop_box(decoded.info.height, decoded.info.width, cfg.crop_scale, cfg.crop_aspect,
                                      generator)
        return scaled_clip(decoded.frames, box, decoded.info, cfg, flip)


def _decoded_per_clip(cfg: VideoListConfig, dataset: VideoListDataset, items) -> list[int]:
    out = []
    for index, seed in items:
        draw = uniform(torch.Generator().manual_seed(seed), 0.0, 1.0)
        decoded = read_video(dataset.entries[index].path, lambda info: clip_indices(
            train_clip_start(draw, info.num_frames, cfg, cfg.frame_step), info.num_frames, cfg, cfg.frame_step),
            threads=1)
        out.append(decoded.decoded)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def fast_part(cfg: VideoListConfig, items: list, rounds: int) -> None:
    print("\n== fast decoding (data.video.fast_decode: skip_loop_filter=all, flags2=+fast) on the long-GOP set, 224 px")
    exact = VideoListDataset(cfg, train=True)
    fast = VideoListDataset(VideoListConfig(**{**vars(cfg), "fast_decode": True}), train=True)
    medians = timed_rounds({"exact": lambda item: exact[item], "fast": lambda item: fast[item]}, items, rounds)
    values = []
    for index, seed in items[:16]:
        draw = uniform(torch.Generator().manual_seed(seed), 0.0, 1.0)

        def plan(info):
            return clip_indices(train_clip_start(draw, info.num_frames, cfg, cfg.frame_step),
                                      info.num_frames, cfg, cfg.frame_step)
        path = exact.entries[index].path
        pairs = zip(read_frames(path, plan, 1)[0], read_frames(path, plan, 1, fast=True)[0])
        values += [psnr(f, e) for e, f in pairs]
    print(f"    exact {1 / medians['exact']:7.1f} clips/s; fast {1 / medians['fast']:7.1f} clips/s "
          f"({medians['exact'] / medians['fast']:.2f}x); PSNR of fast frames against exact: median "
          f"{statistics.median(values):.1f} dB, min {min(values):.1f} dB over {len(values)} frames")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300, 1800], help="video lengths, s")
    parser.add_argument("--clips", type=int, default=96, help="clips timed per row, over all rounds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--gop-videos", type=int, default=16)
    parser.add_argument("--data-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "salt-video-bench"))
    parser.add_argument("--parts", nargs="+", default=["lengths", "gop", "fast"], choices=["lengths", "gop", "fast"],
                        help="which parts to run; `--parts lengths` also runs on an older salt tree (PYTHONPATH)")
    parser.add_argument("--quick", action="store_true", help="short videos, few clips: checks that it all runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.clips, args.rounds, args.gop_videos = [2, 6], 8, 2, 2
    torch.set_num_threads(1)
    # a fresh index folder, so the first sample of each file builds its index (the once-per-file cost is timed)
    os.environ["SALT_VIDEO_INDEX"] = tempfile.mkdtemp(prefix="salt-video-seek-indexes-")
    root = Path(args.data_dir) / "seek_v2"   # v2: video_loader's scene
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} (1 thread), PyAV {av.__version__}, fp32 matmul "
          f"{matmul_gflops():.0f} GFLOP/s; salt from {os.path.dirname(salt.__file__)}; frame indexes in "
          f"{frame_index.index_folder() if frame_index else '- (this salt has none)'}")
    if "lengths" in args.parts:
        lengths_part(root, args.lengths, args.clips, args.rounds)
    if "gop" in args.parts or "fast" in args.parts:
        cfg, items = long_gop_part(root, args.gop_videos, 3.0 if args.quick else 10.0, args.clips, args.rounds)
        if "fast" in args.parts:
            fast_part(cfg, items, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
