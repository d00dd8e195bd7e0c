"""Narrow transformer that predicts something at masked positions from the context tokens.

The SALT/V-JEPA predictor (outputs latents of the target width) and the VideoMAE-style pixel decoder
(outputs a tubelet of pixels) are the same module with a different output width.
"""
from __future__ import annotations

import torch
from torch import nn
from salt.models.tokens import GradCheckpointing, TokenPositions, init_weights, run_blocks, transformer_blocks
from salt.models.vit import LayerNorm


class MaskedTokenPredictor(GradCheckpointing, nn.Module):
    def __init__(self, *, grid: tuple[int, int, int], in_dim: int, out_dim: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, num_mask_tokens: int = 1, init: str = "xavier",
                 pos_embed: str = "sincos"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"predictor embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.grid, self.embed_dim, self.depth = grid, embed_dim, depth
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_tokens = nn.Parameter(torch.zeros(num_mask_tokens, embed_dim))
        self.positions = TokenPositions(pos_embed, embed_dim, num_heads, grid)
        self.blocks = transformer_blocks(embed_dim, depth, num_heads, mlp_ratio, pos_embed, LayerNorm)
        self.norm = LayerNorm(embed_dim)
        self.proj = nn.Linear(embed_dim, out_dim)
        init_weights(self, init)
        nn.init.normal_(self.mask_tokens, std=0.02)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                mask_token: int = 0, context_valid: torch.Tensor | None = None,
                target_valid: torch.Tensor | None = None) -> torch.Tensor:
        """context [B, Nc, in_dim] at context_idx [B, Nc]; returns predictions [B, Nt, out_dim] at target_idx.
        `context_valid` / `target_valid` (bool): padding entries, masked out of attention (padded rows of a
        MaskPair); both or neither."""
        if not 0 <= mask_token < len(self.mask_tokens):
            raise ValueError(f"mask_token {mask_token} out of range: the predictor has {len(self.mask_tokens)} mask "
                             "tokens (one per mask pair; build it with num_mask_tokens = number of pairs)")
        B = context.shape[0]
        tgt = self.mask_tokens[mask_token].expand(B, target_idx.shape[1], -1)
        index = torch.cat([context_idx, target_idx], dim=1)
        x = self.positions.add(torch.cat([self.embed(context), tgt], dim=1), index)
        valid = None if context_valid is None else torch.cat([context_valid, target_valid], dim=1)
        x = run_blocks(self.blocks, x, self.positions.rope(index, B), self.grad_checkpointing, valid)
        return self.proj(self.norm(x[:, context.shape[1]:]))
