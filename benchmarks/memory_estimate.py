"""The dry run's memory estimate (salt.study.estimate.step_memory) against measured peak memory on CPU.

Each case runs in a fresh process: build the Trainer (weights, frozen teacher / EMA target, data), run one step to
create the optimizer state, then reset the process's peak RSS (/proc/self/clear_refs) and run a second step, with glibc told to return large freed blocks to
the OS at once (MALLOC_MMAP_THRESHOLD_), so that RSS follows live memory. The
peak minus the RSS before that step is what the step allocates on top of resident state: the activations (with
gradients and AdamW state already resident from step one, they are not counted again). The estimate's activation
term is compared with it (fp32, one process, no accumulation unless the case says so).

    .venv/bin/python benchmarks/memory_estimate.py
    .venv/bin/python benchmarks/memory_estimate.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CASES = {   # name -> (packaged config, overrides)
    "pixel-small-16x64": ("tiny_teacher", ["model.size=small", "model.patch_size=8"]),
    "salt-small-16x64": ("tiny_student", ["model.size=small", "model.patch_size=8", "objective.teacher.size=small",
                                          "objective.teacher.patch_size=8"]),
    "vjepa-small-16x64": ("tiny_vjepa", ["model.size=small", "model.patch_size=8"]),
    "vjepa-small-16x64-accum2": ("tiny_vjepa", ["model.size=small", "model.patch_size=8", "train.accumulate=2"]),
    "vjepa-small-16x64-checkpointed": ("tiny_vjepa", ["model.size=small", "model.patch_size=8",
                                                      "model.activation_checkpointing=true"]),
}
COMMON = ["data.moving_digits.canvas=64", "data.moving_digits.digit_size=24", "data.moving_digits.frames=16",
          "data.moving_digits.num_train=256", "data.moving_digits.num_test=64", "train.batch_size=16",
          "train.progress=false", "mask.kind=multiblock"]


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(name: str, out_dir: str) -> dict:
    """In this process: one case's measured step peak and the estimate."""
    import torch
    from torch.utils.data import default_collate

    from salt.config import load_config, resolve_config
    from salt.data.sampler import batch_for_step
    from salt.schema import RunConfig
    from salt.study.estimate import step_memory
    from salt.train.loop import Trainer

    torch.set_num_threads(1)
    base, overrides = CASES[name]
    extra = [f"out_dir={out_dir}", f"data.moving_digits.cache_dir={out_dir}/cache"]
    if base == "tiny_student":   # a teacher checkpoint of the same size to learn from
        teacher_cfg = load_config(RunConfig, [resolve_config("tiny_teacher")],
                                  [*COMMON, *extra, *[o.replace("objective.teacher.", "model.") for o in overrides
                                                      if o.startswith("objective.teacher.")], "name=teacher",
                                   "train.steps=1"])
        extra.append(f"objective.teacher_checkpoint={Trainer(teacher_cfg).fit()['checkpoint']}")
    cfg = load_config(RunConfig, [resolve_config(base)], [*COMMON, *overrides, *extra, f"name={name}"])
    trainer = Trainer(cfg)
    batches = [default_collate([trainer.dataset[item] for item in batch_for_step(len(trainer.dataset),
                                                                                  cfg.train.batch_size, 0, s)])
               for s in (0, 1)]
    trainer.step(0, batches[0])   # gradients and AdamW state now exist
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")              # reset VmHWM (peak RSS) to the current RSS
    before = _rss_kb("VmRSS")
    trainer.step(1, batches[1])
    measured = (_rss_kb("VmHWM") - before) * 1024 / 1e9
    estimate = step_memory(cfg, devices=1, precision="fp32")
    return {"case": name, "measured_step_gb": measured, "estimated_activations_gb": estimate.activations,
            "ratio": estimate.activations / measured if measured > 0 else float("nan"),
            "estimate": {k: getattr(estimate, k) for k in ("weights", "grads", "optimizer", "frozen", "activations")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--case", help="(internal) measure this case in this process")
    args = p.parse_args(argv)
    if args.case:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.case, tmp)))
        return 0
    rows = []
    for name in CASES:
        # Large blocks through mmap: glibc then returns freed tensors to the OS at once, so RSS follows what is live
        # (by default the first step's freed activations stay resident and the second step reuses them unseen).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True,
                             env=env)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:<28} measured step {r['measured_step_gb'] * 1e3:8.1f} MB  estimated activations "
              f"{r['estimated_activations_gb'] * 1e3:8.1f} MB  ratio {r['ratio']:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
