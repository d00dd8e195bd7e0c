"""Effective rank of a spectrum, and RankMe (Garrido et al. 2023): how many directions an encoder's features use.

Below salt.train and salt.eval alike: evaluations report RankMe (salt.eval.spectral re-exports these), and the
training loop's collapse alarm watches it while training (salt.train.watch).
"""
from __future__ import annotations

import torch


def as_float64(tensor: torch.Tensor, name: str, ndim: int, layout: str) -> torch.Tensor:
    """Checked float64 copy: the shared input validation of every metric here."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D {layout} tensor, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(tensor.shape)}")
    values = tensor.detach().to(dtype=torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return values


def effective_rank(values: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(entropy) of a non-negative spectrum: the RankMe formula, shared by LiDAR.

    p_k = v_k / sum(v) + eps; result = exp(-sum_k p_k log p_k) (0 log 0 = 0). k equal values give k, one nonzero
    value gives 1; eps (as in RankMe) nudges zeros up slightly, so with eps > 0 the result is a hair above those.
    """
    spectrum = as_float64(values, "values", 1, "[K]")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if (spectrum < 0).any():
        raise ValueError(f"values must be non-negative, got minimum {float(spectrum.min())}")
    total = spectrum.sum()
    if total <= 0:
        raise ValueError("values are all zero: the effective rank is undefined")
    p = spectrum / total + eps
    entropy = -torch.special.xlogy(p, p).sum()
    return float(torch.exp(entropy))


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): effective rank of the singular values of the raw N x K embedding matrix
    (no centering, as in the paper). Collapsed encoders put their features in few directions; this counts how
    many carry weight, without labels. ~1 (rank 1) to min(N, K); float64 so small singular values survive."""
    return effective_rank(torch.linalg.svdvals(as_float64(features, "features", 2, "[N, K]")), eps)
