"""Compute accounting in the paper's method: 6*N*D for a trained network, 2*N*D for a frozen or EMA
network's forward (N parameters, D tokens it processed). Attention's quadratic term is optional."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class NetworkCost:
    """What one network did in one step: how many tokens, in how many sequences, trained or forward-only."""
    params: int
    tokens: int          # total tokens over the batch (and over mask pairs)
    trained: bool
    depth: int = 0       # for the optional attention term
    width: int = 0
    seq_len: int = 0     # tokens per sequence (attention is quadratic in this)

    def flops(self, count_attention: bool = False) -> float:
        per_token = 2.0 * self.params
        if count_attention:
            per_token += 4.0 * self.depth * self.seq_len * self.width   # QK^T and AV, forward
        return (3.0 if self.trained else 1.0) * per_token * self.tokens


def transformer_cost(module: nn.Module, *, batch: int, seq_len: int, trained: bool) -> NetworkCost:
    """Cost of running a timm-block transformer (VideoViT or predictor) on `batch` sequences of `seq_len`."""
    return NetworkCost(params=num_params(module), tokens=batch * seq_len, trained=trained,
                       depth=module.depth, width=module.embed_dim, seq_len=seq_len)


def total_flops(costs: list[NetworkCost], count_attention: bool = False) -> float:
    return sum(c.flops(count_attention) for c in costs)
