"""Known-answer tests for the spectral label-free metrics (salt.eval.spectral): effective rank, LiDAR, alpha-ReQ."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from salt.eval.spectral import AlphaReQ, alpha_req, covariance_spectrum, effective_rank, lidar

F64 = torch.float64


def random_orthogonal(dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=F64))[0]


# ---------------------------------------------------------------- effective rank

@pytest.mark.parametrize("k", [1, 3, 17])
def test_effective_rank_of_uniform_spectrum_is_its_length(k):
    assert effective_rank(torch.full((k,), 2.5), eps=0.0) == pytest.approx(k, rel=1e-12)
    assert effective_rank(torch.full((k,), 2.5)) == pytest.approx(k, rel=1e-4)   # default eps barely moves it


def test_effective_rank_of_a_single_nonzero_value_is_one():
    spike = torch.zeros(384)
    spike[7] = 3.0
    assert effective_rank(spike, eps=0.0) == pytest.approx(1.0, abs=1e-12)
    # eps = 1e-7 lifts the 383 zeros: 1 + ~383 * 1e-7 * log(1e7) ~ 1.0006
    assert 1.0 < effective_rank(spike) < 1.001


@pytest.mark.parametrize("spectrum, expected", [
    ([2.0, 1.0, 1.0], 2**1.5),          # p = (1/2, 1/4, 1/4): H = 1.5 log 2
    ([4.0, 2.0, 1.0, 1.0], 2**1.75),    # p = (1/2, 1/4, 1/8, 1/8): H = 1.75 log 2
])
def test_effective_rank_matches_closed_form_and_ignores_scale(spectrum, expected):
    values = torch.tensor(spectrum, dtype=F64)
    assert effective_rank(values, eps=0.0) == pytest.approx(expected, rel=1e-12)
    assert effective_rank(123.0 * values, eps=0.0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("values, eps, message", [
    (torch.ones(2, 3), 1e-7, "1-D"),
    (torch.tensor([1.0, -0.5]), 1e-7, "non-negative"),
    (torch.zeros(4), 1e-7, "all zero"),
    (torch.tensor([1.0, float("nan")]), 1e-7, "NaN"),
    (torch.ones(3), -1.0, "eps"),
])
def test_effective_rank_rejects_bad_input(values, eps, message):
    with pytest.raises(ValueError, match=message):
        effective_rank(values, eps=eps)


# ---------------------------------------------------------------- LiDAR

def exact_lda_views(stds: list[float], num_views: int, dim: int, repeats: int, seed: int = 0) -> torch.Tensor:
    """Views with a known LDA spectrum: between-class variance stds[i]^2 * c along k orthogonal directions, zero
    elsewhere, and within-class scatter exactly sigma^2 * I.

    Clip means are +-stds[i] e_i (balanced, so the grand mean is 0 and S_b is diagonal with exactly those
    variances); view deviations are Gaussian, centred per clip, then whitened as a whole (a right-multiplication,
    which keeps every clip centred) so S_w = sigma^2 I. Then S_w + delta I is isotropic and the LDA eigenvalues are
    S_b's up to one common factor: LiDAR = effective_rank(stds^2). A random rotation + offset hides the axes.
    """
    generator = torch.Generator().manual_seed(seed)
    k = len(stds)
    directions = torch.eye(dim, dtype=F64)[:k] * torch.tensor(stds, dtype=F64)[:, None]
    means = torch.cat([directions, -directions]).repeat(repeats, 1)                 # [2k * repeats, dim]
    num_clips = means.shape[0]
    noise = torch.randn(num_clips, num_views, dim, generator=generator, dtype=F64)
    noise = (noise - noise.mean(dim=1, keepdim=True)).reshape(-1, dim)
    scatter = noise.T @ noise / (num_clips * (num_views - 1))
    eigenvalues, eigenvectors = torch.linalg.eigh(scatter)
    noise = 1e-2 * noise @ (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T    # S_w = 1e-4 I exactly
    views = means[:, None, :] + noise.reshape(num_clips, num_views, dim)
    offset = torch.randn(dim, generator=generator, dtype=F64)
    return views @ random_orthogonal(dim, generator) + offset


def test_lidar_counts_equally_separated_directions():
    k, dim = 5, 16
    views = exact_lda_views([1.0] * k, num_views=4, dim=dim, repeats=3)
    assert lidar(views, eps=0.0) == pytest.approx(k, abs=1e-6)
    # default eps adds the RankMe nudge for the 11 zero eigenvalues: the same value effective_rank gives
    expected = effective_rank(torch.tensor([1.0] * k + [0.0] * (dim - k)))
    assert lidar(views) == pytest.approx(expected, rel=1e-9)
    assert lidar(views) == pytest.approx(k, abs=1e-3)


def test_lidar_weights_directions_by_between_class_variance():
    # stds (sqrt 2, 1, 1) -> between-class variances (2, 1, 1) -> effective rank 2^1.5 (closed form above)
    views = exact_lda_views([math.sqrt(2.0), 1.0, 1.0], num_views=5, dim=12, repeats=4)
    assert lidar(views, eps=0.0) == pytest.approx(2**1.5, abs=1e-6)


def test_lidar_with_raw_view_noise_still_counts_the_separated_directions():
    # Random clip means in k directions, tiny unprocessed view noise: the noise adds ~(sigma^2/q)/sigma^2 = 1/q to
    # every whitened direction, negligible next to the signal 1/sigma^2 = 1e6, so LiDAR stays ~k.
    k, num_clips, num_views, dim = 4, 400, 4, 32
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(num_clips, k, generator=generator, dtype=F64) @ torch.eye(dim, dtype=F64)[:k]
    views = means[:, None, :] + 1e-3 * torch.randn(num_clips, num_views, dim, generator=generator, dtype=F64)
    assert lidar(views) == pytest.approx(k, abs=0.1)


def test_dimensionally_collapsed_embeddings_cap_lidar_at_their_rank():
    # Embeddings that live in an r-dim subspace of D: S_b has rank <= r, so at most r LDA eigenvalues are nonzero
    # and LiDAR <= r (plus the eps nudge) - far below the full-rank value of the same clips.
    rank, num_clips, num_views, dim = 3, 500, 4, 48
    generator = torch.Generator().manual_seed(2)
    clip_means = torch.randn(num_clips, 1, dim, generator=generator, dtype=F64)
    full = clip_means + 0.5 * torch.randn(num_clips, num_views, dim, generator=generator, dtype=F64)
    collapse = torch.randn(dim, rank, generator=generator, dtype=F64) @ torch.randn(rank, dim, generator=generator,
                                                                                      dtype=F64)
    collapsed_value = lidar(full @ collapse)
    assert collapsed_value <= rank + 1e-3
    assert collapsed_value == pytest.approx(rank, abs=0.3)
    assert lidar(full) > 0.8 * dim


def test_indistinguishable_clips_give_a_near_uniform_noise_spectrum():
    # All clip means equal up to view noise (i.i.d. views): S_b estimates Sigma/q and S_w estimates Sigma, so the
    # whitened matrix is ~I/q with Marchenko-Pastur spread ~sqrt(D/n): LiDAR is close to D, NOT small. LiDAR counts
    # clip-discriminative directions *relative to view noise*; pure noise looks maximally spread, like RankMe.
    num_clips, num_views, dim = 2000, 4, 32
    generator = torch.Generator().manual_seed(3)
    views = 7.0 + torch.randn(num_clips, num_views, dim, generator=generator) * torch.linspace(0.1, 3.0, dim)
    value = lidar(views)
    assert 0.95 * dim < value <= dim


def test_lidar_normalisations_follow_the_paper():
    # Direct transcription of the paper's sums; delta comparable to S_w so the 1/(n-1) and 1/(n(q-1)) factors matter.
    rng = np.random.default_rng(4)
    n, q, d, delta = 6, 3, 4, 0.3
    x = rng.normal(size=(n, q, d)) + rng.normal(size=(n, 1, d))
    mu_i = x.mean(axis=1)
    mu = mu_i.mean(axis=0)
    s_b = sum(np.outer(mu_i[i] - mu, mu_i[i] - mu) for i in range(n)) / (n - 1)
    s_w = sum(np.outer(x[i, j] - mu_i[i], x[i, j] - mu_i[i]) for i in range(n) for j in range(q)) / (n * (q - 1))
    s_w += delta * np.eye(d)
    w, v = np.linalg.eigh(s_w)
    whitener = v @ np.diag(w**-0.5) @ v.T
    lam = np.clip(np.linalg.eigvalsh(whitener @ s_b @ whitener), 0, None)
    p = lam / lam.sum() + 1e-7
    expected = float(np.exp(-(p * np.log(p)).sum()))
    assert lidar(torch.from_numpy(x), delta=delta) == pytest.approx(expected, rel=1e-10)
    assert lidar(torch.from_numpy(x), delta=delta) != pytest.approx(lidar(torch.from_numpy(x), delta=1e-6), rel=1e-3)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_lidar_is_invariant_to_invertible_affine_maps(seed):
    num_clips, num_views, dim = 200, 3, 10
    generator = torch.Generator().manual_seed(seed)
    # Condition numbers are kept <= e^3 so delta = 1e-12 stays negligible next to every S_w eigenvalue: the map
    # changes S_w, and invariance holds only while delta is negligible in both bases.
    views = (torch.randn(num_clips, 1, dim, generator=generator, dtype=F64) * torch.linspace(0.2, 2.0, dim)
             + 0.5 * torch.randn(num_clips, num_views, dim, generator=generator, dtype=F64))
    views = views @ random_orthogonal(dim, generator)
    scales = torch.exp(torch.empty(dim, dtype=F64).uniform_(-1.5, 1.5, generator=generator))
    linear_map = random_orthogonal(dim, generator) * scales @ random_orthogonal(dim, generator)
    offset = 10 * torch.randn(dim, generator=generator, dtype=F64)
    original = lidar(views, delta=1e-12)
    assert lidar(views @ linear_map + offset, delta=1e-12) == pytest.approx(original, rel=1e-6)


def test_lidar_runs_at_evaluation_size():
    # 2000 clips x 4 views x 384 dims: two 384 x 384 eigendecompositions (no wall-time assertion: noisy machine).
    # One thread: ~0.2 s; MKL's 2-thread eigh took ~15 s on this 2-core box while other jobs held the cores
    # (OpenMP oversubscription, not the algorithm), which would make this file slow for no information.
    views = torch.randn(2000, 4, 384, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        value = lidar(views)
    finally:
        torch.set_num_threads(threads)
    # i.i.d. views: noise spectrum as above, but D/n = 0.19 widens the Marchenko-Pastur spread (measured 338)
    assert 0.8 * 384 < value <= 384


@pytest.mark.parametrize("embeddings, kwargs, message", [
    (torch.randn(8, 16), {}, "3-D"),
    (torch.randn(1, 4, 8), {}, "at least 2 clips"),
    (torch.randn(5, 1, 8), {}, "at least 2 views"),
    (torch.full((5, 2, 3), float("inf")), {}, "infinite"),
    (torch.randn(5, 2, 3), {"delta": 0.0}, "delta"),
    (torch.randn(5, 2, 3), {"eps": -1e-7}, "eps"),
    (torch.randn(1, 3, 4).expand(6, 3, 4), {}, "between-class scatter is zero"),
])
def test_lidar_rejects_bad_input(embeddings, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lidar(embeddings, **kwargs)


# ---------------------------------------------------------------- alpha-ReQ

def features_with_exact_spectrum(eigenvalues: torch.Tensor, num_samples: int, seed: int = 0) -> torch.Tensor:
    """X = sqrt(N-1) U diag(sqrt(lambda)) Q with U centred orthonormal columns: its sample covariance is exactly
    Q^T diag(lambda) Q."""
    generator = torch.Generator().manual_seed(seed)
    dim = eigenvalues.numel()
    gaussian = torch.randn(num_samples, dim, generator=generator, dtype=F64)
    orthonormal = torch.linalg.qr(gaussian - gaussian.mean(dim=0))[0]   # combos of centred columns stay centred
    return math.sqrt(num_samples - 1) * orthonormal * eigenvalues.sqrt() @ random_orthogonal(dim, generator)


def power_law(alpha: float, dim: int) -> torch.Tensor:
    return torch.arange(1, dim + 1, dtype=F64) ** -alpha


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_an_exact_power_law(alpha):
    result = alpha_req(features_with_exact_spectrum(power_law(alpha, 48), num_samples=300))
    assert isinstance(result, AlphaReQ)
    assert result.alpha == pytest.approx(alpha, abs=1e-9)
    assert result.r2 == pytest.approx(1.0, abs=1e-9)
    assert result.rank_window == [1, 48]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_alpha_from_sampled_gaussian_features(alpha):
    # Z diag(i^-alpha/2) Q: population covariance spectrum i^-alpha; 20000 samples keep the sampling bias of the
    # 64 eigenvalues small (measured |error| <= 0.006, R^2 >= 0.9996).
    num_samples, dim = 20000, 64
    generator = torch.Generator().manual_seed(6)
    z = torch.randn(num_samples, dim, generator=generator, dtype=F64)
    features = z * power_law(alpha / 2, dim) @ random_orthogonal(dim, generator)
    result = alpha_req(features)
    assert result.alpha == pytest.approx(alpha, abs=0.1)
    assert result.r2 > 0.95


def test_alpha_req_of_white_noise_is_near_zero():
    # Flat population spectrum; the sample spectrum's Marchenko-Pastur spread (+-2 sqrt(D/N) ~ +-6%) tilts it a bit.
    features = torch.randn(40000, 32, generator=torch.Generator().manual_seed(7))
    assert abs(alpha_req(features).alpha) < 0.1


def test_alpha_req_fits_only_the_requested_rank_window():
    # Broken power law: slope 1 over ranks 1..20, slope 3 over ranks 20..40 (continuous at rank 20).
    ranks = torch.arange(1, 41, dtype=F64)
    spectrum = torch.where(ranks <= 20, ranks**-1.0, 20.0**2 * ranks**-3.0)
    features = features_with_exact_spectrum(spectrum, num_samples=200)
    head = alpha_req(features, rank_window=(1, 20))
    tail = alpha_req(features, rank_window=[20, 40])
    whole = alpha_req(features)
    assert head.alpha == pytest.approx(1.0, abs=1e-9) and head.rank_window == [1, 20]
    assert tail.alpha == pytest.approx(3.0, abs=1e-9) and tail.rank_window == [20, 40]
    assert 1.0 < whole.alpha < 3.0 and whole.r2 < 0.99


def test_alpha_req_default_window_stops_at_the_numerical_rank():
    # float32 features of rank 10 in 40 dims: the 30 round-off eigenvalues (~1e-14 relative) must not enter the fit.
    rank, dim = 10, 40
    generator = torch.Generator().manual_seed(8)
    low_rank = torch.randn(5000, rank, generator=generator) * power_law(0.5, rank).float()
    features = low_rank @ torch.randn(rank, dim, generator=generator)
    assert covariance_spectrum(features).numel() == rank
    assert alpha_req(features).rank_window == [1, rank]


@pytest.mark.parametrize("features, window, message", [
    (torch.randn(10), None, "2-D"),
    (torch.randn(1, 5), None, "at least 2 samples"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), None, "NaN"),
    (torch.randn(100, 2), None, "needs >= 3"),
    (torch.randn(100, 8), (0, 5), "out of range"),
    (torch.randn(100, 8), (1, 9), "out of range"),
    (torch.randn(100, 8), (3, 4), "out of range"),
    (torch.randn(100, 8), (1, 2.5), "two ints"),
    (torch.randn(100, 8), (1, 2, 3), "two ints"),
])
def test_alpha_req_rejects_bad_input(features, window, message):
    with pytest.raises(ValueError, match=message):
        alpha_req(features, rank_window=window)
