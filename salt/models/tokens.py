"""Token-grid helpers shared by every model: the one place that gathers tokens by index."""
from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn
from timm.layers import trunc_normal_
from timm.models.eva import EvaAttention, EvaBlock
from timm.models.vision_transformer import Block

# sincos: fixed 3D sin-cos added to tokens; rope: 3D rotary in attention; sincos_1d: VideoMAE's fixed table over
# the flattened token index (what released VideoMAE encoders were trained with).
POSITION_KINDS = ("sincos", "rope", "sincos_1d")
# How a head's channels are rotated: "salt" (time takes the remainder, every channel rotated, one frequency per
# channel pair) or "vjepa2" (V-JEPA 2's: 2*((head_dim//3)//2) channels per axis, the rest unrotated, and the
# frequency table tiled across the pairs rather than repeated per pair, as its rotate_queries_or_keys does).
ROPE_LAYOUTS = ("salt", "vjepa2")


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


def sincos_1d_table(dim: int, n: int) -> torch.Tensor:
    """VideoMAE's fixed table [n, dim] over the flattened token index: channel j of position p has angle
    p / 10000^(2*(j//2)/dim), sine on even channels and cosine on odd ones (interleaved)."""
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = torch.arange(n, dtype=torch.float64)[:, None] / 10000 ** exponent[None]
    angles[:, 0::2] = angles[:, 0::2].sin()
    angles[:, 1::2] = angles[:, 1::2].cos()
    return angles.float()


def resize_table(table: torch.Tensor, src: tuple[int, int, int], dst: tuple[int, int, int]) -> torch.Tensor:
    """A position table [T*H*W, D] on grid `src` resized to grid `dst`: bicubic in space (VideoMAE's rule when it
    fine-tunes at another resolution), then linear in time when the number of time steps differs."""
    if tuple(src) == tuple(dst):
        return table
    if table.shape[0] != src[0] * src[1] * src[2]:
        raise ValueError(f"position table has {table.shape[0]} rows, grid {tuple(src)} needs {src[0] * src[1] * src[2]}")
    x = table.double().reshape(*src, -1).permute(0, 3, 1, 2)                        # [T, D, H, W]
    x = F.interpolate(x, size=tuple(dst[1:]), mode="bicubic", align_corners=False)
    if dst[0] != src[0]:
        x = x.permute(2, 3, 1, 0).reshape(1, -1, src[0])                           # [1, H*W*D, T]
        x = F.interpolate(x, size=dst[0], mode="linear", align_corners=False)
        x = x.reshape(dst[1], dst[2], -1, dst[0]).permute(3, 2, 0, 1)               # [T', D, H, W]
    return x.permute(0, 2, 3, 1).reshape(dst[0] * dst[1] * dst[2], -1).float()


def rope_table_3d(head_dim: int, grid: tuple[int, int, int], theta: float = 10000.0,
                  layout: str = "salt") -> torch.Tensor:
    """3D rotary table [T*H*W, 2*head_dim] = [sin | cos] for timm's `apply_rot_embed_cat` (which rotates
    adjacent channel pairs); the head's channels are split over t, h, w (see ROPE_LAYOUTS)."""
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope_layout must be one of {', '.join(ROPE_LAYOUTS)}; got {layout!r}")
    if layout == "salt":
        dims = _axis_split(head_dim)
        dims = (dims[0], dims[1], dims[1])
    else:
        dims = (2 * ((head_dim // 3) // 2),) * 3
    sins, coss = [], []
    for d, coord in zip(dims, _grid_coords(grid)):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = coord.double()[:, None] * freqs[None]
        angles = angles.repeat_interleave(2, dim=1) if layout == "salt" else angles.repeat(1, 2)
        sins.append(angles.sin())
        coss.append(angles.cos())
    rest = head_dim - sum(dims)   # vjepa2: channels left unrotated (sin 0, cos 1)
    n = sins[0].shape[0]
    sins.append(torch.zeros(n, rest, dtype=torch.float64))
    coss.append(torch.ones(n, rest, dtype=torch.float64))
    return torch.cat([torch.cat(sins, 1), torch.cat(coss, 1)], dim=1).float()


class TokenPositions(nn.Module):
    """Where each token sits on the grid: a fixed sin-cos embedding added to the tokens ("sincos"), or
    rotary embeddings applied to queries and keys inside attention ("rope", as the paper uses)."""

    def __init__(self, kind: str, dim: int, num_heads: int, grid: tuple[int, int, int], *, rope_layout: str = "salt",
                 table_grid: tuple[int, int, int] | None = None):
        """`table_grid`: the grid an added table was trained on (None: `grid`); it is resized to `grid`, so an
        encoder keeps its positions' geometry on clips of another size. RoPE needs no resizing."""
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"pos_embed must be one of {', '.join(POSITION_KINDS)}; got {kind!r}")
        self.kind = "rope" if kind == "rope" else "sincos"   # how the table is used: rotated or added
        src = tuple(table_grid or grid)
        if kind == "rope":
            table = rope_operands(rope_table_3d(dim // num_heads, grid, layout=rope_layout), rope_layout)
        elif kind == "sincos":
            table = resize_table(sincos_pos_embed_3d(dim, src), src, grid)
        else:
            table = resize_table(sincos_1d_table(dim, src[0] * src[1] * src[2]), src, grid)
        self.register_buffer("table", table, persistent=False)

    def _rows(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        table = self.table.unsqueeze(0).expand(batch, -1, -1)
        return table if index is None else gather_tokens(table, index)

    def add(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, K, D] at grid positions `index` [B, K] (None: all positions in order)."""
        return x + self._rows(index, x.shape[0]) if self.kind == "sincos" else x

    def rope(self, index: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Rotary rows [B, 1, K, ...] (`rope_operands`) for the blocks, or None for sin-cos positions."""
        return self._rows(index, batch).unsqueeze(1) if self.kind == "rope" else None


def rope_operands(table: torch.Tensor, layout: str) -> torch.Tensor:
    """timm's [..., 2*head_dim] = [sin | cos] table (`apply_rot_embed_cat` layout) of `layout` -> what `rotate_pairs`
    takes (decided by the layout, not the values, so it also builds on the meta device).

    Where each channel pair turns by one angle (layout "salt": a rotation), the unit complex numbers
    cos + i*sin [..., head_dim/2] (complex64): rotating is one complex multiply. Otherwise (layout "vjepa2", whose
    tiled frequencies give a pair's two channels different angles: not a rotation, kept as V-JEPA 2 computes it)
    [..., 2*head_dim] = [signed sin | cos]: the sign of timm's (x0, x1) -> (-x1, x0) folded into the table, so it is
    one pair swap, one multiply and one multiply-add (timm: slices, a negation, a stack, two multiplies, an add and a
    concatenation with the absent prefix tokens)."""
    sin, cos = table.chunk(2, -1)
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope_layout must be one of {', '.join(ROPE_LAYOUTS)}; got {layout!r}")
    if layout == "salt":
        return torch.complex(cos[..., 0::2].contiguous(), sin[..., 0::2].contiguous())
    sign = torch.ones(sin.shape[-1], dtype=sin.dtype, device=sin.device)
    sign[0::2] = -1
    return torch.cat([sin * sign, cos], -1)


def rotate_pairs(x: torch.Tensor, operands: torch.Tensor) -> torch.Tensor:
    """RoPE on x [..., N, head_dim] with `rope_operands` rows [..., N, head_dim/2 complex or 2*head_dim real]: equal
    to timm's `apply_rot_embed_cat(x, table)` (the product in float32, the result in x's dtype)."""
    if operands.is_complex():
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * operands).flatten(-2).to(x.dtype)
    signed_sin, cos = operands.chunk(2, -1)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)   # (x1, x0, x3, x2, ...)
    return torch.addcmul(x * cos, swapped, signed_sin).to(x.dtype)


class RopeAttention(EvaAttention):
    """timm's `EvaAttention` (same parameters and names, so checkpoints load unchanged) with a shorter forward for
    the case this project uses: fused qkv, no prefix tokens, no gate, no q/k norm, SDPA. Queries and keys are
    rotated together in one `rotate_pairs` call. `rope` rows are `rope_operands`, not timm's [sin | cos]."""

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        B, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)   # [3, B, heads, N, head_dim]
        qk, v = qkv[:2], qkv[2]
        if rope is not None:
            qk = rotate_pairs(qk, rope)
        x = F.scaled_dot_product_attention(qk[0], qk[1], v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(self.norm(x.transpose(1, 2).reshape(B, N, C))))


def transformer_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, pos_embed: str, norm_layer, *,
                       rope_key_bias: bool = False):
    """timm blocks: ViT `Block`, or EVA's `EvaBlock` (same pre-norm block that also applies RoPE).

    EVA's attention has no key bias (a zero buffer). Without RoPE a key bias cannot change attention (it adds the
    same q.b to every key's logit), but with RoPE it is rotated per position and does: `rope_key_bias` makes it a
    parameter, as V-JEPA 2's attention has."""
    if pos_embed == "rope":
        blocks = nn.ModuleList(EvaBlock(dim, num_heads, qkv_bias=True, mlp_ratio=mlp_ratio, num_prefix_tokens=0,
                                        norm_layer=norm_layer) for _ in range(depth))
        for block in blocks:   # same module, same parameters, shorter forward (no new state, no RNG drawn)
            block.attn.__class__ = RopeAttention
        if rope_key_bias:
            for block in blocks:
                del block.attn.k_bias
                block.attn.k_bias = nn.Parameter(torch.zeros(block.attn.q_bias.shape))
        return blocks
    return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                         for _ in range(depth))


def run_blocks(blocks, x: torch.Tensor, rope: torch.Tensor | None, checkpoint: bool = False,
               valid: torch.Tensor | None = None) -> torch.Tensor:
    """The blocks in order. `checkpoint` (activation checkpointing, when gradients are being recorded): each block
    keeps only its input and recomputes its activations during backward (non-reentrant, RNG state preserved).
    `valid` (bool [B, N]): padding tokens (False) are keys no token attends to; their own outputs are garbage
    that callers ignore."""
    kwargs = {} if rope is None else {"rope": rope}
    if valid is not None:
        kwargs["attn_mask"] = valid[:, None, None, :]   # SDPA's boolean mask: True = may be attended to
    for block in blocks:
        if checkpoint and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False, **kwargs)
        else:
            x = block(x, **kwargs)
    return x


class GradCheckpointing:
    """timm's convention: `set_grad_checkpointing(enable)` switches activation checkpointing of every block."""

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise Linear/Conv3d weights: 'xavier' (MAE's, the default) or 'trunc_normal' (std 0.02, V-JEPA's).
    Compare them on your data with `model.init=trunc_normal`: a pixel teacher that stays on the mean-prediction
    plateau gets a warning (salt.objectives.pixel)."""
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
