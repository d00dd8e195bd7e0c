"""Calibrate the collapse alarm (salt.train.watch) on runs made to collapse and on healthy runs, and measure its cost.

Runs (tiny setting, the demo's step counts, RankMe watched every --watch-every steps):
  the demo's three runs (`python -m salt demo --preset tiny`: pixel teacher 450 steps, SALT student 250, V-JEPA 250);
  made to collapse: V-JEPA without an EMA target (momentum 0: the target is the student itself), V-JEPA at 20x
  the learning rate, and a SALT student at 30x the learning rate.
For each run: RankMe at the first watch, its highest, its last, and where the alarm rule (salt.train.watch) with
each (fraction, share of the run) pair in the grid first fires. Then the step-time cost of one watch at the default interval.

    .venv/bin/python benchmarks/collapse_watch.py --out /tmp/collapse
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from salt.config import load_config, resolve_config
from salt.layout import read_metrics
from salt.schema import RunConfig
from salt.train.loop import Trainer, run_dir_for, train
from salt.train.watch import CollapseWarning

from machine import matmul_gflops   # benchmarks/machine.py

RUNS = {   # name: (config, steps, overrides, kind)
    "teacher": ("tiny_teacher", 450, [], "demo"),
    "student": ("tiny_student", 250, ["objective.teacher_checkpoint={teacher}"], "demo"),
    "vjepa": ("tiny_vjepa", 250, [], "demo"),
    "vjepa-no-ema": ("tiny_vjepa", 250, ["objective.ema_momentum=[0.0,0.0]"], "made to collapse"),
    "vjepa-lr-x20": ("tiny_vjepa", 250, ["optim.lr=2.0e-2"], "made to collapse"),
    "student-lr-x30": ("tiny_student", 250, ["objective.teacher_checkpoint={teacher}", "optim.lr=3.0e-2"],
                       "made to collapse"),
}
FLOOR = 1.0
RULES = [(fraction, after) for after in (0.0, 0.3, 0.5) for fraction in (0.5, 0.7)]   # (fraction, share of run)


def config(name: str, out: Path, watch_every: int) -> RunConfig:
    base, steps, extra, _ = RUNS[name]
    teacher = run_dir_for(config("teacher", out, watch_every)) if name != "teacher" else ""
    return load_config(RunConfig, [resolve_config(base)], [
        f"out_dir={out}", f"name={name}", f"train.steps={steps}", "train.progress=false",
        f"train.watch_every={watch_every}", *(e.format(teacher=teacher) for e in extra)])


def first_alarm(values: list[tuple[int, float]], fraction: float, after: int) -> int | None:
    """salt.train.watch's rule: below FLOOR at any step, or from `after` on below fraction x the highest so far."""
    best = 0.0
    for step, value in values:
        best = max(best, value)
        if value < FLOOR or (step >= after and value < fraction * best):
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/collapse-watch")
    p.add_argument("--watch-every", type=int, default=10)
    p.add_argument("--cost-steps", type=int, default=20)
    args = p.parse_args(argv)
    out = Path(args.out)
    print(f"machine fp32 matmul: {matmul_gflops():.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    trajectories = {}
    for name in RUNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapseWarning)
            train(config(name, out, args.watch_every))
        records = read_metrics(run_dir_for(config(name, out, args.watch_every)) / "metrics.jsonl")
        trajectories[name] = [(r["step"], r["rankme"]) for r in records if "rankme" in r]
    print(f"\nRankMe on 32 fixed training clips every {args.watch_every} steps; first alarm step per rule (fraction "
          f"of the highest, from which share of the run; floor {FLOOR:g})")
    print("| run | kind | first | highest | last | " + " | ".join(f"{f:g}, {a:g}" for f, a in RULES) + " |")
    print("|---|---|---:|---:|---:|" + "---|" * len(RULES))
    for name, values in trajectories.items():
        steps = RUNS[name][1]
        alarms = [first_alarm(values, f, round(a * steps)) for f, a in RULES]
        print(f"| {name} | {RUNS[name][3]} | {values[0][1]:.2f} | {max(v for _, v in values):.2f} | "
              f"{values[-1][1]:.2f} | " + " | ".join("-" if a is None else str(a) for a in alarms) + " |")
    for name, values in trajectories.items():
        print(f"{name}: " + " ".join(f"{s}:{v:.1f}" for s, v in values))
    # cost: the tiny V-JEPA step against one watch (32 clips), side by side in this process
    trainer = Trainer(load_config(RunConfig, [resolve_config("tiny_vjepa")], [
        f"out_dir={out}/cost", "name=cost", "train.progress=false"]))
    from salt.data import collate
    from salt.data.sampler import batch_for_step
    batch = collate([trainer.dataset[i] for i in batch_for_step(len(trainer.dataset), 32, 0, 0)])
    step_s, watch_s = [], []
    for step in range(args.cost_steps):
        t0 = time.perf_counter()
        trainer.step(step, dict(batch))
        t1 = time.perf_counter()
        trainer.watch.measure(trainer._probed(), trainer.dist, trainer._autocast())
        t2 = time.perf_counter()
        if step >= 2:
            step_s.append(t1 - t0)
            watch_s.append(t2 - t1)
    step_ms, watch_ms = statistics.median(step_s) * 1e3, statistics.median(watch_s) * 1e3
    every = trainer.cfg.train.watch_every
    print(f"\ncost, tiny_vjepa batch 32: step {step_ms:.1f} ms, one watch {watch_ms:.1f} ms (medians of "
          f"{len(step_s)}); at the default watch_every={every}: {100 * watch_ms / (every * step_ms):.2f}% of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
