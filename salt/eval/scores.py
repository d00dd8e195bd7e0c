"""From features to scores: the label-free metrics and every probe of one `Features` (salt.eval.features),
whichever source made it.

Label-free metrics on the first `metric_clips` train clips: RankMe (mean- and time-pooled), alpha-ReQ, and
LiDAR where the source has views of a clip (raw pixels: RankMe only). Probes: linear (low-shot and all labels)
on each of the protocol's poolings, k-NN on time-pooled features, attentive on tokens; each is a `ProbeTask`
whose `ProbeResult` becomes the record's `ProbeScore` in one place.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from salt.eval.attentive import fit_attentive_probes
from salt.eval.features import PIXELS, Features, ProbeLabels
from salt.eval.knn import knn_probe
from salt.eval.probes import ProbeResult, low_shot_probe
from salt.eval.protocol import EvalProtocol
from salt.eval.record import ProbeScore
from salt.eval.spectral import alpha_req, lidar, rankme


@dataclass(frozen=True)
class ProbeTask:
    """One probe of an evaluation: the record's name for it and the call that scores it."""
    probe: str                         # "linear" | "knn" | "attentive"
    pooling: str                       # "time" | "mean" | "tokens" | "pixels"
    label: str
    shots: int                         # labelled clips per class; 0 = all
    protocol: str                      # "lbfgs", "k=20", the attentive head grid
    run: Callable[[], ProbeResult]

    def score(self) -> ProbeScore:
        """The one place a probe's result becomes a record's score."""
        r = self.run()
        return ProbeScore(self.probe, self.pooling, self.label, self.shots, self.protocol, r.accuracy, r.std,
                          r.selection_score, r.draws, r.details)


def _linear_probes(train_x, test_x, pooling: str, data: ProbeLabels, protocol: EvalProtocol) -> list[ProbeTask]:
    """Low-shot and all-label linear probes of every label; a shot count above a class's clip count is skipped."""
    tasks = []
    for spec in data.labels:
        train_y, test_y = data.train_labels[spec.name], data.test_labels[spec.name]
        smallest_class = int(torch.bincount(train_y, minlength=spec.num_classes).min())
        for shots in protocol.shots:
            if shots > smallest_class:
                warnings.warn(f"skipping the {shots}-shot {spec.name} probe: a class has only {smallest_class} "
                              f"of the {len(train_y)} probe training clips", stacklevel=2)
                continue
            tasks.append(ProbeTask("linear", pooling, spec.name, shots, "lbfgs",
                                   partial(low_shot_probe, train_x, train_y, test_x, test_y,
                                           num_classes=spec.num_classes, shots=shots or None, draws=protocol.draws,
                                           selection=protocol.selection)))
    return tasks


def _knn_probes(train_x, test_x, pooling: str, data: ProbeLabels, protocol: EvalProtocol) -> list[ProbeTask]:
    return [ProbeTask("knn", pooling, spec.name, 0, f"k={protocol.knn_k}",
                      partial(knn_probe, train_x, data.train_labels[spec.name], test_x, data.test_labels[spec.name],
                              num_classes=spec.num_classes, k=protocol.knn_k))
            for spec in data.labels]


def _attentive_probes(features: Features, protocol: EvalProtocol) -> list[ProbeTask]:
    """Attentive probes of every label on the train tokens `features.attentive_rows` (None: every row of
    train_tokens, which are then the probe's clips already, e.g. the feature cache's token rows)."""
    if protocol.attentive == "none" or features.train_tokens is None:
        return []
    data, rows = features.labels, features.attentive_rows
    tokens = features.train_tokens if rows is None else features.train_tokens[rows]
    m = len(tokens)
    return [ProbeTask("attentive", "tokens", spec.name, 0, protocol.attentive,
                      partial(fit_attentive_probes, tokens,
                              data.train_labels[spec.name][:m] if rows is None else data.train_labels[spec.name][rows],
                              features.test_tokens, data.test_labels[spec.name], num_classes=spec.num_classes,
                              protocol=protocol.attentive, epochs=protocol.attentive_epochs,
                              self_attn_depth=protocol.attentive_self_attn_depth,
                              num_heads=protocol.attentive_num_heads, selection=protocol.selection,
                              batch_size=min(protocol.attentive_batch_size, m)))
            for spec in data.labels]


def spectral_metrics(train_mean: torch.Tensor, train_time: torch.Tensor, n: int) -> dict:
    """RankMe (mean- and time-pooled) and alpha-ReQ of the first n clips' features."""
    spectrum = alpha_req(train_mean[:n])
    return {"rankme": rankme(train_mean[:n]), "rankme_time": rankme(train_time[:n]), "alpha_req": spectrum.alpha,
            "alpha_req_r2": spectrum.r2}


def label_free_metrics(features: Features, protocol: EvalProtocol) -> dict:
    """The metrics on the first `metric_clips` train clips: RankMe (raw pixels: that only), alpha-ReQ, LiDAR."""
    if features.raw_pixels:
        train_x = features.pooled[PIXELS][0]
        return {"rankme": rankme(train_x[:min(protocol.metric_clips, len(train_x))])}
    train_mean, train_time = features.pooled["mean"][0], features.pooled["time"][0]
    metrics = spectral_metrics(train_mean, train_time, min(protocol.metric_clips, len(train_mean)))
    if features.lidar_views is not None:
        metrics["lidar"] = lidar(features.lidar_views)
    return metrics


def probe_scores(features: Features, protocol: EvalProtocol) -> list[ProbeScore]:
    """Every probe of the features: linear on each of the protocol's poolings, k-NN on time-pooled features
    (raw pixels: both on pixels), attentive on tokens; each score carries the source's details."""
    linear, knn = ([PIXELS], PIXELS) if features.raw_pixels else (protocol.linear_poolings, "time")
    tasks = [t for how in linear for t in _linear_probes(*features.pooled[how], how, features.labels, protocol)]
    tasks += _knn_probes(*features.pooled[knn], knn, features.labels, protocol)
    tasks += _attentive_probes(features, protocol)
    scores = [t.score() for t in tasks]
    for score in scores:
        score.details.update(features.details)
    return scores


def feature_scores(features: Features, protocol: EvalProtocol) -> tuple[dict, list[ProbeScore]]:
    """The one path from any source's features to a record's numbers: label-free metrics, then every probe."""
    return label_free_metrics(features, protocol), probe_scores(features, protocol)
