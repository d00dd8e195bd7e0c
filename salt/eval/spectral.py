"""Spectral label-free metrics: LiDAR (Thilak et al. 2023) and alpha-ReQ (Agrawal et al. 2022).

Both read representation quality off an eigenspectrum, without labels. LiDAR asks how many directions separate a
clip from other clips once the spread among that clip's own augmented views is whitened away; alpha-ReQ asks how
fast the feature covariance spectrum decays (lambda_i ~ i^-alpha). All linear algebra is float64 so the small
eigenvalues of large matrices are not lost to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from salt.spectrum import as_float64, effective_rank, rankme  # noqa: F401  (re-exported: the metrics' API)


def _inverse_sqrt(symmetric: torch.Tensor) -> torch.Tensor:
    """Symmetric inverse square root V diag(w^-1/2) V^T of a positive-definite matrix."""
    eigenvalues, eigenvectors = torch.linalg.eigh(symmetric)
    if eigenvalues.min() <= 0:
        raise ValueError("within-class scatter + delta*I is not positive definite: increase delta")
    return (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T


def lidar(embeddings: torch.Tensor, delta: float = 1e-4, eps: float = 1e-7) -> float:
    """LiDAR: effective rank of the LDA matrix S_w^-1/2 S_b S_w^-1/2 with a clip and its views as one class.

    embeddings [n clips, q views, D]. Normalisations follow the paper (unbiased estimates):
      mu_i = mean_j x_ij, mu = mean_i mu_i,
      S_b = 1/(n-1) sum_i (mu_i - mu)(mu_i - mu)^T,
      S_w = 1/(n(q-1)) sum_i sum_j (x_ij - mu_i)(x_ij - mu_i)^T + delta*I.
    delta keeps S_w invertible (it is singular when D > n(q-1) or views coincide); LiDAR is invariant to any
    invertible affine map of the features up to delta's effect. S_b's factor only rescales every eigenvalue, which
    the effective rank ignores; S_w's factor matters only through delta's size relative to S_w. Eigenvalues of
    the LDA matrix that round-off makes slightly negative are clamped to 0 before the effective rank (eps as in
    RankMe).
    """
    views = as_float64(embeddings, "embeddings", 3, "[num_clips, num_views, D]")
    num_clips, num_views, dim = views.shape
    if num_clips < 2:
        raise ValueError(f"embeddings need at least 2 clips (surrogate classes), got {num_clips}")
    if num_views < 2:
        raise ValueError(f"embeddings need at least 2 views per clip, got {num_views}")
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    class_means = views.mean(dim=1)
    between = class_means - class_means.mean(dim=0)
    scatter_between = between.T @ between / (num_clips - 1)
    within = (views - class_means[:, None, :]).reshape(-1, dim)
    scatter_within = within.T @ within / (num_clips * (num_views - 1))
    scatter_within += delta * torch.eye(dim, dtype=torch.float64)

    whitener = _inverse_sqrt(scatter_within)
    lda_matrix = whitener @ scatter_between @ whitener
    eigenvalues = torch.linalg.eigvalsh((lda_matrix + lda_matrix.T) / 2).clamp(min=0)
    if eigenvalues.max() <= 0:
        raise ValueError("between-class scatter is zero (all clip means identical): LiDAR is undefined")
    return effective_rank(eigenvalues, eps=eps)


@dataclass
class AlphaReQ:
    """Power-law fit lambda_i ~ i^-alpha of a feature covariance spectrum."""

    alpha: float
    r2: float                # R^2 of the log-log least-squares fit (1.0 for an exactly flat spectrum)
    rank_window: list[int]   # [first, last] eigenvalue ranks used, 1-based and inclusive


def covariance_spectrum(features: torch.Tensor) -> torch.Tensor:
    """Descending eigenvalues of the centred covariance of features [N, D], numerically-zero ones dropped.

    Computed as squared singular values of the centred matrix / (N - 1). "Numerically zero" uses the
    torch.linalg.matrix_rank convention at the input's own precision: s_i <= s_1 * max(N, D) * finfo(dtype).eps.
    This drops the round-off floor of rank-deficient features (which would bend the fitted tail) but keeps real
    small eigenvalues.
    """
    matrix = as_float64(features, "features", 2, "[N, D]")
    num_samples = matrix.shape[0]
    if num_samples < 2:
        raise ValueError(f"features need at least 2 samples (rows), got {num_samples}")
    input_eps = torch.finfo(features.dtype).eps if features.is_floating_point() else torch.finfo(torch.float64).eps
    singular_values = torch.linalg.svdvals(matrix - matrix.mean(dim=0))
    tolerance = singular_values[0] * max(matrix.shape) * input_eps
    kept = singular_values[singular_values > tolerance]
    return kept**2 / (num_samples - 1)


def alpha_req(features: torch.Tensor, rank_window: tuple[int, int] | list[int] | None = None) -> AlphaReQ:
    """alpha-ReQ: alpha = -slope of least squares of log lambda_i on log i over a rank window.

    features [N, D]. The default window is every rank with a non-negligible eigenvalue (see covariance_spectrum):
    exact for a clean power law. Unless N >> D the smallest sample eigenvalues are biased low (Marchenko-Pastur
    spread ~ +-2 sqrt(D/N)), which tilts the fit: white noise at N=25600, D=384 reads alpha ~0.11 with R^2 ~0.78.
    For real features pass a window that skips the head and that tail. The window must span >= 3 ranks so R^2
    means something.
    """
    spectrum = covariance_spectrum(features)
    usable = spectrum.numel()
    if rank_window is None:
        first, last = 1, usable
        if usable < 3:
            raise ValueError(f"features have only {usable} non-negligible covariance eigenvalues; alpha-ReQ needs >= 3")
    else:
        if len(rank_window) != 2 or not all(isinstance(rank, int) for rank in rank_window):
            raise ValueError(f"rank_window must be two ints (first, last), got {rank_window!r}")
        first, last = rank_window
        if not 1 <= first < last <= usable or last - first < 2:
            raise ValueError(
                f"rank_window {list(rank_window)} out of range: need 1 <= first, last - first >= 2 and "
                f"last <= {usable} (the number of non-negligible covariance eigenvalues)")

    log_rank = torch.log(torch.arange(first, last + 1, dtype=torch.float64))
    log_value = torch.log(spectrum[first - 1:last])
    centred_rank = log_rank - log_rank.mean()
    centred_value = log_value - log_value.mean()
    slope = (centred_rank * centred_value).sum() / (centred_rank**2).sum()
    residual = centred_value - slope * centred_rank
    total = (centred_value**2).sum()
    r2 = 1.0 if total == 0 else float(1 - (residual**2).sum() / total)
    return AlphaReQ(alpha=float(-slope), r2=r2, rank_window=[first, last])
