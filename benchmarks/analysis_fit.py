"""Time the full analysis (fits + bootstraps + correlations) of a 1,000-run synthetic study.

    .venv/bin/python benchmarks/analysis_fit.py [--bootstrap 1000] [--repeats 3] [--keep DIR]

Writes the study once (8 budgets x 6 teacher shares x 3 teacher sizes x 3 seeds of teacher + student, 8 x 17
V-JEPA runs, one random-init baseline; records at half and full training), then times `load_study` and
`analyze` (median of --repeats; every fit, including L(N, D) of the teachers, with --bootstrap resamples, and
as many permutations) and one breakdown of `analyze` by part. Target: analyze < 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from analysis import answers, report  # noqa: E402
from analysis.collect import load_study  # noqa: E402
from analysis.synthetic import SyntheticSpec, write_synthetic_study  # noqa: E402

SPEC = SyntheticSpec(budgets=(1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000),
                     shares=(0.05, 0.1, 0.2, 0.3, 0.4, 0.6), seeds=3, vjepa_seeds=17,
                     teacher_sizes=("tiny", "mini", "small"), checkpoints=(0.5, 1.0))
PARTS = ("curve_fits", "fit_loss_vs_compute", "fit_ld", "replicate_means", "diagnose", "allocation_table",
         "optimal_share", "flops_to_match", "rank_metrics")


def _timed_parts() -> dict[str, float]:
    """Wrap the functions `analyze` calls (through analysis.answers) so one run reports where its time goes."""
    spent = {name: 0.0 for name in PARTS}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return timed

    for name in PARTS:
        setattr(answers, name, wrap(name, getattr(answers, name)))
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the study here (default: a temporary folder)")
    args = parser.parse_args()

    print(f"machine: python={platform.python_version()}, numpy={np.__version__}, scipy={scipy.__version__}, "
          f"cpu_count={os.cpu_count()}, cpus_usable={len(os.sched_getaffinity(0))}, "
          f"load_avg_1min={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "study"
        t0 = time.perf_counter()
        write_synthetic_study(root, SPEC)
        print(f"wrote synthetic study: {time.perf_counter() - t0:.1f} s, {root}")

        load_s, frame = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            frame = load_study(root)
            load_s.append(time.perf_counter() - t0)
        runs = frame[frame["flops_total"] > 0]["run_key"].nunique()
        print(f"table: {len(frame)} rows (run x checkpoint), {runs} trained runs, {frame['run_key'].nunique()} in all")

        analyze_s = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = report.analyze(frame, n_boot=args.bootstrap)
            analyze_s.append(time.perf_counter() - t0)
        spent = _timed_parts()
        t0 = time.perf_counter()
        report.analyze(frame, n_boot=args.bootstrap)
        breakdown_total = time.perf_counter() - t0

    print(f"load_study: median {statistics.median(load_s):.2f} s over {args.repeats}")
    print(f"analyze ({args.bootstrap} bootstrap resamples, {args.bootstrap} permutations): median "
          f"{statistics.median(analyze_s):.1f} s over {args.repeats} "
          f"(min {min(analyze_s):.1f}, max {max(analyze_s):.1f}); target < 60 s")
    print(f"breakdown of one analyze ({breakdown_total:.1f} s):")
    for name in PARTS:
        print(f"  {name:<22} {spent[name]:6.1f} s")
    fits = {g: f for g, f in a.curves.items() if not isinstance(f, Exception)}
    print("fitted curves: " + ", ".join(f"{g}: E={f.params['E']:.3f} c={f.params['c']:.3f} ({len(f.y)} runs)"
                                         for g, f in fits.items()))
    ld = a.ld.get("pixel")
    if not isinstance(ld, Exception):
        table = ld.intervals().set_index("param")
        truth = SPEC.pixel.natural
        print("L(N, D) of the pixel teachers (N = params, D = steps): " + ", ".join(
            f"{p}={table.at[p, 'estimate']:.3g} [{table.at[p, 'lo']:.3g}, {table.at[p, 'hi']:.3g}] (true {truth[p]:.3g})"
            for p in ("E", "alpha", "beta")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
