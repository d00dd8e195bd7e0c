"""Time the pixel (teacher), SALT (student) and V-JEPA training steps side by side, in one process.

Each method is built through the real code path (`Trainer(cfg)` from the packaged tiny_* configs; SALT gets a
teacher checkpoint saved by a 1-step pixel `Trainer.fit()` of --teacher-size, by default --size) and timed with
`Trainer.step()` on one batch held in memory, so the numbers are the loop step itself: masks, forward, backward,
clipping, AdamW, compute accounting and the method's after-step hook (EMA update, teacher check). Methods are
interleaved round robin, starting each round with the next method, so machine noise hits all three alike;
medians are reported.

    .venv/bin/python benchmarks/train_step.py                       # embedded tiny setting
    .venv/bin/python benchmarks/train_step.py --size mini --json out.json
    .venv/bin/python benchmarks/train_step.py --size mini --teacher-size tiny   # the paper's small teacher
    .venv/bin/python benchmarks/train_step.py train.device=cpu      # any config override, for all three
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from salt.config import ConfigError, load_config, resolve_config
from salt.data.sampler import batch_for_step
from salt.flops import num_params, total_flops
from salt.schema import RunConfig
from salt.train.loop import Trainer

METHODS = ("pixel", "salt", "vjepa")
CONFIGS = {"pixel": "tiny_teacher", "salt": "tiny_student", "vjepa": "tiny_vjepa"}
REFERENCE = "salt"
BUSY_WARNING = 0.2   # CPUs kept busy by other processes above which the report warns
# The embedded data draws a 12 px digit on a 32 px canvas; other resolutions keep that proportion.
DIGIT_FRACTION = 12 / 32


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", help="model size preset (micro, tiny, mini, small, base, ...); default: tiny_common's")
    p.add_argument("--teacher-size", help="SALT's frozen teacher size (the paper's small-teacher setting); "
                                          "default: --size")
    p.add_argument("--batch-size", type=positive_int, help="clips per step; default: tiny_common's (32)")
    p.add_argument("--frames", type=positive_int, help="frames per clip; default: tiny_common's (8)")
    p.add_argument("--resolution", type=positive_int, help="square frame size in pixels; default: 32")
    p.add_argument("--patch", type=positive_int, help="spatial patch size; default: tiny_common's (4)")
    p.add_argument("--tubelet", type=positive_int, help="temporal tubelet size; default: tiny_common's (2)")
    p.add_argument("--steps", type=positive_int, default=15, help="timed steps per method (default 15)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps per method first (default 3)")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads; default: leave torch's default")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("overrides", nargs="*", help="config key=value overrides applied to all three methods, "
                                                "e.g. train.device=cpu train.precision=bf16")
    return p.parse_args(argv)


def setting_overrides(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Overrides shared by all three methods: the options given, a small in-memory dataset, a quiet loop."""
    base = load_config(RunConfig, [resolve_config("tiny_common")])
    size = args.size or base.model.size
    patch = args.patch or base.model.patch_size
    tubelet = args.tubelet or base.model.tubelet_size
    resolution = args.resolution or base.data.moving_digits.canvas
    frames = args.frames or base.data.moving_digits.frames
    batch = args.batch_size or base.train.batch_size
    if resolution % patch or frames % tubelet:
        raise ValueError(f"resolution {resolution} must be divisible by patch {patch} and frames {frames} by "
                         f"tubelet {tubelet}")
    digit = min(max(1, round(resolution * DIGIT_FRACTION)), resolution - 1)
    md = "data.moving_digits"
    return [
        f"model.size={size}", f"model.patch_size={patch}", f"model.tubelet_size={tubelet}",
        f"objective.teacher.size={args.teacher_size or size}", f"objective.teacher.patch_size={patch}",
        f"objective.teacher.tubelet_size={tubelet}",
        f"{md}.canvas={resolution}", f"{md}.frames={frames}", f"{md}.digit_size={digit}",
        # One batch is all the benchmark reads: generate no more clips than that, in a throwaway cache.
        f"{md}.num_train={batch}", f"{md}.num_test=1", f"{md}.cache_dir={workdir / 'data'}",
        f"train.batch_size={batch}", f"train.steps={args.warmup + args.steps}", "train.progress=false",
        f"out_dir={workdir}",
    ]


def method_config(method: str, shared: list[str], user: list[str], forced: list[str] = ()) -> RunConfig:
    """The packaged config of `method`, then the shared setting, the user's overrides, and what the benchmark
    must own (run names, teacher checkpoint) last."""
    overrides = [*shared, *user, f"name=bench-{method}", *forced]
    return load_config(RunConfig, [resolve_config(CONFIGS[method])], overrides)


def save_teacher(shared: list[str], user: list[str], teacher_size: str) -> str:
    """A 1-step pixel run: SALT's frozen teacher (its weights do not matter for timing)."""
    cfg = method_config("pixel", shared, user, ["name=bench-teacher", "train.steps=1", f"model.size={teacher_size}"])
    return Trainer(cfg).fit()["checkpoint"]


def teacher_override(method: str, checkpoint: str) -> list[str]:
    return [f"objective.teacher_checkpoint={checkpoint}"] if method == "salt" else []


def step_flops(trainer: Trainer, batch: dict, step: int, count_attention: bool) -> float:
    """FLOPs of `trainer.step(step, batch)` from the objective's cost accounting, with the masks that step drew
    (regenerated from the same (seed, stream, step) seed the loop uses)."""
    masks = trainer.masks_for_step(step, batch["video"].shape[0])
    return total_flops(trainer.objective.costs({"video": batch["video"], "masks": masks}), count_attention)


def timed_step(trainer: Trainer, batch: dict, step: int) -> tuple[float, float]:
    """-> (seconds, FLOPs counted by the loop) for one real loop step."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    flops_before = trainer.flops
    sync()
    start = time.perf_counter()
    trainer.step(step, batch)
    sync()
    return time.perf_counter() - start, trainer.flops - flops_before


def run_round_robin(trainers: dict[str, Trainer], batch: dict, warmup: int, steps: int) -> dict[str, dict]:
    """Warm-up then timed steps; round r starts with method r % 3, so no method always runs first."""
    records = {m: {"seconds": [], "flops": [], "flops_with_attention": []} for m in trainers}
    names = list(trainers)
    for step in range(warmup + steps):
        shift = step % len(names)
        for method in names[shift:] + names[:shift]:
            seconds, flops = timed_step(trainers[method], batch, step)
            if step < warmup:
                continue
            expected = step_flops(trainers[method], batch, step, count_attention=False)
            if not np.isclose(flops, expected, rtol=1e-9):
                raise RuntimeError(f"{method} step {step}: the loop counted {flops:.4g} FLOPs but the regenerated "
                                   f"masks give {expected:.4g}: the mask seeding here no longer matches the loop")
            rec = records[method]
            rec["seconds"].append(seconds)
            rec["flops"].append(flops)
            rec["flops_with_attention"].append(step_flops(trainers[method], batch, step, count_attention=True))
    return records


def summarise(records: dict[str, dict], batch_size: int, clip_tokens: int) -> dict[str, dict]:
    """Median/p10/p90 step time; rates use the median time and the mean FLOPs of the timed steps (multiblock
    masks vary the context size, hence the FLOPs, from step to step)."""
    out = {}
    for method, rec in records.items():
        t = np.asarray(rec["seconds"])
        median = float(np.median(t))
        flops = float(np.mean(rec["flops"]))
        flops_attn = float(np.mean(rec["flops_with_attention"]))
        out[method] = {
            "median_ms": 1e3 * median, "p10_ms": 1e3 * float(np.percentile(t, 10)),
            "p90_ms": 1e3 * float(np.percentile(t, 90)),
            "samples_per_s": batch_size / median, "tokens_per_s": batch_size * clip_tokens / median,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / median / 1e9,
            "gflop_per_s_with_attention": flops_attn / median / 1e9,
            "step_seconds": [float(x) for x in t],
        }
    reference = out[REFERENCE]["median_ms"]
    for result in out.values():
        result["time_vs_salt"] = result["median_ms"] / reference
    return out


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat; None elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many CPUs other processes kept busy while the benchmark ran: the noise that threads contend with."""

    def __enter__(self):
        self.busy, self.own, self.wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = busy_cpu_seconds()
        self.cpus = None if busy is None or self.busy is None else max(
            0.0, (busy - self.busy - (time.process_time() - self.own)) / (time.perf_counter() - self.wall))
        return False


def machine_facts(device: torch.device) -> dict:
    facts = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def describe_models(trainers: dict[str, Trainer]) -> dict[str, dict[str, int]]:
    """Parameters per network: trained ones, plus each method's target network (frozen teacher or EMA copy)."""
    out = {}
    for method, trainer in trainers.items():
        nets = {name: num_params(m) for name, m in trainer.objective.trainable().items()}
        target = getattr(trainer.objective, "target_encoder", None)
        if target is not None:
            nets["target_encoder (no grad)"] = num_params(target)
        out[method] = nets
    return out


def print_report(facts: dict, setting: dict, params: dict, results: dict, batch_size: int) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print("setting: " + ", ".join(f"{k}={v}" for k, v in setting.items()))
    for method, nets in params.items():
        print(f"  {method:6s} " + ", ".join(f"{name} {n / 1e6:.3f}M" for name, n in nets.items()))
    header = (f"{'method':7s} {'median ms':>10s} {'p10 ms':>8s} {'p90 ms':>8s} {'samples/s':>10s} {'tokens/s':>10s} "
              f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'+attn':>8s} {'vs salt':>8s}")
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        print(f"{method:7s} {r['median_ms']:10.1f} {r['p10_ms']:8.1f} {r['p90_ms']:8.1f} {r['samples_per_s']:10.1f} "
              f"{r['tokens_per_s']:10.0f} {r['gflop_per_step']:10.2f} {r['gflop_per_s']:8.1f} "
              f"{r['gflop_per_s_with_attention']:8.1f} {r['time_vs_salt']:7.2f}x")
    other = facts["other_cpus_busy"]
    if facts["device"] == "cpu" and other is not None and other > BUSY_WARNING:
        print(f"WARNING: other processes kept {other:.2f} of {facts['cpus_usable']} CPUs busy during the benchmark: "
              "CPU threads contend and these times can be several-fold off; rerun when idle or try --threads 1.")
    print(f"samples/s and tokens/s count the full clip x batch ({batch_size}); GFLOP/s: the paper's 6ND (trained) / "
          "2ND (forward-only) accounting over the median step; +attn adds attention's 4*n^2*d per layer; "
          "'vs salt': median step time relative to the SALT step.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="salt-bench-") as tmp:
        workdir = Path(tmp)
        try:
            shared = setting_overrides(args, workdir)
            # Validate every config before any work (the teacher path is only checked for being set here).
            configs = {m: method_config(m, shared, args.overrides, teacher_override(m, "not-yet-trained"))
                       for m in METHODS}
        except (ConfigError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        start = time.perf_counter()
        teacher = save_teacher(shared, args.overrides, configs["salt"].objective.teacher.size)
        trainers = {m: Trainer(method_config(m, shared, args.overrides, teacher_override(m, teacher)))
                    for m in METHODS}
        setup_s = time.perf_counter() - start

        first = trainers[METHODS[0]]
        cfg = first.cfg
        items = batch_for_step(len(first.dataset), cfg.train.batch_size, cfg.train.seed, 0)
        batch = default_collate([first.dataset[item] for item in items])

        with OtherLoad() as other_load:
            start = time.perf_counter()
            records = run_round_robin(trainers, batch, args.warmup, args.steps)
            bench_s = time.perf_counter() - start

    B = cfg.train.batch_size
    clip_tokens = first.objective.encoder.num_tokens
    geometry = first.geometry
    setting = {
        "size": cfg.model.size, "teacher_size": configs["salt"].objective.teacher.size, "batch_size": B,
        "frames": geometry.frames, "resolution": geometry.size, "channels": geometry.channels,
        "patch": cfg.model.patch_size, "tubelet": cfg.model.tubelet_size,
        "grid": "x".join(map(str, first.objective.encoder.grid)),
        "clip_tokens": clip_tokens, "predictor": f"{cfg.predictor.embed_dim}x{cfg.predictor.depth}",
        "masks": {m: configs[m].mask.kind for m in METHODS}, "precision": str(first.amp_dtype or "fp32"),
        "warmup": args.warmup, "steps": args.steps, "overrides": args.overrides,
        "setup_s": round(setup_s, 1), "bench_s": round(bench_s, 1),
    }
    facts = machine_facts(first.device)
    facts["other_cpus_busy"] = None if other_load.cpus is None else round(other_load.cpus, 2)
    params = describe_models(trainers)
    results = summarise(records, B, clip_tokens)
    print_report(facts, setting, params, results, B)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": facts, "setting": setting, "params": params, "results": results},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
