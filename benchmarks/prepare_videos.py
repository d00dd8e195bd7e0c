"""Benchmark (not a test): `python -m salt prepare-videos` on a 720p collection, and training clips/s before and
after (issue 20).

    python benchmarks/prepare_videos.py            # 8 videos of 30-120 s, 1280x720, 30 fps, keyframe every 250
    python benchmarks/prepare_videos.py --quick    # a correctness run: 2 short videos, a few clips

It writes the raw set once (H.264, 3 B-frames, a keyframe every 250 frames: x264's default and what cameras and
web videos give; the scene generator of benchmarks/video_loader.py at 1280x720; cached in --data-dir), prepares it
(short side 256, gop 16, 10 s chunks; --workers = the cores) and prints the preparation's summary (wall, GB before
and after), then times training samples (VideoListDataset(train=True) in the main process, decode_threads=1,
torch 1 thread; 16 frames, frame step 4, 224 px) from the raw and the prepared list, rows round robin, the median
round reported (benchmarks/video_loader.py's Row), and the ratio (issue 20's target: >= 8x); then both sets with
data.video.fast_decode, and its PSNR against exact decoding of the same clips.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import torch

import video_loader
from machine import matmul_gflops
from salt.data.prepare import summary
from salt.data.video.dataset import VideoListDataset
from salt.data.video.lists import VideoListConfig

WIDTH, HEIGHT, FPS, KEYINT = 1280, 720, 30, 250
REPO = Path(__file__).resolve().parents[1]


def raw_set(root: Path, videos: int, shortest: float, longest: float) -> Path:
    """The raw list (written on first use): durations spread evenly from shortest to longest seconds."""
    folder = root / f"raw720_{videos}x{shortest:g}-{longest:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        seconds = shortest + (longest - shortest) * i / max(1, videos - 1)
        path = folder / f"v{i:03d}.mp4"
        if not path.exists():
            # web 720p: 4 Mbit/s, 3 B-frames, a keyframe every 250 frames
            video_loader.write_video(path, i, seconds, KEYINT, WIDTH, HEIGHT, bframes=3, bit_rate=4_000_000)
        lines.append(f"{path.name} {i % 10}")
    list_path = folder / "train.txt"
    list_path.write_text("\n".join(lines) + "\n")
    return list_path


def prepare(list_path: Path, out_dir: Path, workers: int) -> dict:
    """The CLI in a subprocess (what a user runs); returns its report. A cached finished folder does no work."""
    command = [sys.executable, "-m", "salt", "prepare-videos", str(list_path), str(out_dir), "--short-side", "256",
               "--gop", "16", "--workers", str(workers)]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out_dir / "report.json").read_text())


def psnr_fast_vs_exact(cfg: dict, list_path: Path, items) -> float:
    """PSNR (on the model input scaled back to 0-255) of fast_decode against exact decoding, same clips."""
    exact = VideoListDataset(VideoListConfig(list_path=str(list_path), **cfg), train=True)
    fast = VideoListDataset(VideoListConfig(list_path=str(list_path), fast_decode=True, **cfg), train=True)
    std = torch.tensor(exact.cfg.std).view(3, 1, 1, 1) * 255
    mse = statistics.mean((((fast[i]["video"] - exact[i]["video"]) * std) ** 2).mean().item() for i in items)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--shortest", type=float, default=30.0, help="seconds of the shortest video")
    parser.add_argument("--longest", type=float, default=120.0, help="seconds of the longest video")
    parser.add_argument("--clips", type=int, default=96, help="clips timed per row (over all rounds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="preparation workers")
    parser.add_argument("--data-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "salt-prepare-bench"))
    parser.add_argument("--quick", action="store_true", help="2 videos of 4-6 s, 6 clips: checks that it all runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.shortest, args.longest, args.clips, args.rounds = 2, 4.0, 6.0, 6, 2
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} (1 thread), PyAV {av.__version__}, fp32 matmul "
          f"{matmul_gflops():.0f} GFLOP/s")
    start = time.perf_counter()
    raw = raw_set(Path(args.data_dir), args.videos, args.shortest, args.longest)
    print(f"raw set: {args.videos} videos of {args.shortest:g}-{args.longest:g} s, {WIDTH}x{HEIGHT}, {FPS} fps, H.264 "
          f"keyframe every {KEYINT}, 3 B-frames ({time.perf_counter() - start:.0f} s to write or find): {raw}")
    out_dir = raw.parent / "prepared_s256_g16"
    report = prepare(raw, out_dir, args.workers)
    cached = " (a finished folder found: nothing done, wall of this call; delete it to time the preparation)"
    print(f"preparation (--short-side 256 --gop 16, {args.workers} workers){cached if not report['processed_now'] else ''}:")
    print("  " + summary(report).replace("\n", "\n  "))
    prepared = out_dir / raw.name
    cfg = dict(frames_per_clip=16, frame_step=4, resolution=224, decode_threads=1)
    rows = [video_loader.Row("raw", VideoListDataset(VideoListConfig(list_path=str(raw), **cfg), train=True), 0),
            video_loader.Row("prepared", VideoListDataset(VideoListConfig(list_path=str(prepared), **cfg),
                                                          train=True), 0)]
    rows += [video_loader.Row(f"{name}, fast_decode", VideoListDataset(
        VideoListConfig(list_path=str(path), fast_decode=True, **cfg), train=True), 0)
        for name, path in (("raw", raw), ("prepared", prepared))]
    for row in rows:   # frame indexes built before timing (the once-per-file cost of a first epoch)
        for index in range(len(row.dataset)):
            row.dataset[(index, 0)]
    per_round = max(1, args.clips // args.rounds)
    for r in range(args.rounds):
        for row in rows[r % len(rows):] + rows[:r % len(rows)]:
            items = video_loader.items_for(len(row.dataset), per_round, seed=r)
            row.run(items, batch_size=1)
    base = statistics.median(rows[0].rates)
    print(f"\ntraining clips/s, main process, 1 decode thread, 1 torch thread (one core); 16 frames, step 4, 224 px; "
          f"median of {args.rounds} rounds of {per_round} clips")
    for row in rows:
        rate = statistics.median(row.rates)
        print(f"  {row.name:24s} {rate:8.2f} clips/s {rate / base:7.2f}x raw")
    ratio = statistics.median(rows[1].rates) / base
    print(f"prepared / raw: {ratio:.1f}x (issue 20's target: >= 8x) {'met' if ratio >= 8 else 'NOT met'}")
    for name, path, dataset in (("raw", raw, rows[0].dataset), ("prepared", prepared, rows[1].dataset)):
        items = video_loader.items_for(len(dataset), min(8, args.clips), seed=99)
        print(f"fast_decode vs exact decoding, same clips, {name}: PSNR {psnr_fast_vs_exact(cfg, path, items):.1f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
