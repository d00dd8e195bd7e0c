"""Benchmark (not a test): training clips per second from video files (issue 10).

    python benchmarks/video_loader.py            # 32 videos of 10 s at 340x256, 30 fps; keyframe intervals 250 and 30
    python benchmarks/video_loader.py --quick    # a correctness run: 4 short videos, a few clips, a smaller FLOP count
    python benchmarks/video_loader.py --list YOUR_LIST [--config CONFIG] [--out loader_rate.json]   # your files

--list: clips/s per CPU core on your own files, for the study dry run's data budget (`--loader-rate FILE`,
docs/studies.md). Training samples of VideoListDataset(train=True) from the list, with the clip settings of a run
config's data.video (--config: a packaged name or a YAML file; default paper_vitl_student), decoded in the main
process with 1 FFmpeg thread and 1 torch thread: one core. Random (index, seed) items (the frame index of each file
they touch built first, untimed: the rate after a first epoch), --rounds rounds, the median
round. With --workers N (default 2, 0: none) it also times N DataLoader workers, for information. It writes a
versioned JSON file (format salt-loader-rate: the rate, the list, the clip settings, the machine, the command)
and prints the clips/s the config's step needs per GPU at --gpu-tflops and the cores that takes at this rate.
Without --list:

It writes a Kinetics-like set with PyAV once (H.264, 1 Mbit/s, 3 B-frames, a fixed keyframe interval; cached in
--data-dir) and times training samples (16 frames, frame step 4, random starts, random resized crop to 224 px,
flip) for:
  before      the decoder as it was before issue 10, a reference copy kept here (two opens per sample, a decode
              from frame 0, float resize), in the main process;
  new         salt.data.video (one open, seek to the keyframe, non-reference frames skipped, uint8 resize), in
              the main process with its default threads and with 1 thread, then with 1 and 2 DataLoader workers
              (1 decode thread each, the default there);
  torchcodec / decord2 (--other-decoders, when importable): the same frames and crops, decoded by them.
Rows run round robin (each round times --clips / --rounds clips per row) and the median round is reported; it also
prints the frames decoded per clip, that the new path gives the clips of the old one, and the clips/s the ViT-L
student step of the paper needs per GPU: the step's FLOPs (salt.study.estimate, this code's accounting) at an
assumed achieved rate (--gpu-tflops), which does not depend on how many GPUs share the batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from machine import matmul_gflops
from salt.data.video.dataset import VideoListDataset
from salt.data.video.decode import read_video
from salt.data.video.lists import VideoListConfig
from salt.data.video.sampling import clip_indices, train_clip_start, uniform
from salt.data.video.transforms import crop_clip, random_resized_crop_box

WIDTH, HEIGHT, FPS = 340, 256, 30


# ---------------------------------------------------------------- a Kinetics-like set


def _scene(rng: np.random.Generator, frames: int, height: int = HEIGHT, width: int = WIDTH):
    """Smooth content that pans, three moving blobs, sensor-like noise: what x264 codes with B-frames."""
    ys, xs = np.mgrid[0:2 * height, 0:2 * width].astype(np.float32)
    freq, phase = rng.uniform(0.01, 0.06, (3, 2)), rng.uniform(0, 6.3, 3)
    background = np.stack([127 + 70 * np.sin(freq[c, 0] * xs + freq[c, 1] * ys + phase[c]) for c in range(3)], -1)
    by, bx = np.mgrid[-32:32, -32:32].astype(np.float32)
    blob = np.exp(-(bx ** 2 + by ** 2) / 300.0)[..., None]
    blobs = [(rng.uniform(0, 1, 2) * (height - 64, width - 64), rng.uniform(-3, 3, 2), rng.uniform(-90, 90, 3))
             for _ in range(3)]
    noise = [rng.normal(0, 5, (height, width, 3)).astype(np.float32) for _ in range(4)]
    pan = rng.uniform(-1.5, 1.5, 2)
    for k in range(frames):
        y0, x0 = int(height / 2 + pan[0] * k) % height, int(width / 2 + pan[1] * k) % width
        image = background[y0:y0 + height, x0:x0 + width] + noise[k % 4]
        for (y, x), (vy, vx), colour in blobs:
            top, left = int(y + vy * k) % (height - 64), int(x + vx * k) % (width - 64)
            image[top:top + 64, left:left + 64] += blob * colour
        yield image.clip(0, 255).astype(np.uint8)


def write_video(path: Path, seed: int, seconds: float, keyint: int, width: int = WIDTH, height: int = HEIGHT,
                bframes: int = 3, bit_rate: int = 1_000_000) -> None:
    """H.264 of `_scene` at 30 fps with a fixed keyframe interval and B-frames, at `bit_rate` (0: crf 23)."""
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(keyint), "keyint_min": str(keyint), "bf": str(bframes), "preset": "veryfast",
                          "x264-params": "b-adapt=0:scenecut=0", **({} if bit_rate else {"crf": "23"})}
        if bit_rate:
            stream.bit_rate = bit_rate
        for image in _scene(np.random.default_rng(seed), round(seconds * FPS), height, width):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)


def video_set(root: Path, videos: int, seconds: float, keyint: int) -> str:
    """The list file of a cached set (written on first use)."""
    folder = root / f"k{keyint}_{videos}x{seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(videos):
        path = folder / f"v{i:03d}.mp4"
        if not path.exists():
            write_video(path, seed=i, seconds=seconds, keyint=keyint)
        lines.append(f"{path.name} {i % 10}")
    list_path = folder / "train.txt"
    list_path.write_text("\n".join(lines) + "\n")
    return str(list_path)


# ---------------------------------------------------------------- the decoder before issue 10 (reference copy)


def _old_frame_count(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            return stream.frames
        return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _old_decode_wanted(path: str, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    kept, size, decoded, last = {}, {}, 0, max(wanted)
    with av.open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            if decoded in wanted:
                size = size or {"width": frame.width, "height": frame.height}
                kept[decoded] = frame.to_ndarray(format="rgb24", **size)
            decoded += 1
            if decoded > last:
                break
    return kept, decoded


def _old_read_frames(path: str, plan) -> list[np.ndarray]:
    num_frames = _old_frame_count(path)
    for _ in range(2):
        indices = plan(num_frames)
        kept, decoded = _old_decode_wanted(path, set(indices))
        if len(kept) == len(set(indices)):
            return [kept[i] for i in indices]
        num_frames = decoded
    raise RuntimeError(f"{path}: decoding stopped early twice")


def _old_crop_resize_normalise(frames, box, cfg) -> torch.Tensor:
    top, left, h, w = box
    video = torch.from_numpy(np.stack([f[top:top + h, left:left + w] for f in frames])).permute(0, 3, 1, 2).float()
    video = F.interpolate(video, size=(cfg.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (video / 255.0 - mean) / std


class BeforeDataset(torch.utils.data.Dataset):
    """VideoListDataset's training sample as it was before issue 10 (same draws, same frames, same crop)."""

    def __init__(self, cfg: VideoListConfig):
        self.cfg, self.paths = cfg, [e.path for e in VideoListDataset(cfg, train=True).entries]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        index, seed = item
        cfg, generator = self.cfg, torch.Generator().manual_seed(seed)
        start_draw = uniform(generator, 0.0, 1.0)
        flip = cfg.hflip and uniform(generator, 0.0, 1.0) < 0.5
        step = cfg.frame_step
        frames = _old_read_frames(self.paths[index], lambda n: clip_indices(train_clip_start(start_draw, n, cfg, step),
                                                                            n, cfg, step))
        box = random_resized_crop_box(*frames[0].shape[:2], cfg.crop_scale, cfg.crop_aspect, generator)
        video = _old_crop_resize_normalise(frames, box, cfg)
        return {"video": (video.flip(-1) if flip else video).permute(1, 0, 2, 3).contiguous()}


class OtherDecoderDataset(BeforeDataset):
    """The same frames and crops decoded by torchcodec or decord2 (frames as RGB uint8), resized as the new path."""

    def __init__(self, cfg: VideoListConfig, name: str):
        super().__init__(cfg)
        self.name = name

    def _decode(self, path: str, start_draw: float) -> list[np.ndarray]:
        cfg, step = self.cfg, self.cfg.frame_step
        if self.name == "torchcodec":
            from torchcodec.decoders import VideoDecoder
            decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=1)
            n = decoder.metadata.num_frames
            indices = clip_indices(train_clip_start(start_draw, n, cfg, step), n, cfg, step)
            return list(decoder.get_frames_at(indices).data.permute(0, 2, 3, 1).numpy())
        import decord
        reader = decord.VideoReader(path, num_threads=1)
        indices = clip_indices(train_clip_start(start_draw, len(reader), cfg, step), len(reader), cfg, step)
        return list(reader.get_batch(indices).asnumpy())

    def __getitem__(self, item):
        index, seed = item
        cfg, generator = self.cfg, torch.Generator().manual_seed(seed)
        start_draw = uniform(generator, 0.0, 1.0)
        flip = cfg.hflip and uniform(generator, 0.0, 1.0) < 0.5
        frames = self._decode(self.paths[index], start_draw)
        box = random_resized_crop_box(*frames[0].shape[:2], cfg.crop_scale, cfg.crop_aspect, generator)
        return {"video": crop_clip(frames, box, cfg, flip)}


def other_decoders() -> list[str]:
    found = []
    for name, module in (("torchcodec", "torchcodec.decoders"), ("decord2", "decord")):
        try:
            __import__(module)
            found.append(name)
        except (ImportError, OSError, RuntimeError) as error:   # torchcodec raises OSError without FFmpeg's libs
            print(f"  ({name} not usable here: {type(error).__name__}: {str(error).splitlines()[0][:100]})")
    return found


# ---------------------------------------------------------------- timing


def items_for(dataset_size: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(dataset_size)), int(rng.integers(2 ** 62))) for _ in range(count)]


class Row:
    def __init__(self, name: str, dataset, workers: int):
        self.name, self.dataset, self.workers, self.rates = name, dataset, workers, []

    def run(self, items: list[tuple[int, int]], batch_size: int) -> None:
        """Clips/s over `items`; with workers, timed from the first batch on (the workers' start-up excluded), in
        batches of at most a third of the items so that some are timed."""
        if self.workers == 0:
            start = time.perf_counter()
            for item in items:
                self.dataset[item]
            self.rates.append(len(items) / (time.perf_counter() - start))
            return
        batch_size = max(1, min(batch_size, len(items) // 3))
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers)
        iterator = iter(loader)
        next(iterator)
        start = time.perf_counter()
        timed = sum(len(batch["video"]) for batch in iterator)
        self.rates.append(timed / (time.perf_counter() - start))


def decoded_per_clip(cfg: VideoListConfig, paths: list[str], items) -> tuple[float, float]:
    """Mean frames decoded per clip: before (a decode from frame 0 to the clip's last frame) and now."""
    before, now = [], []
    for index, seed in items:
        draw = uniform(torch.Generator().manual_seed(seed), 0.0, 1.0)
        plan = lambda info: clip_indices(train_clip_start(draw, info.num_frames, cfg, cfg.frame_step),  # noqa: E731
                                         info.num_frames, cfg, cfg.frame_step)
        decoded = read_video(paths[index], plan, threads=1)
        before.append(max(plan(decoded.info)) + 1)
        now.append(decoded.decoded)
    return statistics.mean(before), statistics.mean(now)


def run_config(name: str, overrides: list[str] = ()):
    """A packaged config or YAML file as a RunConfig, with a placeholder teacher checkpoint: a student config loads
    without its teacher (only shapes and clip settings are read here, no file is opened)."""
    from salt.config import load_config, resolve_config
    from salt.schema import RunConfig
    return load_config(RunConfig, [resolve_config(name)], ["objective.teacher_checkpoint=teacher-placeholder",
                                                           *overrides])


def needed_clips_per_s(gpu_tflops: float, quick: bool) -> tuple[float, float, int]:
    """(step FLOPs of the paper's ViT-L student, clips/s per GPU at gpu_tflops, batch). FLOPs are linear in the
    batch; --quick estimates them at 96 clips and scales."""
    from salt.study.estimate import step_flops
    cfg = run_config("paper_vitl_student", ["train.batch_size=96"] if quick else [])
    paper_batch = run_config("paper_vitl_student").train.batch_size
    flops = step_flops(cfg) * paper_batch / cfg.train.batch_size
    return flops, paper_batch * gpu_tflops * 1e12 / flops, paper_batch


def machine_info() -> tuple[str, float]:
    """(a line saying what this machine and process are, the fp32 matmul GFLOP/s at torch's current threads)."""
    gflops = matmul_gflops()
    return (f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} thread"
            f"{'s' if torch.get_num_threads() > 1 else ''}), PyAV {av.__version__} (FFmpeg libavcodec "
            f"{'.'.join(map(str, av.library_versions['libavcodec']))}), fp32 matmul {gflops:.0f} GFLOP/s"), gflops


# ---------------------------------------------------------------- --list: the rate of your own files


def rate_record(rate: float, list_path: str, videos: int, config: str, video: VideoListConfig, clips_timed: int,
                rounds: int, workers: dict[str, float], gflops: float, command: str) -> dict:
    """The rate file's content (salt.study.estimate.read_loader_rate reads it back): versioned, with what the rate
    holds for (the clip settings) and where it was measured, so a dry run can say when it does not apply."""
    from salt.study.estimate import LOADER_RATE_FORMAT, LOADER_RATE_VERSION, clip_settings
    return {"format": LOADER_RATE_FORMAT, "version": LOADER_RATE_VERSION, "clips_per_s_per_core": rate,
            "list": list_path, "videos": videos, "config": config, "clip": clip_settings(video),
            "clips_timed": clips_timed, "rounds": rounds, "workers_clips_per_s": workers,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "matmul_gflops": round(gflops, 1)}, "command": command}


def measure_list(args, command: str) -> int:
    """--list: training clips/s per core on the user's files with a run config's clip settings, written to --out.
    One core = the main process with 1 decode thread and 1 torch thread; rows count dataset items, and each item
    gives data.video.num_clips clips."""
    from salt.io import atomic_write_json
    from salt.study.estimate import loader_cores
    list_path = os.path.abspath(args.list)
    cfg = run_config(args.config, [f"data.video.list_path={list_path}", "data.video.lists=[]",
                                   "data.video.list_weights=[]"])
    video = dataclasses.replace(cfg.data.video, decode_threads=1)
    dataset = VideoListDataset(video, train=True)
    line, gflops = machine_info()
    print(line)
    print(f"list: {list_path}, {len(dataset)} videos; clip settings of {args.config}: {video.frames_per_clip} frames, "
          f"step {video.frame_step}, fps {video.fps:g}, duration {video.duration:g} s, {video.num_clips} clip(s) a "
          f"video, {video.resolution} px")
    rows = [Row("main process, 1 thread (one core)", dataset, 0)]
    if args.workers:
        rows.append(Row(f"{args.workers} DataLoader workers (1 thread each)", dataset, args.workers))
    items = items_for(len(dataset), args.clips, seed=0)
    start = time.perf_counter()
    for index in sorted({index for index, _ in items}):   # untimed: each touched file's frame index built (on disk
        dataset[(index, 0)]                                # for the workers too): the rate after a first epoch
    print(f"frame indexes of the {len({i for i, _ in items})} files sampled built or found in "
          f"{time.perf_counter() - start:.1f} s (untimed; salt.data.frame_index)")
    per_round = max(1, args.clips // args.rounds)
    for r in range(args.rounds):
        for row in rows:
            row.run(items[r * per_round:(r + 1) * per_round], args.batch_size)
    rates = {row.name: statistics.median(row.rates) * video.num_clips for row in rows}
    for name, rate in rates.items():
        print(f"{name:40s} {rate:8.1f} clips/s   (median of {args.rounds} rounds of {per_round} items)")
    rate = rates[rows[0].name]
    workers = {str(args.workers): rates[rows[1].name]} if args.workers else {}
    atomic_write_json(args.out, rate_record(rate, list_path, len(dataset), args.config, video,
                                            per_round * args.rounds * video.num_clips, args.rounds, workers, gflops,
                                            command))
    print(f"wrote {args.out}: give it to a study's dry run as --loader-rate {args.out}")
    if cfg.data.source == "video_list":
        budget = loader_cores(cfg, rate, args.gpu_tflops, cpus_per_task=1)
        print(f"{args.config} (batch {cfg.train.batch_size}): at {args.gpu_tflops:g} TFLOP/s achieved a GPU trains "
              f"{budget.clips_per_s:.0f} clips/s, ~{budget.cores_needed:.1f} cores at this rate, plus one for the "
              "training process")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keyints", type=int, nargs="+", default=[250, 30], help="keyframe intervals, one set each")
    parser.add_argument("--clips", type=int, default=96, help="clips timed per row (over all rounds)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch for the worker rows")
    parser.add_argument("--data-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "salt-video-bench"))
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="achieved bf16 TFLOP/s per GPU assumed for the needed rate (the study dry run's default)")
    parser.add_argument("--other-decoders", action="store_true", help="also time torchcodec / decord2 if importable")
    parser.add_argument("--quick", action="store_true", help="4 videos of 3 s, 12 clips: checks that it all runs")
    parser.add_argument("--list", help="your video list: clips/s per core on it (no synthetic sets, no old decoder)")
    parser.add_argument("--config", default="paper_vitl_student",
                        help="--list: the run config whose data.video clip settings are timed (name or YAML)")
    parser.add_argument("--out", default="loader_rate.json", help="--list: the rate file written (JSON)")
    parser.add_argument("--workers", type=int, default=2, help="--list: also time this many DataLoader workers "
                        "(for information; 0: skip)")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.clips, args.rounds, args.keyints = 4, 3.0, 12, 2, [args.keyints[0]]
    torch.set_num_threads(1)   # the loader's float work is per sample; the workers rows run one process each
    if args.list:
        command = shlex.join(["python", "benchmarks/video_loader.py", *(sys.argv[1:] if argv is None else argv)])
        return measure_list(args, command)
    print(machine_info()[0])
    cfg_fields = dict(frames_per_clip=16, frame_step=4, resolution=224)
    best_new = 0.0
    for keyint in args.keyints:
        start = time.perf_counter()
        list_path = video_set(Path(args.data_dir), args.videos, args.seconds, keyint)
        cfg = VideoListConfig(list_path=list_path, **cfg_fields)
        one_thread = VideoListConfig(list_path=list_path, decode_threads=1, **cfg_fields)
        new = VideoListDataset(cfg, train=True)
        paths = [e.path for e in new.entries]
        print(f"\nset: {args.videos} videos x {args.seconds:g} s, {WIDTH}x{HEIGHT}, {FPS} fps, H.264 keyframe every "
              f"{keyint} frames, 3 B-frames ({time.perf_counter() - start:.0f} s to write or find); clip: 16 frames, "
              f"step 4, 224 px")
        items = items_for(len(new), args.clips, seed=keyint)
        before = BeforeDataset(cfg)
        grey_levels = torch.tensor(cfg.std).view(3, 1, 1, 1) * 255
        same = [((new[item]["video"] - before[item]["video"]) * grey_levels).abs().mean().item() for item in items[:4]]
        print(f"same clips as before: mean |new - before| = {max(same):.2f} grey levels at most over 4 samples "
              "(the uint8 resize)")
        frames_before, frames_now = decoded_per_clip(cfg, paths, items)
        print(f"frames decoded per clip: {frames_before:.0f} before, {frames_now:.0f} now (seek to the keyframe, "
              "non-reference frames skipped)")
        rows = [Row("before (reference copy), main process", before, 0),
                Row("new, main process (default threads)", new, 0),
                Row("new, main process, 1 thread", VideoListDataset(one_thread, train=True), 0),
                Row("new, 1 worker (1 thread)", new, 1),
                Row("new, 2 workers (1 thread each)", new, 2)]
        if args.other_decoders:
            rows += [Row(f"{name}, main process, 1 thread", OtherDecoderDataset(cfg, name), 0)
                     for name in other_decoders()]
        per_round = max(1, args.clips // args.rounds)
        for r in range(args.rounds):
            chunk = items[r * per_round:(r + 1) * per_round]
            for row in rows[r % len(rows):] + rows[:r % len(rows)]:
                row.run(chunk, args.batch_size)
        reference = statistics.median(rows[0].rates)
        print(f"{'':40s} {'clips/s':>8s} {'vs before':>9s}   (median of {args.rounds} rounds of {per_round} clips)")
        for row in rows:
            rate = statistics.median(row.rates)
            if row.name.startswith("new"):
                best_new = max(best_new, rate)
            print(f"{row.name:40s} {rate:8.1f} {rate / reference:8.2f}x")
    flops, needed, batch = needed_clips_per_s(args.gpu_tflops, args.quick)
    print(f"\nViT-L student step (paper_vitl_student, batch {batch}): {flops:.3g} FLOPs in this code's accounting"
          f"{' (--quick: estimated at 96 clips and scaled)' if args.quick else ''}, {flops / batch:.3g} a clip; at "
          f"{args.gpu_tflops:g} TFLOP/s achieved per GPU a step is {flops / (args.gpu_tflops * 1e12):.1f} GPU-seconds, "
          f"so each GPU trains {needed:.0f} clips/s, whatever the number of GPUs sharing the batch")
    print(f"the fastest new row above gives {best_new:.1f} clips/s: ~{math.ceil(needed / best_new)} such loaders "
          "(CPU cores at that rate) per GPU to keep up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
