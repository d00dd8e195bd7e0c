"""Which clips form the batch of step s: a pure function of (seed, step), so resume needs no sampler state.

Each epoch is a seeded permutation of the dataset; step s takes its slice. Every sample also gets its own
seed (for augmentation), so workers and resumes see exactly the same data.
"""
from __future__ import annotations

import torch

_MIX = 0x9E3779B97F4A7C15


def mix_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed (splitmix-style), stable across runs and platforms."""
    h = 0
    for p in parts:
        h = (h ^ (p + _MIX + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def batch_for_step(num_items: int, batch_size: int, seed: int, step: int) -> list[tuple[int, int]]:
    """[(index, sample_seed)] for step `step` (drop-last epochs of num_items // batch_size steps)."""
    if batch_size > num_items:
        raise ValueError(f"batch_size {batch_size} exceeds the dataset's {num_items} clips")
    steps_per_epoch = num_items // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
    chosen = order[position * batch_size:(position + 1) * batch_size].tolist()
    return [(i, mix_seed(seed, step, k)) for k, i in enumerate(chosen)]


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch sampler for a DataLoader: yields the batches of steps [start_step, end_step)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, end_step: int):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.end_step = start_step, end_step

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield batch_for_step(self.num_items, self.batch_size, self.seed, step)
