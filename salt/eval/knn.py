"""Weighted k-NN probe on frozen features (DINO's): no training and no hyperparameter fit, so it measures
the feature geometry itself, and it is cheap enough to run at every checkpoint."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from salt.eval.probes import ProbeResult, _check_probe_inputs


def _check_settings(k: int, temperature: float, batch_size: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int, k: int,
             temperature: float, batch_size: int) -> torch.Tensor:
    dtype = torch.promote_types(torch.promote_types(train_x.dtype, test_x.dtype), torch.float32)
    train = F.normalize(train_x.to(dtype), dim=1)
    train_y = train_y.to(train.device)
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test_x), batch_size):
        query = F.normalize(test_x[start:start + batch_size].to(device=train.device, dtype=dtype), dim=1)
        top_sim, top_index = (query @ train.T).topk(k, dim=1)
        # subtracting each row's best similarity rescales its votes by one constant: same winner, no overflow
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(len(query), num_classes, dtype=dtype, device=train.device)
        votes.scatter_add_(1, train_y[top_index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_probe(train_x, train_y, test_x, test_y, *, num_classes: int, k: int = 20, temperature: float = 0.07,
              batch_size: int = 1024) -> ProbeResult:
    """Test accuracy of a weighted k-NN classifier (nothing is fitted or selected, so no selection score):
    cosine similarity on L2-normalised features, the k most similar train rows vote with weight
    exp(similarity / temperature). k above the train-set size uses the whole set; ties between classes go to the
    lower class index; batch_size bounds the test rows scored at once (memory ~ batch_size x N_train). Bad input
    is a ValueError naming the problem."""
    _check_settings(k, temperature, batch_size)
    train_x, train_y, test_x, test_y = _check_probe_inputs(train_x, train_y, test_x, test_y, num_classes)
    predicted = _predict(train_x, train_y, test_x, num_classes, k, temperature, batch_size)
    return ProbeResult((predicted.cpu() == test_y.cpu()).double().mean().item())
