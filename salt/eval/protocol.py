"""Evaluation protocols: how many clips each measurement sees, which probes run and how they choose their settings.

`smoke` (seconds: tests and smoke runs), `fast` (the default) and `systematic` (the paper's attentive grid and
probe sizes); `eval_protocol(name, selection="paper")` gives a protocol's paper-selection variant. A named
benchmark may set the attentive probe's epochs and batch size (`for_benchmark`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from salt.eval.benchmark import BenchmarkConfig
from salt.eval.probes import check_selection


@dataclass
class EvalProtocol:
    name: str = "fast"
    probe_train_clips: int = 2000      # encoded once; 10-shot draws, selection holdouts and full-label probes use them
    probe_test_clips: int = 1000
    shots: list[int] = field(default_factory=lambda: [10, 0])   # labelled clips per class; 0 = all
    draws: int = 3
    linear_poolings: list[str] = field(default_factory=lambda: ["time"])   # "time" and/or "mean"
    attentive: str = "fast"            # attentive-probe head grid: fast (1 head) | systematic (20) | none
    attentive_train_clips: int = 1500
    attentive_epochs: int = 10
    attentive_batch_size: int = 128
    attentive_self_attn_depth: int = 0  # 0 on CPU (one cross-attention block); the paper's probe has 3 (4 blocks)
    attentive_num_heads: int = 4       # attention heads of the probe's blocks (V-JEPA 2's probe: 16)
    selection: str = "strict"          # strict | paper (salt.eval.probes.check_selection)
    knn_k: int = 20
    metric_clips: int = 512            # clips for RankMe / alpha-ReQ / LiDAR
    lidar_views: int = 2               # views per surrogate class: the clip + (lidar_views - 1) shifted copies
    heldout_clips: int = 128

    def __post_init__(self):
        if self.lidar_views < 2:
            raise ValueError(f"lidar_views must be >= 2 (a clip and at least one view of it), got {self.lidar_views}")
        check_selection(self.selection)


EVAL_PROTOCOLS = {
    "fast": EvalProtocol(),
    # seconds, for tests and smoke runs: exercises every measurement on few clips
    "smoke": EvalProtocol(name="smoke", probe_train_clips=200, probe_test_clips=100, shots=[10, 0], draws=1,
                          attentive_train_clips=200, attentive_epochs=1, metric_clips=100, lidar_views=2,
                          heldout_clips=32),
    "systematic": EvalProtocol(name="systematic", probe_train_clips=3000, draws=5, linear_poolings=["time", "mean"],
                               attentive="systematic", attentive_train_clips=3000, attentive_epochs=20, attentive_batch_size=256,
                               attentive_self_attn_depth=3, attentive_num_heads=16, probe_test_clips=2000, metric_clips=1024,
                               lidar_views=4),
}


def eval_protocol(name: str | EvalProtocol, selection: str | None = None) -> EvalProtocol:
    """A protocol by name (or as given); `selection="paper"` gives its paper-selection variant, named
    "<name>-paper" so its records stand beside the strict ones."""
    if isinstance(name, EvalProtocol):
        proto = name
    elif name not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; valid: {', '.join(EVAL_PROTOCOLS)}")
    else:
        proto = EVAL_PROTOCOLS[name]
    if selection is None or check_selection(selection) == proto.selection:
        return proto
    if proto.selection != "strict":
        raise ValueError(f"protocol {proto.name!r} already has selection {proto.selection!r}")
    return dataclasses.replace(proto, name=f"{proto.name}-paper", selection="paper")


def for_benchmark(protocol: EvalProtocol, bench: BenchmarkConfig | None) -> EvalProtocol:
    """The protocol with a named benchmark's attentive epochs and batch size where it sets them (0: the
    protocol's); the default benchmark (None) keeps the protocol as it is. The name and selection never change."""
    if bench is None:
        return protocol
    p = bench.probe
    return dataclasses.replace(protocol, attentive_epochs=p.attentive_epochs or protocol.attentive_epochs,
                               attentive_batch_size=p.attentive_batch_size or protocol.attentive_batch_size)


def check_protocol_fits(encoder, protocol: EvalProtocol) -> None:
    """The attentive probe's heads must divide the feature width: checked before anything is encoded."""
    if protocol.attentive != "none" and encoder.embed_dim % protocol.attentive_num_heads:
        raise ValueError(f"protocol {protocol.name}: attentive_num_heads={protocol.attentive_num_heads} does not "
                         f"divide the encoder's width {encoder.embed_dim}")
