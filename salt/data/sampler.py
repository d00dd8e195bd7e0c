"""Which clips form the batch of step s: a pure function of (seed, step), so resume needs no sampler state.

Each epoch is a seeded permutation of the dataset; step s takes its slice. Every sample also gets its own
seed (for augmentation), so workers and resumes see exactly the same data. A mixture of several lists (V-JEPA 2's
`datasets` with `datasets_weights`) draws each sample's list by weight and a video of that list uniformly, with
replacement, as V-JEPA 2's weighted sampler does; the draws of step s come from (seed, s) alone, so resume stays
exact there too.
"""
from __future__ import annotations

from dataclasses import dataclass

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


MIXTURE_STREAM = 2   # a four-part seed: apart from the three-part sample seeds and the loop's mask seeds


@dataclass(frozen=True)
class Mixture:
    """Consecutive parts of a dataset (`sizes[i]` items each, in order) drawn with probability `weights[i]`."""
    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if len(self.sizes) != len(self.weights) or not self.sizes:
            raise ValueError(f"a mixture needs one weight per part, got sizes {self.sizes} and weights {self.weights}")
        if min(self.sizes) < 1 or min(self.weights) <= 0:
            raise ValueError(f"mixture parts need >= 1 item and a weight > 0, got {self.sizes} and {self.weights}")


def batch_for_step(num_items: int, batch_size: int, seed: int, step: int,
                   mixture: Mixture | None = None) -> list[tuple[int, int]]:
    """[(index, sample_seed)] for step `step` (drop-last epochs of num_items // batch_size steps; with a mixture,
    independent weighted draws)."""
    if mixture is not None:
        return _mixture_batch(num_items, batch_size, seed, step, mixture)
    if batch_size > num_items:
        raise ValueError(f"batch_size {batch_size} exceeds the dataset's {num_items} clips")
    steps_per_epoch = num_items // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
    chosen = order[position * batch_size:(position + 1) * batch_size].tolist()
    return [(i, mix_seed(seed, step, k)) for k, i in enumerate(chosen)]


def _mixture_batch(num_items: int, batch_size: int, seed: int, step: int, mixture: Mixture) -> list[tuple[int, int]]:
    if sum(mixture.sizes) != num_items:
        raise ValueError(f"the mixture's parts hold {sum(mixture.sizes)} items, the dataset {num_items}")
    generator = torch.Generator().manual_seed(mix_seed(seed, MIXTURE_STREAM, step, 0))
    parts = torch.multinomial(torch.tensor(mixture.weights, dtype=torch.float64), batch_size, replacement=True,
                              generator=generator)
    within = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    sizes = torch.tensor(mixture.sizes)
    offsets = torch.cumsum(sizes, 0) - sizes
    chosen = (offsets[parts] + (within * sizes[parts]).long().clamp(max=sizes[parts] - 1)).tolist()
    return [(i, mix_seed(seed, step, k)) for k, i in enumerate(chosen)]


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch sampler for a DataLoader: yields the batches of steps [start_step, end_step)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, end_step: int,
                 mixture: Mixture | None = None):
        self.num_items, self.batch_size, self.seed, self.mixture = num_items, batch_size, seed, mixture
        self.start_step, self.end_step = start_step, end_step

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield batch_for_step(self.num_items, self.batch_size, self.seed, step, self.mixture)
