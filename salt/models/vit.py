"""Video ViT encoder (tubelet embedding, fixed 3D sin-cos positions, timm blocks) and its size presets."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from salt.models.tokens import GradCheckpointing, TokenPositions, gather_tokens, init_weights, run_blocks, transformer_blocks

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class VideoViT(GradCheckpointing, nn.Module):
    """Encodes a clip [B, C, T, H, W] into tokens [B, N, D] on the grid (T/tubelet, H/patch, W/patch).

    `keep` (int64 [B, K]) runs the encoder on those tokens only (context-only forward, as V-JEPA/SALT
    students do); each kept token keeps its grid position (sin-cos added, or RoPE in attention).
    """

    def __init__(self, *, img_size: int, num_frames: int, in_chans: int, patch_size: int, tubelet_size: int,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, init: str = "xavier",
                 pos_embed: str = "sincos", norm_eps: float = 1e-6, final_norm: bool = True,
                 rope_layout: str = "salt", rope_key_bias: bool = False,
                 pos_grid: tuple[int, int, int] | None = None,
                 input_mean: list[float] | None = None, input_std: list[float] | None = None):
        """The options after `pos_embed` exist so that released encoders (salt.importers) compute here what they
        compute in their own code; their defaults are this project's encoder, so its checkpoints load unchanged:
        `norm_eps` (HF VideoMAE uses 1e-12), `final_norm` (VideoMAE encoders meant for mean pooling have none),
        `rope_layout` / `rope_key_bias` (V-JEPA 2's RoPE: salt.models.tokens), `pos_grid` (the grid an added
        position table was trained on; resized to this clip's grid), `input_mean` / `input_std` (per-channel
        (x - mean) / std applied to the clip first: re-normalises data normalised with other statistics)."""
        super().__init__()
        if img_size % patch_size or num_frames % tubelet_size:
            raise ValueError(f"img_size {img_size} / num_frames {num_frames} must be divisible by "
                             f"patch_size {patch_size} / tubelet_size {tubelet_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if (input_mean is None) != (input_std is None) or (input_mean is not None and not
                                                           len(input_mean) == len(input_std) == in_chans):
            raise ValueError(f"input_mean and input_std must both be given, {in_chans} values each; got "
                             f"{input_mean} and {input_std}")
        self.grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.embed_dim, self.depth = embed_dim, depth
        self.in_chans, self.patch_size, self.tubelet_size = in_chans, patch_size, tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.patch_embed = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)
        self.positions = TokenPositions(pos_embed, embed_dim, num_heads, self.grid, rope_layout=rope_layout,
                                        table_grid=pos_grid)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = transformer_blocks(embed_dim, depth, num_heads, mlp_ratio, pos_embed, norm,
                                         rope_key_bias=rope_key_bias)
        self.norm = norm(embed_dim) if final_norm else nn.Identity()
        stats = None if input_mean is None else torch.tensor([input_mean, input_std]).view(2, 1, in_chans, 1, 1, 1)
        self.register_buffer("input_norm", stats, persistent=False)
        init_weights(self, init)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None, layer: int = -1,
                keep_valid: torch.Tensor | None = None) -> torch.Tensor:
        """`layer=-1`: final output after the last norm (if any); `layer=k`: output of block k (0-based), no norm.
        `keep_valid` (bool, keep's shape): which kept entries are real tokens; the others are padding, masked out of
        attention (their outputs are meaningless)."""
        if video.dim() != 5 or video.shape[1] != self.in_chans:
            raise ValueError(f"video must be [B, {self.in_chans}, T, H, W], got {tuple(video.shape)}")
        last = self.depth - 1 if layer == -1 else layer
        if not 0 <= last < self.depth:
            raise ValueError(f"layer must be -1 or in [0, {self.depth}), got {layer}")
        if self.input_norm is not None:
            video = (video - self.input_norm[0]) / self.input_norm[1]
        x = self.patch_embed(video).flatten(2).transpose(1, 2)
        if keep is not None:
            x = gather_tokens(x, keep)
        x = self.positions.add(x, keep)
        x = run_blocks(self.blocks[: last + 1], x, self.positions.rope(keep, x.shape[0]), self.grad_checkpointing,
                       keep_valid)
        return self.norm(x) if layer == -1 else x


@dataclass(frozen=True)
class SizePreset:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


def _preset(embed_dim, depth, num_heads, mlp_ratio=4.0):
    return SizePreset(embed_dim, depth, num_heads, mlp_ratio)


def vit_micro() -> SizePreset:   # unit tests
    return _preset(64, 2, 2)


def vit_tiny() -> SizePreset:    # embedded data, CPU minutes (step times: benchmarks/train_step.py)
    return _preset(128, 4, 4)


def vit_mini() -> SizePreset:    # embedded data, CPU tens of minutes
    return _preset(192, 6, 3)


def vit_small() -> SizePreset:
    return _preset(384, 12, 6)


def vit_base() -> SizePreset:    # paper B: 86M
    return _preset(768, 12, 12)


def vit_large() -> SizePreset:   # paper L: 303M
    return _preset(1024, 24, 16)


def vit_huge() -> SizePreset:    # paper H: 632M
    return _preset(1280, 32, 16)


def vit_giant() -> SizePreset:   # paper g: 1.01B (timm's ViT-g/14 MLP width 6144)
    return _preset(1408, 40, 16, 48 / 11)


def vit_gigantic() -> SizePreset:  # paper G: 1.84B (MLP width 8192)
    return _preset(1664, 48, 16, 64 / 13)


SIZE_PRESETS = {f.__name__.removeprefix("vit_"): f for f in
                (vit_micro, vit_tiny, vit_mini, vit_small, vit_base, vit_large, vit_huge, vit_giant, vit_gigantic)}


CUSTOM_SIZE = "custom"   # model.size of an encoder whose width/depth/heads are given (e.g. an imported one)


def size_preset(name: str) -> SizePreset:
    if name not in SIZE_PRESETS:
        raise ValueError(f"unknown model size {name!r}; valid: {', '.join(SIZE_PRESETS)} (or {CUSTOM_SIZE!r} with "
                         "embed_dim, depth and num_heads given)")
    return SIZE_PRESETS[name]()
