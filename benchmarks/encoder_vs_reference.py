"""Our encoder against transformers' V-JEPA 2 and VideoMAE encoders of the same configuration: forward + backward
(fp32, training mode, a sum-of-squares loss), interleaved round robin in one process, medians.

Prints ms per step, GFLOP/s by the 6*N*D rule (N parameters, D tokens in the batch), each one's ratio to the
reference it mirrors, and the process's fp32 matmul rate (what the machine gives at this moment).

    .venv/bin/python benchmarks/encoder_vs_reference.py                    # width 384, depth 6, 512 tokens, batch 8
    .venv/bin/python benchmarks/encoder_vs_reference.py --repeats 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

from salt.models import VideoViT

from machine import matmul_gflops   # benchmarks/machine.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--pixels", type=int, default=128)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default="")
    args = p.parse_args()
    torch.manual_seed(0)
    common = dict(img_size=args.pixels, num_frames=args.frames, in_chans=3, patch_size=args.patch, tubelet_size=2,
                  embed_dim=args.width, depth=args.depth, num_heads=args.heads)
    ours = {
        "ours sincos": VideoViT(**common),
        "ours rope": VideoViT(**common, pos_embed="rope"),
        "ours rope, V-JEPA 2 options": VideoViT(**common, pos_embed="rope", rope_layout="vjepa2", rope_key_bias=True),
        "ours sincos_1d, VideoMAE options": VideoViT(**common, pos_embed="sincos_1d", norm_eps=1e-12, final_norm=False),
    }
    vj = transformers.VJEPA2Config(patch_size=args.patch, crop_size=args.pixels, frames_per_clip=args.frames,
                                   tubelet_size=2, hidden_size=args.width, num_attention_heads=args.heads,
                                   num_hidden_layers=args.depth, attn_implementation="sdpa")
    vm = transformers.VideoMAEConfig(image_size=args.pixels, patch_size=args.patch, num_channels=3,
                                     num_frames=args.frames, tubelet_size=2, hidden_size=args.width,
                                     num_hidden_layers=args.depth, num_attention_heads=args.heads,
                                     intermediate_size=4 * args.width, use_mean_pooling=True,
                                     attn_implementation="sdpa")
    refs = {"transformers VJEPA2 encoder": transformers.VJEPA2Model(vj).encoder,
            "transformers VideoMAE": transformers.VideoMAEModel(vm)}
    reference_of = {"ours sincos": "transformers VJEPA2 encoder", "ours rope": "transformers VJEPA2 encoder",
                    "ours rope, V-JEPA 2 options": "transformers VJEPA2 encoder",
                    "ours sincos_1d, VideoMAE options": "transformers VideoMAE"}
    video = torch.randn(args.batch, 3, args.frames, args.pixels, args.pixels)
    clips = video.permute(0, 2, 1, 3, 4).contiguous()
    runs = {**{k: (m, lambda m=m: m(video)) for k, m in ours.items()},
            "transformers VJEPA2 encoder": (refs["transformers VJEPA2 encoder"],
                                            lambda: refs["transformers VJEPA2 encoder"](clips).last_hidden_state),
            "transformers VideoMAE": (refs["transformers VideoMAE"],
                                      lambda: refs["transformers VideoMAE"](pixel_values=clips).last_hidden_state)}
    for model, _ in runs.values():
        model.train()
    tokens = args.batch * (args.frames // 2) * (args.pixels // args.patch) ** 2
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.repeats + 1):   # round 0 warms up
        for k in names[r % len(names):] + names[: r % len(names)]:
            model, forward = runs[k]
            t0 = time.perf_counter()
            forward().pow(2).mean().backward()
            dt = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            if r:
                times[k].append(dt)
    rate = matmul_gflops()
    print(f"width {args.width}, depth {args.depth}, {tokens // args.batch} tokens, batch {args.batch}, fp32, "
          f"{torch.get_num_threads()} threads; fp32 matmul {rate:.1f} GFLOP/s")
    out = {"matmul_gflops": rate, "tokens": tokens, "models": {}}
    for k, (model, _) in runs.items():
        ms = statistics.median(times[k]) * 1e3
        n = sum(p.numel() for p in model.parameters())
        gflops = 6 * n * tokens / (ms / 1e3) / 1e9
        ratio = (statistics.median(times[reference_of[k]]) * 1e3 / ms) if k in reference_of else 1.0
        out["models"][k] = {"ms": ms, "params": n, "gflops": gflops, "speed_vs_reference": ratio}
        print(f"{k:<34} {ms:8.1f} ms  {gflops:6.1f} GFLOP/s ({gflops / rate:4.0%} of matmul)"
              + (f"  {ratio:.2f}x {reference_of[k]}" if k in reference_of else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
