"""Benchmark (not a test): streaming feature extraction of a generated video benchmark into the feature cache.

    python benchmarks/eval_stream.py [--clips 64] [--workers 2] [--quick]

Writes 4N short mp4 videos (PyAV, h264) with a colour class and a moving square, then extracts features of N and
of 4N of them, each in a fresh process (so each peak RSS is its own): a tiny encoder (128 wide, 4 deep), clips of
16 frames at 64 pixels, DataLoader workers decoding, every token kept (the attentive probe's worst case). Prints
clips/s of extraction (encoded views per second), the peak RSS of the extracting process and of its workers at
N and 4N, their ratio (it should stay near 1: memory does not grow with the number of clips), the time to read
the finished cache back, and the machine's fp32 matmul rate. --quick: N=4, 16-pixel clips (checks the script).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from machine import matmul_gflops


def write_videos(root: Path, count: int, size: int, frames: int) -> list[str]:
    import av
    lines = []
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 4
        video = rng.integers(0, 60, (frames, size, size, 3)).astype(np.uint8)
        video[..., label % 3] += 120
        path = root / f"v{i:05d}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.height = stream.width = size
            stream.pix_fmt = "yuv420p"
            for t, frame in enumerate(video):
                frame[size // 4: size // 2, (2 * t) % (size // 2): (2 * t) % (size // 2) + size // 4] = 255
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        lines.append(f"{path.name} {label}")
    return lines


def child(args) -> None:
    """One extraction in this process: prints a JSON line of its measurements."""
    from salt.data.video.dataset import VideoListDataset
    from salt.data.video.lists import VideoListConfig
    from salt.eval.cache import extract_split, load_split
    from salt.layout import FeatureCacheLayout
    from salt.models import VideoViT
    torch.manual_seed(0)
    encoder = VideoViT(img_size=args.resolution, num_frames=16, in_chans=3, patch_size=args.resolution // 8,
                       tubelet_size=2, embed_dim=128, depth=4, num_heads=4).eval()
    cfg = VideoListConfig(list_path=args.child, frames_per_clip=16, frame_step=1, resolution=args.resolution)
    dataset = VideoListDataset(cfg, train=False)
    cache = FeatureCacheLayout(Path(args.cache))
    rows = list(range(len(dataset)))
    t0 = time.perf_counter()
    split = extract_split(encoder, encoder.grid, dataset, rows, cache, {"bench": len(rows)}, views=1,
                          token_rows=len(rows), shard_size=args.shard_size, batch_size=args.batch_size,
                          num_workers=args.workers, device="cpu")
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = load_split(cache)
    load_s = time.perf_counter() - t0
    assert torch.equal(again.labels, split.labels)
    print(json.dumps({"clips": len(rows), "extract_s": extract_s, "load_s": load_s,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "cache_mb": sum(p.stat().st_size for p in cache.root.iterdir()) / 2 ** 20}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64, help="N (the second measurement uses 4N)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="N=4 at 16 pixels: checks that the script runs")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.resolution, args.shard_size, args.batch_size = 4, 16, 4, 4
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = write_videos(root, 4 * args.clips, size=args.resolution + args.resolution // 2, frames=20)
        results = []
        for count in (args.clips, 4 * args.clips):
            (root / f"list{count}.txt").write_text("\n".join(lines[:count]) + "\n")
            out = subprocess.run([sys.executable, __file__, "--child", str(root / f"list{count}.txt"), "--cache",
                                  str(root / f"cache{count}"), "--resolution", str(args.resolution), "--workers",
                                  str(args.workers), "--batch-size", str(args.batch_size), "--shard-size",
                                  str(args.shard_size)], capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"fp32 matmul: {matmul_gflops():.0f} GFLOP/s; torch threads {torch.get_num_threads()}; "
          f"{args.workers} decoding workers; tiny encoder, 16 x {args.resolution} x {args.resolution} clips, 1 view, "
          f"every token cached (shards of {args.shard_size})")
    print(f"{'clips':>6} {'extract s':>10} {'clips/s':>8} {'peak RSS MB':>12} {'workers MB':>11} {'cache MB':>9} "
          f"{'reload s':>9}")
    for r in results:
        print(f"{r['clips']:>6} {r['extract_s']:>10.2f} {r['clips'] / r['extract_s']:>8.1f} {r['rss_mb']:>12.0f} "
              f"{r['workers_rss_mb']:>11.0f} {r['cache_mb']:>9.1f} {r['load_s']:>9.3f}")
    print(f"peak RSS at 4N / at N: {results[1]['rss_mb'] / results[0]['rss_mb']:.2f}x (extracting process), "
          f"{results[1]['workers_rss_mb'] / max(results[0]['workers_rss_mb'], 1e-9):.2f}x (largest worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
