"""Frozen-feature evaluation: token pooling, feature extraction, linear (logistic-regression) probes, and
`ProbeResult`, the one result type every probe (linear, k-NN, attentive) returns.

The probes are trained in torch with full-batch L-BFGS: a convex problem this small converges in well under a
second per fit, and a whole `fast` evaluation of a tiny checkpoint, every probe included, is timed by
`benchmarks/eval_fast.py` (benchmarks/README.md). Weight decay is always chosen on a held-out part of the TRAIN features, and the test set is
scored once, so low-shot numbers are not inflated by selecting on test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

DEFAULT_WEIGHT_DECAYS = [1e-4, 1e-3, 1e-2, 1e-1]
SELECTIONS = ("strict", "paper")


def check_selection(selection: str) -> str:
    """`strict`: hyperparameters chosen on a held-out part of the TRAIN set, the test split scored once (the
    default). `paper`: every setting of the grid fitted on all train labels and scored on the test split, the best
    reported (V-JEPA 2's published protocol: optimistic, since the test labels choose the setting)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
    return selection


def stratified_subset(labels, count: int, seed: int) -> torch.Tensor:
    """`count` row indices drawn per class in proportion to the class sizes (largest remainders first), at random
    within each class from a generator seeded by `seed`; sorted. Never "the first N": lists sorted by class give
    every class its share. count >= len(labels) returns every row."""
    labels = torch.as_tensor(labels).long().cpu()
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if count >= len(labels):
        return torch.arange(len(labels))
    classes, sizes = torch.unique(labels, return_counts=True)
    exact = sizes.double() * count / len(labels)
    take = exact.floor().long()
    remainder_order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - take[c]).item(), c))
    for c in remainder_order[:count - int(take.sum())]:
        take[c] += 1
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        parts.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(parts).sort().values


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int, int], how: str) -> torch.Tensor:
    """Pool encoder tokens [N, T*H*W, D] (row-major t, h, w) into one vector per clip.

    how="mean": mean over all tokens -> [N, D].
    how="time": mean over space per time step, concatenated over time -> [N, T*D]; keeps the temporal
    order that a plain mean throws away (motion classes need it).
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [N, T*H*W, D], got shape {tuple(tokens.shape)}")
    if len(grid) != 3 or any(int(g) <= 0 for g in grid):
        raise ValueError(f"grid must be three positive ints (T, H, W), got {grid}")
    t, h, w = (int(g) for g in grid)
    n, num_tokens, dim = tokens.shape
    if num_tokens != t * h * w:
        raise ValueError(f"tokens have {num_tokens} tokens but grid {grid} implies {t * h * w}")
    if how == "mean":
        return tokens.mean(dim=1)
    if how == "time":
        return tokens.reshape(n, t, h * w, dim).mean(dim=2).reshape(n, t * dim)
    raise ValueError(f"how must be 'mean' or 'time', got {how!r}")


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], videos: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """Run `encode` over videos [N, C, T, H, W] in batches under no_grad and return the concatenated outputs on
    CPU."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(videos, torch.Tensor):
        raise ValueError(f"videos must be a tensor [N, C, T, H, W], got {type(videos).__name__}")
    if videos.ndim != 5:
        raise ValueError(f"videos must be [N, C, T, H, W], got shape {tuple(videos.shape)}")
    if len(videos) == 0:
        raise ValueError("videos is empty")
    return torch.cat([encode(videos[start:start + batch_size]).detach().cpu()
                      for start in range(0, len(videos), batch_size)])


@dataclass
class ProbeResult:
    """What every probe returns, so an evaluation turns any probe's result into a record score in one place."""
    accuracy: float                        # test accuracy (the mean over draws for low-shot probes)
    std: float = 0.0                       # population std of the accuracy over draws (0 for one draw)
    draws: int = 1
    selection_score: float = math.nan      # held-out (train-split) score of the chosen hyperparameters; nan: none
    details: dict[str, Any] = field(default_factory=dict)   # JSON-able extras kept in the record


@dataclass
class LinearProbeResult:
    accuracy: float  # test accuracy of the probe refit on all train features with the selected weight decay
    weight_decay: float  # selected on a held-out split of the train features only (strict) or on test (paper)
    val_accuracy: float  # the selection score (nan when a single weight decay made selection unnecessary)


def _as_features(x: Any, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, D] matrix, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_labels(y: Any, num_classes: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class labels, got dtype {y.dtype}")
    y = y.long()
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0].item()
        raise ValueError(f"{name} contains label {bad} outside [0, {num_classes})")
    return y


def _check_probe_inputs(train_x, train_y, test_x, test_y, num_classes: int):
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    train_x, test_x = _as_features(train_x, "train_x"), _as_features(test_x, "test_x")
    train_y = _as_labels(train_y, num_classes, "train_y")
    test_y = _as_labels(test_y, num_classes, "test_y")
    if len(train_x) != len(train_y):
        raise ValueError(f"train_x has {len(train_x)} rows but train_y has {len(train_y)} labels")
    if len(test_x) != len(test_y):
        raise ValueError(f"test_x has {len(test_x)} rows but test_y has {len(test_y)} labels")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError(f"train and test sets must be non-empty, got {len(train_x)} and {len(test_x)} rows")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x has {train_x.shape[1]} features but test_x has {test_x.shape[1]}")
    return train_x, train_y, test_x, test_y


def _holdout_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (stratified) split of indices into (fit, val).

    Each class sends round(val_fraction * n_c) examples to val, at least 1 when it has >= 2, and always keeps
    >= 1 in fit, so even 2-shot probes can select a weight decay. A class with a single example stays in fit.
    """
    generator = torch.Generator().manual_seed(seed)
    fit_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(max(round(val_fraction * len(members)), 1), len(members) - 1)
        val_parts.append(members[:n_val])
        fit_parts.append(members[n_val:])
    fit_idx, val_idx = torch.cat(fit_parts).sort().values, torch.cat(val_parts).sort().values
    return fit_idx, val_idx


def _linear(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """z [N, D] @ weight[C, D]^T + bias, in the layout that is fastest on CPU for few classes."""
    return (weight @ z.T).T + bias


@dataclass
class _FittedProbe:
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return _linear((x - self.mean) / self.scale, self.weight, self.bias)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return (self.logits(x).argmax(dim=1) == y).float().mean().item()


def _fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int
) -> _FittedProbe:
    """Minimise mean cross-entropy + weight_decay * ||W||^2 (bias unpenalised) on standardised features.

    Weight is stored [C, D] and logits computed as (W @ z^T)^T, with the gradient written out by hand as
    g^T @ z: on CPU these layouts were 2-5x faster per step than z @ W and autograd's z^T @ g. The problem is
    convex, so a zero start makes the result deterministic and independent of any seed.
    """
    scale, mean = torch.std_mean(x, dim=0, correction=0)
    scale = torch.where(scale > 1e-6 * scale.max().clamp_min(1e-12), scale, torch.ones_like(scale))
    z = (x - mean) / scale
    targets = F.one_hot(y, num_classes).to(z.dtype)
    weight = torch.zeros(num_classes, x.shape[1], dtype=z.dtype, device=z.device)
    bias = torch.zeros(num_classes, dtype=z.dtype, device=z.device)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
        tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        log_probs = torch.log_softmax(_linear(z, weight, bias), dim=1)
        loss = -(log_probs * targets).sum() / len(z) + weight_decay * weight.pow(2).sum()
        residual = (log_probs.exp() - targets) / len(z)
        weight.grad = residual.T @ z + 2 * weight_decay * weight
        bias.grad = residual.sum(dim=0)
        return loss

    optimizer.step(closure)
    return _FittedProbe(mean, scale, weight, bias)


def train_linear_probe(
    train_x, train_y, test_x, test_y, *,
    num_classes: int,
    weight_decays: list[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 200,
    selection: str = "strict",
) -> LinearProbeResult:
    """Multinomial logistic-regression probe: select weight decay on a train holdout, refit, score test once.

    selection="paper" (check_selection) instead fits every weight decay on all train features and reports the
    best test accuracy (its val_accuracy is that same test accuracy: the test labels chose it).

    Features are standardised with the statistics of whatever set the probe is fit on (the fit split during
    selection, the whole train set for the final probe). Selection maximises holdout accuracy, ties broken by
    lower holdout cross-entropy, then by the larger weight decay. With a single weight decay and no possible
    holdout (one example per class) the selection step is skipped and val_accuracy is nan.
    """
    train_x, train_y, test_x, test_y = _check_probe_inputs(train_x, train_y, test_x, test_y, num_classes)
    if not weight_decays:
        raise ValueError("weight_decays must contain at least one value")
    if any(wd < 0 or not math.isfinite(wd) for wd in weight_decays):
        raise ValueError(f"weight_decays must be finite and >= 0, got {weight_decays}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    check_selection(selection)
    device = train_x.device
    train_x, train_y = train_x.to(device, torch.float32), train_y.to(device)
    test_x, test_y = test_x.to(device, torch.float32), test_y.to(device)
    if selection == "paper":   # every weight decay scored on test; the best one reported
        scored = [(_fit_logistic(train_x, train_y, num_classes, wd, max_iter).accuracy(test_x, test_y), wd)
                  for wd in weight_decays]
        best_acc, best_wd = max(scored, key=lambda s: (s[0], s[1]))
        return LinearProbeResult(accuracy=best_acc, weight_decay=float(best_wd), val_accuracy=best_acc)

    fit_idx, val_idx = _holdout_split(train_y.cpu(), val_fraction, seed)
    if len(val_idx) == 0:
        if len(weight_decays) > 1:
            raise ValueError(
                "cannot select a weight decay: every class has a single train example, so no holdout is "
                "possible; pass a single value in weight_decays"
            )
        chosen_wd, chosen_val_acc = float(weight_decays[0]), float("nan")
    else:
        fit_idx, val_idx = fit_idx.to(device), val_idx.to(device)
        scores = []
        for wd in weight_decays:
            probe = _fit_logistic(train_x[fit_idx], train_y[fit_idx], num_classes, wd, max_iter)
            val_logits = probe.logits(train_x[val_idx])
            val_acc = (val_logits.argmax(dim=1) == train_y[val_idx]).float().mean().item()
            val_loss = F.cross_entropy(val_logits, train_y[val_idx]).item()
            scores.append((val_acc, -val_loss, wd))
        chosen_val_acc, _, chosen_wd = max(scores)
        chosen_wd = float(chosen_wd)

    final = _fit_logistic(train_x, train_y, num_classes, chosen_wd, max_iter)
    return LinearProbeResult(
        accuracy=final.accuracy(test_x, test_y), weight_decay=chosen_wd, val_accuracy=float(chosen_val_acc)
    )


def draw_shot_indices(labels, num_classes: int, shots: int, draws: int, seed: int) -> list[torch.Tensor]:
    """`draws` seeded sets of train indices with exactly `shots` examples per class (sorted, no replacement).

    Public so a run can log which examples each low-shot probe saw.
    """
    labels = _as_labels(labels, num_classes, "labels").cpu()
    if shots <= 0:
        raise ValueError(f"shots must be positive, got {shots}")
    if draws <= 0:
        raise ValueError(f"draws must be positive, got {draws}")
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    short = [f"class {cls} has {n}" for cls, n in enumerate(counts) if n < shots]
    if short:
        raise ValueError(f"shots={shots} but some classes have fewer train examples: {', '.join(short)}")
    generator = torch.Generator().manual_seed(seed)
    members = [torch.nonzero(labels == cls).flatten() for cls in range(num_classes)]
    return [
        torch.cat([m[torch.randperm(len(m), generator=generator)[:shots]] for m in members]).sort().values
        for _ in range(draws)
    ]


def low_shot_probe(
    train_x, train_y, test_x, test_y, *,
    num_classes: int,
    shots: int | None,
    draws: int = 3,
    seed: int = 0,
    **probe_kw,
) -> ProbeResult:
    """Linear probe with `shots` labelled train examples per class, averaged over `draws` seeded draws.

    shots=None uses every train label in a single draw. The result's details hold each draw's test accuracy
    ("accuracies") and selected weight decay ("weight_decays").
    """
    train_x, train_y, test_x, test_y = _check_probe_inputs(train_x, train_y, test_x, test_y, num_classes)
    if draws <= 0:
        raise ValueError(f"draws must be positive, got {draws}")
    if shots is None:
        subsets = [torch.arange(len(train_y))]
    else:
        subsets = draw_shot_indices(train_y, num_classes, shots, draws, seed)
    results = []
    for draw, idx in enumerate(subsets):
        idx = idx.to(train_y.device)
        results.append(
            train_linear_probe(
                train_x[idx], train_y[idx], test_x, test_y, num_classes=num_classes, seed=seed + draw, **probe_kw
            )
        )
    accuracies = [r.accuracy for r in results]
    mean = sum(accuracies) / len(accuracies)
    std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / len(accuracies))
    return ProbeResult(mean, std, len(results),
                       details={"weight_decays": [r.weight_decay for r in results], "accuracies": accuracies})
