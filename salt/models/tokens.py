"""Token-grid helpers shared by every model: the one place that gathers tokens by index."""
from __future__ import annotations

import math

import torch
from torch import nn
from timm.layers import trunc_normal_


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], index int64 [B, K] -> [B, K, D]. Models see masks only through this."""
    if index.dim() != 2 or index.shape[0] != x.shape[0]:
        raise ValueError(f"index must be [B={x.shape[0]}, K], got {tuple(index.shape)}")
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3D sin-cos embedding [T*H*W, dim] (row-major t, h, w): a third of the channels per axis."""
    if dim % 2:
        raise ValueError(f"embedding width must be even, got {dim}")
    d_space = 2 * ((dim // 3) // 2)
    d_time = dim - 2 * d_space
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    emb = torch.cat([
        _sincos_1d(d_time, t.flatten()),
        _sincos_1d(d_space, h.flatten()),
        _sincos_1d(d_space, w.flatten()),
    ], dim=1)
    return emb.float()


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise Linear/Conv3d weights. 'xavier' (MAE) lets the pixel teacher escape the mean-prediction
    plateau on small data (calibration.md); 'trunc_normal' (std 0.02) is V-JEPA's."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            elif scheme == "trunc_normal":
                trunc_normal_(m.weight, std=0.02)
            else:
                raise ValueError(f"init must be 'xavier' or 'trunc_normal', got {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def grid_size(grid: tuple[int, int, int]) -> int:
    return math.prod(grid)
