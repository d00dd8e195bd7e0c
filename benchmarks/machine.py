"""What the machine gives at this moment, printed beside every throughput figure (the benchmarks import this; run
them as `python benchmarks/<name>.py`, which puts this folder on the import path)."""
from __future__ import annotations

import statistics
import time

import torch


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """fp32 n x n matmul rate of this process (torch's current thread count), median of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9
