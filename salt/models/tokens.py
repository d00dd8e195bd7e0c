"""Token-grid helpers shared by every model: the one place that gathers tokens by index."""
from __future__ import annotations

import torch
from torch import nn
from timm.layers import trunc_normal_
from timm.models.eva import EvaBlock
from timm.models.vision_transformer import Block

POSITION_KINDS = ("sincos", "rope")


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], index int64 [B, K] -> [B, K, D]. Models see masks only through this."""
    if index.dim() != 2 or index.shape[0] != x.shape[0]:
        raise ValueError(f"index must be [B={x.shape[0]}, K], got {tuple(index.shape)}")
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _axis_split(dim: int) -> tuple[int, int]:
    """Channels per axis for 3D positions: (time, each space axis), all even, time takes the remainder."""
    if dim % 2:
        raise ValueError(f"embedding width must be even, got {dim}")
    d_space = 2 * ((dim // 3) // 2)
    return dim - 2 * d_space, d_space


def _grid_coords(grid: tuple[int, int, int]) -> list[torch.Tensor]:
    return [c.flatten() for c in torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")]


def sincos_pos_embed_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3D sin-cos embedding [T*H*W, dim] (row-major t, h, w): a third of the channels per axis."""
    d_time, d_space = _axis_split(dim)
    t, h, w = _grid_coords(grid)
    return torch.cat([_sincos_1d(d_time, t), _sincos_1d(d_space, h), _sincos_1d(d_space, w)], dim=1).float()


def rope_table_3d(head_dim: int, grid: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """3D rotary table [T*H*W, 2*head_dim] = [sin | cos], each frequency repeated for a channel pair (the
    interleaved layout timm's `apply_rot_embed_cat` expects); the head's channels are split over t, h, w."""
    d_time, d_space = _axis_split(head_dim)
    sins, coss = [], []
    for d, coord in zip((d_time, d_space, d_space), _grid_coords(grid)):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = (coord.double()[:, None] * freqs[None]).repeat_interleave(2, dim=1)
        sins.append(angles.sin())
        coss.append(angles.cos())
    return torch.cat([torch.cat(sins, 1), torch.cat(coss, 1)], dim=1).float()


class TokenPositions(nn.Module):
    """Where each token sits on the grid: a fixed sin-cos embedding added to the tokens ("sincos"), or
    rotary embeddings applied to queries and keys inside attention ("rope", as the paper uses)."""

    def __init__(self, kind: str, dim: int, num_heads: int, grid: tuple[int, int, int]):
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"pos_embed must be one of {', '.join(POSITION_KINDS)}; got {kind!r}")
        self.kind = kind
        table = sincos_pos_embed_3d(dim, grid) if kind == "sincos" else rope_table_3d(dim // num_heads, grid)
        self.register_buffer("table", table, persistent=False)

    def _rows(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        table = self.table.unsqueeze(0).expand(batch, -1, -1)
        return table if index is None else gather_tokens(table, index)

    def add(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, K, D] at grid positions `index` [B, K] (None: all positions in order)."""
        return x + self._rows(index, x.shape[0]) if self.kind == "sincos" else x

    def rope(self, index: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Rotary table rows [B, 1, K, 2*head_dim] for the blocks, or None for sin-cos positions."""
        return self._rows(index, batch).unsqueeze(1) if self.kind == "rope" else None


def transformer_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, pos_embed: str, norm_layer):
    """timm blocks: ViT `Block`, or EVA's `EvaBlock` (same pre-norm block that also applies RoPE)."""
    if pos_embed == "rope":
        return nn.ModuleList(EvaBlock(dim, num_heads, qkv_bias=True, mlp_ratio=mlp_ratio, num_prefix_tokens=0,
                                      norm_layer=norm_layer) for _ in range(depth))
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                         for _ in range(depth))


def run_blocks(blocks, x: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
    for block in blocks:
        x = block(x) if rope is None else block(x, rope=rope)
    return x


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise Linear/Conv3d weights. 'xavier' (MAE) lets the pixel teacher escape the mean-prediction
    plateau on small data (docs/calibration.md, round 2); 'trunc_normal' (std 0.02) is V-JEPA's."""
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
