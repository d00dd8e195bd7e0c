"""RankMe (Garrido et al. 2023): a label-free effective rank of an embedding matrix.

Collapsed encoders put their features in a few directions; RankMe counts how many singular directions
carry weight, so it can flag collapse without any labels.
"""

from __future__ import annotations

import torch


def rankme(features: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(entropy) of the normalised singular values of the raw N x K matrix (no centering, as in the paper).

    p_k = s_k / sum(s) + eps; RankMe = exp(-sum_k p_k log p_k). Ranges from ~1 (rank 1) to min(N, K).
    Computed in float64 so small singular values of large matrices are not lost to round-off.
    """
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D [N, K] matrix, got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    matrix = features.detach().to(dtype=torch.float64)
    if not torch.isfinite(matrix).all():
        raise ValueError("features contain NaN or infinite values")
    singular_values = torch.linalg.svdvals(matrix)
    total = singular_values.sum()
    if total <= 0:
        raise ValueError("features are all zero: RankMe is undefined")
    p = singular_values / total + eps
    entropy = -(p * torch.log(p)).sum()
    return float(torch.exp(entropy))
