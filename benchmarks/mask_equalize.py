"""Cut vs keep-every-token multiblock masks (mask.equalize=cut|pad): how many tokens a clip keeps, and what a
training step costs with each.

1. Token retention on the paper's grid (16 frames x 224 px, patch 16, tubelet 2: 8x14x14 = 1568 tokens), V-JEPA's
   two mask configs, at several batch sizes: mean context / target tokens per clip that the cut keeps (rows cut
   to the batch's shortest) against what the clip has (what padding keeps), over --draws batches.
2. Step time on this machine: the V-JEPA step (tiny_vjepa, multiblock masks) with cut and padded masks, round
   robin in one process, median ms, beside the machine's fp32 matmul rate.

    .venv/bin/python benchmarks/mask_equalize.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from salt.masks import MaskConfig, build_mask_generator

from machine import matmul_gflops   # benchmarks/machine.py


def retention(batch_sizes: list[int], draws: int) -> list[dict]:
    grid = (8, 14, 14)
    generator = build_mask_generator(MaskConfig(kind="multiblock"), grid)
    rows = []
    for batch in batch_sizes:
        kept = {}   # (pair, part) -> [cut tokens per clip, all tokens per clip]
        for draw in range(draws):
            rng = torch.Generator().manual_seed(draw)
            targets = generator.sample_target_masks(batch, rng)
            for index, target in enumerate(targets):
                for part, mask in (("context", ~target), ("target", target)):
                    counts = mask.sum(dim=1).float()
                    entry = kept.setdefault((index, part), [0.0, 0.0])
                    entry[0] += float(counts.min()) / draws   # every row cut to the shortest
                    entry[1] += float(counts.mean()) / draws  # padding keeps each row's own
        for (index, part), (cut, full) in sorted(kept.items()):
            rows.append({"batch": batch, "pair": ("short-range", "long-range")[index], "part": part,
                         "cut": cut, "pad": full, "cut_fraction": cut / full})
    return rows


def step_times(steps: int, batch_size: int) -> dict[str, float]:
    from torch.utils.data import default_collate

    from salt.config import load_config, resolve_config
    from salt.data.sampler import batch_for_step
    from salt.schema import RunConfig
    from salt.train.loop import Trainer

    trainers, batches = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("cut", "pad"):
            cfg = load_config(RunConfig, [resolve_config("tiny_vjepa")], [
                f"out_dir={tmp}", f"name={mode}", "mask.kind=multiblock", f"mask.equalize={mode}",
                f"train.batch_size={batch_size}", "train.progress=false", f"train.steps={steps + 10}"])
            trainers[mode] = Trainer(cfg)
            items = batch_for_step(len(trainers[mode].dataset), batch_size, 0, 0)
            batches[mode] = default_collate([trainers[mode].dataset[item] for item in items])
        times = {mode: [] for mode in trainers}
        for step in range(steps + 2):
            for mode, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.step(step, dict(batches[mode]))
                if step >= 2:   # warm-up
                    times[mode].append(time.perf_counter() - t0)
    return {mode: statistics.median(t) * 1e3 for mode, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[24, 384, 3072])
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32, help="step-time batch")
    args = p.parse_args(argv)
    print("tokens per clip kept, paper grid 8x14x14 (1568 tokens), V-JEPA multiblock")
    print(f"{'batch':>6} {'pair':<12} {'part':<8} {'cut':>8} {'pad':>8} {'cut/pad':>8}")
    for r in retention(args.batch_sizes, args.draws):
        print(f"{r['batch']:>6} {r['pair']:<12} {r['part']:<8} {r['cut']:>8.1f} {r['pad']:>8.1f} "
              f"{r['cut_fraction']:>8.2f}")
    print(f"\nmachine fp32 matmul: {matmul_gflops():.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    ms = step_times(args.steps, args.batch_size)
    print(f"V-JEPA step, tiny_vjepa, multiblock, batch {args.batch_size}: cut {ms['cut']:.1f} ms, "
          f"pad {ms['pad']:.1f} ms (pad/cut {ms['pad'] / ms['cut']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
