"""Cut vs keep-every-token multiblock masks (mask.equalize=cut|pad): how many tokens a clip keeps, and what a
training step costs with each.

1. Token retention on the paper's grid (16 frames x 224 px, patch 16, tubelet 2: 8x14x14 = 1568 tokens), V-JEPA's
   two mask configs, batch 3072 on 128 processes: context / target tokens per clip that each choice keeps and
   computes (mask.equalize=cut over the whole batch, cut per 24 clips with mask.cut_group=24, pad) against what
   the clip has and what V-JEPA's own per-GPU collator keeps (re-implemented independently here).
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


CHOICES = {"cut": {}, "cut_group=24": {"cut_group": 24}, "pad": {"equalize": "pad"}}


def vjepa_reference(grid, blocks, batch: int, per_gpu: int, rng: torch.Generator) -> list[tuple]:
    """V-JEPA's collator (its multiblock-3D mask generator, re-implemented here from its description, independent
    of salt.masks): each GPU's batch of `per_gpu` clips draws one block size per mask config, positions per clip
    and block, context = the complement of the union of the blocks (redrawn while empty), then every clip's
    context and target index lists are cut to that GPU batch's shortest (V-JEPA keeps the smallest indices).
    -> per mask config: (context kept per clip, target kept per clip), the mean over the batch."""
    frames, height, width = grid
    out = []
    for cfg in blocks:
        kept_context = kept_target = 0.0
        for _ in range(batch // per_gpu):
            u_t, u_s, u_a = torch.rand(3, generator=rng).tolist()
            t = max(1, int(frames * (cfg.temporal_scale[0] + u_t * (cfg.temporal_scale[1] - cfg.temporal_scale[0]))))
            area = int(height * width * (cfg.spatial_scale[0] + u_s * (cfg.spatial_scale[1] - cfg.spatial_scale[0])))
            aspect = cfg.aspect_ratio[0] + u_a * (cfg.aspect_ratio[1] - cfg.aspect_ratio[0])
            h = min(int(round((area * aspect) ** 0.5)), height)
            w = min(int(round((area / aspect) ** 0.5)), width)
            contexts, targets = [], []
            for _ in range(per_gpu):
                while True:
                    context = torch.ones(frames, height, width, dtype=torch.bool)
                    for _ in range(cfg.num_blocks):
                        top, left, start = (int(torch.randint(0, n - k + 1, (1,), generator=rng))
                                            for n, k in ((height, h), (width, w), (frames, t)))
                        context[start:start + t, top:top + h, left:left + w] = False
                    if context.any():
                        break
                contexts.append(int(context.sum()))
                targets.append(context.numel() - contexts[-1])
            kept_context += min(contexts) * per_gpu / batch
            kept_target += min(targets) * per_gpu / batch
        out.append((kept_context, kept_target))
    return out


def retention(batch: int, processes: int, draws: int) -> list[dict]:
    """Tokens per clip on the paper's grid at `batch` clips over `processes` processes, per mask config (pair):
    what the clip has (its own context / target), what each choice keeps (valid tokens) and computes (the row
    length, padding included, of each process's rows trimmed to their longest as the training loop does), and what
    V-JEPA's own per-GPU collator keeps (vjepa_reference)."""
    grid, base = (8, 14, 14), MaskConfig(kind="multiblock")
    rows = {}
    def add(pair, part, column, value):
        row = rows.setdefault((pair, part), {"pair": ("short-range", "long-range")[pair], "part": part})
        row[column] = row.get(column, 0.0) + value / draws
    for draw in range(draws):
        own = build_mask_generator(base, grid).sample_target_masks(batch, torch.Generator().manual_seed(draw))
        for index, target in enumerate(own):
            add(index, "context", "own", float((~target).sum(dim=1).float().mean()))
            add(index, "target", "own", float(target.sum(dim=1).float().mean()))
        for name, change in CHOICES.items():
            generator = build_mask_generator(MaskConfig(kind="multiblock", **change), grid)
            per_process = batch // processes
            for index, pair in enumerate(generator(batch, torch.Generator().manual_seed(draw))):
                # what each process computes: its rows, trimmed to their longest (as the training loop does)
                shards = [pair.map(lambda t: t[i:i + per_process]).trimmed() for i in range(0, batch, per_process)]
                for part, idx, valid in (("context", pair.context, pair.context_valid),
                                         ("target", pair.target, pair.target_valid)):
                    kept = idx.shape[1] if valid is None else float(valid.sum(dim=1).float().mean())
                    add(index, part, f"{name} kept", kept)
                    add(index, part, f"{name} computed",
                        sum(getattr(shard, part).shape[1] for shard in shards) / len(shards))
        reference = vjepa_reference(grid, base.blocks, batch, batch // processes, torch.Generator().manual_seed(draw))
        for index, (context, target) in enumerate(reference):
            add(index, "context", "V-JEPA kept", context)
            add(index, "target", "V-JEPA kept", target)
    return list(rows.values())


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
    p.add_argument("--batch", type=int, default=3072)
    p.add_argument("--processes", type=int, default=128, help="V-JEPA's collator cuts each process's batch")
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32, help="step-time batch")
    p.add_argument("--skip-steps", action="store_true", help="token counts only")
    args = p.parse_args(argv)
    rows = retention(args.batch, args.processes, args.draws)
    columns = ["own", *(f"{c} {k}" for c in CHOICES for k in ("kept", "computed")), "V-JEPA kept"]
    print(f"tokens per clip, paper grid 8x14x14 (1568 tokens), V-JEPA multiblock, batch {args.batch} on "
          f"{args.processes} processes ({args.batch // args.processes} per process), mean of {args.draws} draws")
    print("| pair | part | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for r in rows:
        print(f"| {r['pair']} | {r['part']} | " + " | ".join(f"{r[c]:.0f}" for c in columns) + " |")
    if args.skip_steps:
        return 0
    print(f"\nmachine fp32 matmul: {matmul_gflops():.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    ms = step_times(args.steps, args.batch_size)
    print(f"V-JEPA step, tiny_vjepa, multiblock, batch {args.batch_size}: cut {ms['cut']:.1f} ms, "
          f"pad {ms['pad']:.1f} ms (pad/cut {ms['pad'] / ms['cut']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
