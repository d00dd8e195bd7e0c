"""Known-answer tests for frozen-feature probes (salt.eval.probes) and RankMe (salt.eval.spectral)."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from salt.eval.probes import (
    LinearProbeResult,
    ProbeResult,
    draw_shot_indices,
    extract_features,
    low_shot_probe,
    pool_tokens,
    train_linear_probe,
)
from salt.eval.spectral import rankme


def blobs(n_per_class: int, num_classes: int, dim: int, separation: float, seed: int):
    """Gaussian blobs with unit noise around class means spaced `separation` apart along random directions."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    centres = separation * centres / centres.norm(dim=1, keepdim=True)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    order = torch.randperm(len(labels), generator=generator)
    return features[order], labels[order]


def split_blobs(n_train: int, n_test: int, num_classes: int, dim: int, separation: float, seed: int = 0):
    x, y = blobs(n_train + n_test, num_classes, dim, separation, seed)
    train_mask = torch.zeros(len(y), dtype=torch.bool)
    for cls in range(num_classes):
        train_mask[torch.nonzero(y == cls).flatten()[:n_train]] = True
    return x[train_mask], y[train_mask], x[~train_mask], y[~train_mask]


# ---------------------------------------------------------------- pool_tokens / extract_features


def hand_built_tokens() -> torch.Tensor:
    """[2, 2*2*3, 2] tokens whose channel 0 encodes (t, h, w) as 100t + 10h + w and channel 1 the clip index."""
    rows = []
    for n in range(2):
        clip = [[100 * t + 10 * h + w, n] for t in range(2) for h in range(2) for w in range(3)]
        rows.append(clip)
    return torch.tensor(rows, dtype=torch.float32)


def test_pool_tokens_mean_known_answer():
    pooled = pool_tokens(hand_built_tokens(), (2, 2, 3), "mean")
    # mean of 100t + 10h + w over t in {0,1}, h in {0,1}, w in {0,1,2} = 50 + 5 + 1
    assert torch.equal(pooled, torch.tensor([[56.0, 0.0], [56.0, 1.0]]))


def test_pool_tokens_time_known_answer():
    pooled = pool_tokens(hand_built_tokens(), (2, 2, 3), "time")
    # per time step: mean over h, w = 100t + 6; concatenated [t=0 (2 channels), t=1 (2 channels)]
    assert torch.equal(pooled, torch.tensor([[6.0, 0.0, 106.0, 0.0], [6.0, 1.0, 106.0, 1.0]]))


def test_pool_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="grid"):
        pool_tokens(hand_built_tokens(), (2, 2, 2), "mean")
    with pytest.raises(ValueError, match="how"):
        pool_tokens(hand_built_tokens(), (2, 2, 3), "max")


def test_the_feature_cache_pools_with_pool_tokens():
    """salt.eval.cache stores pool_tokens' time pooling and, as mean pooling, the mean of its time steps."""
    from salt.eval.cache import _pool
    tokens = torch.randn(3, 2 * 2 * 3, 5, generator=torch.Generator().manual_seed(0))
    pooled = _pool(tokens, (2, 2, 3))
    assert torch.equal(pooled["time"], pool_tokens(tokens, (2, 2, 3), "time"))
    torch.testing.assert_close(pooled["mean"], pool_tokens(tokens, (2, 2, 3), "mean"))


def test_extract_features_batches_and_matches_direct_call():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 4)
    videos = torch.randn(7, 3, 2, 4, 4)
    seen_batches = []

    def encode(batch):
        seen_batches.append(len(batch))
        return layer(batch.mean(dim=(2, 3, 4)))

    features = extract_features(encode, videos, batch_size=3)
    assert seen_batches == [3, 3, 1]
    assert not features.requires_grad
    assert features.device.type == "cpu"
    torch.testing.assert_close(features, layer(videos.mean(dim=(2, 3, 4))).detach())


# ---------------------------------------------------------------- RankMe


def closed_form_rankme(singular_values: np.ndarray, eps: float = 1e-7) -> float:
    p = singular_values / singular_values.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q


def test_rankme_prescribed_spectrum_matches_closed_form():
    spectrum = np.array([10.0, 5.0, 3.0, 1.0, 0.5, 0.1, 0.01, 0.0])
    u, v = orthonormal(50, 8, seed=1), orthonormal(8, 8, seed=2)
    matrix = u @ torch.diag(torch.from_numpy(spectrum)) @ v.T
    assert rankme(matrix) == pytest.approx(closed_form_rankme(spectrum), rel=1e-9)
    # effective rank well below 8 for a decaying spectrum, well above 1
    assert 2.0 < rankme(matrix) < 6.0


def test_rankme_rank_one_is_about_one():
    generator = torch.Generator().manual_seed(3)
    matrix = torch.outer(torch.randn(200, generator=generator), torch.randn(32, generator=generator))
    assert rankme(matrix) == pytest.approx(1.0, abs=1e-3)


def test_rankme_orthonormal_columns_is_about_k():
    assert rankme(orthonormal(100, 16, seed=4)) == pytest.approx(16.0, rel=1e-4)
    # float32 input is promoted, and a global scale does not change the rank
    assert rankme(3.0 * orthonormal(100, 16, seed=4).float()) == pytest.approx(16.0, rel=1e-4)


def test_rankme_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        rankme(torch.ones(5))
    with pytest.raises(ValueError, match="all zero"):
        rankme(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        rankme(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


# ---------------------------------------------------------------- linear probe


def test_probe_separable_blobs_reach_full_accuracy():
    train_x, train_y, test_x, test_y = split_blobs(60, 40, num_classes=4, dim=16, separation=12.0)
    result = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=4)
    assert isinstance(result, LinearProbeResult)
    assert result.accuracy >= 0.99
    assert result.val_accuracy >= 0.99
    assert result.weight_decay in [1e-4, 1e-3, 1e-2, 1e-1]


def test_probe_on_noise_labels_is_near_chance():
    generator = torch.Generator().manual_seed(5)
    train_x, test_x = torch.randn(400, 32, generator=generator), torch.randn(800, 32, generator=generator)
    train_y, test_y = torch.randint(0, 4, (400,), generator=generator), torch.randint(0, 4, (800,), generator=generator)
    result = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=4)
    # chance is 0.25; the binomial std over 800 test points is ~0.015
    assert abs(result.accuracy - 0.25) < 0.07


def test_selection_never_looks_at_test_split():
    train_x, train_y, test_x, test_y = split_blobs(50, 100, num_classes=5, dim=24, separation=2.5, seed=6)
    honest = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=5)
    generator = torch.Generator().manual_seed(7)
    adversarial_y = (test_y + 1 + torch.randint(0, 4, test_y.shape, generator=generator)) % 5  # never correct
    noise_x = torch.randn(test_x.shape, generator=generator)
    adversarial = train_linear_probe(train_x, train_y, noise_x, adversarial_y, num_classes=5)
    assert adversarial.weight_decay == honest.weight_decay
    assert adversarial.val_accuracy == honest.val_accuracy
    # ... while the test labels do decide the reported accuracy
    assert honest.accuracy > 0.5
    assert adversarial.accuracy < honest.accuracy - 0.3


def test_probe_is_deterministic_for_a_seed():
    train_x, train_y, test_x, test_y = split_blobs(30, 30, num_classes=3, dim=20, separation=2.0, seed=8)
    first = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3, seed=11)
    second = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3, seed=11)
    assert first == second


def test_probe_matches_scikit_learn_on_the_same_objective():
    train_x, train_y, test_x, test_y = split_blobs(80, 100, num_classes=4, dim=30, separation=2.0, seed=9)
    weight_decay = 1e-2
    ours = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=4, weight_decays=[weight_decay])
    # sklearn minimises 0.5 ||W||^2 + C * sum(CE); ours is mean(CE) + wd ||W||^2, so C = 1 / (2 wd N)
    scaler = StandardScaler().fit(train_x.numpy())
    reference = LogisticRegression(C=1.0 / (2 * weight_decay * len(train_x)), max_iter=2000)
    reference.fit(scaler.transform(train_x.numpy()), train_y.numpy())
    sklearn_accuracy = reference.score(scaler.transform(test_x.numpy()), test_y.numpy())
    assert 0.4 < sklearn_accuracy < 0.98  # a problem where the two could disagree
    assert ours.accuracy == pytest.approx(sklearn_accuracy, abs=0.02)


def test_two_shot_probe_still_selects_on_a_train_holdout():
    train_x, train_y, test_x, test_y = split_blobs(2, 50, num_classes=3, dim=8, separation=6.0, seed=10)
    result = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3)
    assert 0.0 <= result.val_accuracy <= 1.0  # one example per class held out, one kept
    assert result.accuracy > 0.6


def test_one_shot_needs_a_single_weight_decay():
    train_x, train_y, test_x, test_y = split_blobs(1, 20, num_classes=3, dim=8, separation=6.0, seed=12)
    with pytest.raises(ValueError, match="single train example"):
        train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3)
    result = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3, weight_decays=[1e-2])
    assert math.isnan(result.val_accuracy)
    assert result.weight_decay == 1e-2


def test_probe_rejects_bad_input():
    train_x, train_y, test_x, test_y = split_blobs(10, 10, num_classes=3, dim=4, separation=3.0)
    with pytest.raises(ValueError, match="train_y has 29 labels"):
        train_linear_probe(train_x, train_y[:-1], test_x, test_y, num_classes=3)
    with pytest.raises(ValueError, match=r"test_y contains label 3 outside \[0, 3\)"):
        train_linear_probe(train_x, train_y, test_x, test_y.clone().fill_(3), num_classes=3)
    with pytest.raises(ValueError, match="features"):
        train_linear_probe(train_x, train_y, test_x[:, :2], test_y, num_classes=3)
    with pytest.raises(ValueError, match="val_fraction"):
        train_linear_probe(train_x, train_y, test_x, test_y, num_classes=3, val_fraction=1.0)


# ---------------------------------------------------------------- low-shot


def test_shot_draws_take_exactly_k_per_class_and_differ():
    labels = torch.arange(5).repeat(40)
    draws = draw_shot_indices(labels, num_classes=5, shots=4, draws=3, seed=0)
    assert len(draws) == 3
    for idx in draws:
        assert torch.equal(torch.bincount(labels[idx], minlength=5), torch.full((5,), 4))
        assert len(torch.unique(idx)) == len(idx)
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    again = draw_shot_indices(labels, num_classes=5, shots=4, draws=3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(draws, again))
    other_seed = draw_shot_indices(labels, num_classes=5, shots=4, draws=1, seed=1)
    assert not torch.equal(draws[0], other_seed[0])


def test_low_shot_probe_summary_and_determinism():
    train_x, train_y, test_x, test_y = split_blobs(40, 60, num_classes=4, dim=20, separation=2.5, seed=13)
    summary = low_shot_probe(train_x, train_y, test_x, test_y, num_classes=4, shots=5, draws=3, seed=0)
    assert isinstance(summary, ProbeResult) and summary.draws == 3
    accuracies = summary.details["accuracies"]
    assert len(accuracies) == len(summary.details["weight_decays"]) == 3 and len(set(accuracies)) > 1
    assert summary.accuracy == pytest.approx(np.mean(accuracies))
    assert summary.std == pytest.approx(np.std(accuracies))
    assert math.isnan(summary.selection_score)
    assert summary == low_shot_probe(train_x, train_y, test_x, test_y, num_classes=4, shots=5, draws=3, seed=0)

    full = low_shot_probe(train_x, train_y, test_x, test_y, num_classes=4, shots=None)
    assert full.draws == 1 and full.std == 0.0 and len(full.details["accuracies"]) == 1
    reference = train_linear_probe(train_x, train_y, test_x, test_y, num_classes=4)
    assert full.accuracy == reference.accuracy and full.details["weight_decays"] == [reference.weight_decay]


def test_low_shot_probe_rejects_too_few_examples():
    train_x, train_y, test_x, test_y = split_blobs(6, 5, num_classes=3, dim=4, separation=3.0)
    keep = (train_y != 2) | (torch.cumsum(train_y == 2, dim=0) <= 3)  # class 2 keeps only 3 examples
    with pytest.raises(ValueError, match="class 2 has 3"):
        low_shot_probe(train_x[keep], train_y[keep], test_x, test_y, num_classes=3, shots=5)
