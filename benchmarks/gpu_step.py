"""The paper-scale training step on one GPU: the ViT-L SALT student (with a ViT-L and with a ViT-B teacher) and the
ViT-L V-JEPA step, bf16, with torch.compile off/on and activation checkpointing off/on.

For each variant: a Trainer from the packaged paper config (16 frames x 224 px, patch 16, tubelet 2, RoPE,
multiblock masks) on generated clips at --batch-size clips per GPU, --warmup untimed steps (compilation happens
there), then --steps timed `Trainer.step` calls between cuda.synchronize(). Prints the median ms/step, tokens/s
(clip tokens x batch), achieved TFLOP/s from the loop's own 6ND accounting, MFU against the device's dense bf16
peak (--peak-tflops, or a table of known devices), and peak allocated memory.

    .venv/bin/python benchmarks/gpu_step.py                  # on a CUDA device
    .venv/bin/python benchmarks/gpu_step.py --tiny           # any device: tiny models, the same code (a test runs it)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from salt.config import load_config, resolve_config
from salt.data.sampler import batch_for_step
from salt.schema import RunConfig
from salt.train.loop import Trainer

# dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
CASES = {   # name -> (config, teacher config or None)
    "salt-L<-L": ("paper_vitl_student", "paper_vitl_teacher"),
    "salt-L<-B": ("paper_vitl_student_from_vitb", "paper_vitb_teacher"),
    "vjepa-L": ("paper_vitl_vjepa", None),
}


def device_peak(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def setting(args, out: Path) -> list[str]:
    """Generated moving-digit clips in place of a video list (decoding is not what is measured)."""
    if args.tiny:
        size = ["model.size=tiny", "model.patch_size=4", "objective.teacher.size=tiny",
                "objective.teacher.patch_size=4", "predictor.embed_dim=64", "predictor.depth=2",
                "predictor.num_heads=4"]
        clip = ["data.moving_digits.canvas=32", "data.moving_digits.digit_size=12", "data.moving_digits.frames=8"]
    else:
        size, clip = [], ["data.moving_digits.canvas=224", "data.moving_digits.digit_size=84",
                          "data.moving_digits.frames=16"]
    return [*size, *clip, "data.source=moving_digits", "data.num_workers=0", f"data.moving_digits.num_train="
            f"{args.batch_size}", "data.moving_digits.num_test=1", f"data.moving_digits.cache_dir={out / 'data'}",
            f"train.batch_size={args.batch_size}", f"train.steps={args.warmup + args.steps + 1}",
            "train.progress=false", f"out_dir={out}", f"train.device={args.device}",
            *(["train.precision=bf16"] if args.device == "cuda" else [])]


def run_variant(name: str, compile_: bool, checkpointing: bool, args, out: Path, teachers: dict) -> dict:
    config, teacher_config = CASES[name]
    common = setting(args, out)
    if teacher_config and teacher_config not in teachers:   # a 1-step teacher: its weights do not matter here
        t = load_config(RunConfig, [resolve_config(teacher_config)], [*common, f"name=t-{teacher_config}",
                                                                      "train.steps=1"])
        teachers[teacher_config] = Trainer(t).fit()["checkpoint"]
    extra = [f"objective.teacher_checkpoint={teachers[teacher_config]}"] if teacher_config else []
    cfg = load_config(RunConfig, [resolve_config(config)], [
        *common, *extra, f"name={name}-c{int(compile_)}-a{int(checkpointing)}", f"train.compile={compile_}",
        f"model.activation_checkpointing={checkpointing}"])
    trainer = Trainer(cfg)
    items = batch_for_step(len(trainer.dataset), cfg.train.batch_size, 0, 0)
    batch = default_collate([trainer.dataset[item] for item in items])
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    times, flops = [], []
    for step in range(args.warmup + args.steps):
        before = trainer.flops
        sync()
        t0 = time.perf_counter()
        trainer.step(step, dict(batch))
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            flops.append(trainer.flops - before)
    seconds = statistics.median(times)
    tokens = cfg.train.batch_size * trainer.objective.encoder.num_tokens
    achieved = statistics.mean(flops) / seconds / 1e12
    peak = device_peak(trainer.device, args.peak_tflops)
    row = {"case": name, "compile": compile_, "checkpointing": checkpointing, "ms": seconds * 1e3,
           "tokens_per_s": tokens / seconds, "tflops": achieved, "mfu": achieved / peak if peak else None,
           "peak_mem_gb": torch.cuda.max_memory_allocated(trainer.device) / 1e9 if cuda else None}
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny models on 32 px x 8 frames (any device)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=16, help="clips per GPU (default 16)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--compile", nargs="+", type=int, default=[0, 1], choices=[0, 1])
    p.add_argument("--checkpointing", nargs="+", type=int, default=[0, 1], choices=[0, 1])
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available (use --tiny --device cpu)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size} clips per device; "
          f"{'tiny models' if args.tiny else 'ViT-L, 16 x 224 px'}", flush=True)
    rows, teachers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            for compile_ in args.compile:
                for checkpointing in args.checkpointing:
                    r = run_variant(case, bool(compile_), bool(checkpointing), args, Path(tmp), teachers)
                    rows.append(r)
                    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
                    mem = f"{r['peak_mem_gb']:.1f} GB" if r["peak_mem_gb"] is not None else "-"
                    print(f"{case:<10} compile={int(compile_)} ckpt={int(checkpointing)}  {r['ms']:9.1f} ms/step "
                          f"{r['tokens_per_s']:12.0f} tokens/s {r['tflops']:8.2f} TFLOP/s  MFU {mfu:>6}  peak {mem}",
                          flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
