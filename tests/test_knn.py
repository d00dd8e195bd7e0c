"""Known-answer tests for the weighted k-NN probe (salt.eval.knn)."""

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from salt.eval.knn import knn_probe
from salt.eval.probes import ProbeResult


def clusters(n_per_class: int, num_classes: int, dim: int, noise: float, seed: int):
    """Points around orthogonal unit directions (one per class), so cosine similarity separates them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = torch.eye(dim)[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_well_separated_clusters_are_classified_perfectly():
    train_x, train_y = clusters(30, 4, 8, noise=0.05, seed=0)
    test_x, test_y = clusters(10, 4, 8, noise=0.05, seed=1)
    result = knn_probe(train_x, train_y, test_x, test_y, num_classes=4)
    # nothing is fitted or selected: one draw, no spread, no selection score
    assert isinstance(result, ProbeResult) and result.accuracy == 1.0
    assert result.draws == 1 and result.std == 0.0 and math.isnan(result.selection_score) and result.details == {}


def test_scale_of_features_does_not_matter():
    """Cosine similarity: scaling a train row by any positive factor changes nothing."""
    train_x, train_y = clusters(10, 3, 6, noise=0.6, seed=2)
    test_x, test_y = clusters(20, 3, 6, noise=0.6, seed=3)
    scale = torch.rand(len(train_x), 1, generator=torch.Generator().manual_seed(4)) * 100 + 0.01
    plain = knn_probe(train_x, train_y, test_x, test_y, num_classes=3, k=5).accuracy
    assert 0.0 < plain < 1.0   # noisy enough for the comparison to mean something
    assert knn_probe(train_x * scale, train_y, test_x, test_y, num_classes=3, k=5).accuracy == plain


def test_similarity_weighting_overrules_the_majority():
    """One very close class-0 neighbour against two orthogonal class-1 neighbours: with DINO's temperature
    the close one wins (weight e^(1/0.07) vs 2 e^0); with a huge temperature the votes are equal and the
    majority (class 1) wins."""
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    train_y = torch.tensor([0, 1, 1])
    test_x = torch.tensor([[1.0, 0.0]])
    assert knn_probe(train_x, train_y, test_x, torch.tensor([0]), num_classes=2, k=3, temperature=0.07).accuracy == 1.0
    assert knn_probe(train_x, train_y, test_x, torch.tensor([1]), num_classes=2, k=3, temperature=1e6).accuracy == 1.0


def test_k1_equals_nearest_neighbour_and_batching_changes_nothing():
    generator = torch.Generator().manual_seed(5)
    train_x = torch.randn(80, 5, generator=generator)
    train_y = torch.randint(0, 4, (80,), generator=generator)
    test_x = torch.randn(50, 5, generator=generator)
    test_y = torch.randint(0, 4, (50,), generator=generator)
    reference = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(train_x.numpy(), train_y.numpy())
    expected = float(np.mean(reference.predict(test_x.numpy()) == test_y.numpy()))
    for batch_size in (1, 7, 1024):
        result = knn_probe(train_x, train_y, test_x, test_y, num_classes=4, k=1, batch_size=batch_size)
        assert result.accuracy == expected


def test_k_above_train_size_uses_the_whole_train_set():
    train_x, train_y = clusters(5, 3, 4, noise=0.8, seed=6)
    test_x, test_y = clusters(10, 3, 4, noise=0.8, seed=7)
    whole = knn_probe(train_x, train_y, test_x, test_y, num_classes=3, k=len(train_x), temperature=0.5).accuracy
    assert knn_probe(train_x, train_y, test_x, test_y, num_classes=3, k=1000, temperature=0.5).accuracy == whole


def test_tiny_temperature_does_not_overflow():
    """exp(1/1e-4) overflows any float; the votes must still pick the most similar neighbour's class."""
    train_x = torch.tensor([[1.0, 0.1], [1.0, -0.3], [1.0, 0.4]])
    train_y = torch.tensor([1, 0, 0])
    test_x = torch.tensor([[1.0, 0.0]])
    assert knn_probe(train_x, train_y, test_x, torch.tensor([1]), num_classes=2, k=3, temperature=1e-4).accuracy == 1.0


@pytest.mark.parametrize("change, message", [
    ({"k": 0}, "k must be a positive integer"),
    ({"k": 2.5}, "k must be a positive integer"),
    ({"temperature": 0.0}, "temperature must be finite and > 0"),
    ({"temperature": float("nan")}, "temperature must be finite and > 0"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"test_x": torch.zeros(4, 3)}, "train_x has 2 features but test_x has 3"),
    ({"train_y": torch.tensor([0, 5, 1])}, "train_y contains label 5 outside"),
    ({"train_y": torch.tensor([0, 1])}, "train_x has 3 rows but train_y has 2 labels"),
    ({"train_x": torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]])}, "train_x contains NaN"),
    ({"test_x": torch.zeros(0, 2), "test_y": torch.zeros(0, dtype=torch.long)}, "must be non-empty"),
])
def test_bad_input_is_a_clear_error(change, message):
    arguments = {"train_x": torch.eye(3)[:, :2], "train_y": torch.tensor([0, 1, 1]), "test_x": torch.ones(4, 2),
                 "test_y": torch.tensor([0, 1, 0, 1]), "num_classes": 2}
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        knn_probe(**arguments)
