"""Benchmark (not a test): wall time of one evaluation of a tiny checkpoint on the embedded data.

    python benchmarks/eval_fast.py [--run-dir RUN] [--protocol fast] [--repeats 3]

Without --run-dir it trains a 50-step tiny teacher in a temporary folder first (not timed). Each repeat
evaluates the checkpoint from scratch (probe clips loaded, encoder run, metrics, probes, held-out loss) and
the median is reported with the parts measured in the last repeat.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from salt.config import load_config, resolve_config
from salt.eval.evaluate import eval_protocol, evaluate_run, load_probe_data
from salt.eval.features import clip_features
from salt.eval.scores import feature_scores
from salt.schema import RunConfig
from salt.train.loop import run_dir_for, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="")
    parser.add_argument("--protocol", default="fast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir)
        if not args.run_dir:
            cfg = load_config(RunConfig, [resolve_config("tiny_teacher")],
                              [f"out_dir={tmp}", "name=bench", "train.steps=50", "train.progress=false"])
            train(cfg)
            run_dir = run_dir_for(cfg)
        protocol = eval_protocol(args.protocol)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            record = evaluate_run(run_dir, protocol=protocol)
            times.append(time.perf_counter() - start)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; protocol {protocol.name}: "
              f"{protocol.probe_train_clips} probe-train / {protocol.probe_test_clips} test clips, attentive "
              f"{protocol.attentive} on {protocol.attentive_train_clips} clips x {protocol.attentive_epochs} epochs")
        print(f"evaluate_run: median {statistics.median(times):.1f} s over {len(times)} repeats "
              f"(min {min(times):.1f}, max {max(times):.1f}); {len(record.probes)} probe scores")
        # Parts, measured once: data loading vs encoder + metrics + probes.
        t0 = time.perf_counter()
        from salt.config import from_dict
        from salt.checkpoint import load_checkpoint
        cfg = from_dict(RunConfig, load_checkpoint(run_dir)["config"])
        data = load_probe_data(cfg.data, protocol)
        t_data = time.perf_counter() - t0
        from salt.eval.evaluate import random_encoder
        from salt.data import build_dataset
        _, geometry = build_dataset(cfg.data, "test")
        t0 = time.perf_counter()
        feature_scores(clip_features(random_encoder(cfg, geometry, 0), data, protocol), protocol)
        print(f"parts: probe data {t_data:.1f} s; encoder + metrics + probes {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
