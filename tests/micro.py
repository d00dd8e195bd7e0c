"""Micro models and objectives shared by the tests: clip 1 x 4 x 16 x 16, patch 4, tubelet 2 -> grid (2, 4, 4)."""
import torch

from salt.masks import MaskConfig, build_mask_generator
from salt.models import MaskedTokenPredictor, VideoViT, size_preset
from salt.objectives import PixelObjective, SaltObjective, VJepaObjective

GRID = (2, 4, 4)
PIXELS_PER_TOKEN = 1 * 2 * 4 * 4   # channels * tubelet * patch * patch


def make_vit(embed_dim: int | None = None, depth: int | None = None, *, pos_embed: str = "sincos") -> VideoViT:
    micro = size_preset("micro")
    return VideoViT(img_size=16, num_frames=4, in_chans=1, patch_size=4, tubelet_size=2,
                    embed_dim=embed_dim or micro.embed_dim, depth=depth or micro.depth, num_heads=micro.num_heads,
                    pos_embed=pos_embed)


def make_predictor(out_dim: int, num_mask_tokens: int = 2, *, pos_embed: str = "sincos") -> MaskedTokenPredictor:
    return MaskedTokenPredictor(grid=GRID, in_dim=64, out_dim=out_dim, embed_dim=32, depth=1, num_heads=2,
                                num_mask_tokens=num_mask_tokens, pos_embed=pos_embed)


def make_objective(method: str, *, pos_embed: str = "sincos", **kwargs):
    """A micro objective of each method; two mask pairs (V-JEPA's short- and long-range), so two mask tokens."""
    def vit():
        return make_vit(pos_embed=pos_embed)

    if method == "pixel":
        kw = dict(normalize_targets=True, plateau_ratio=0.95, plateau_after=10) | kwargs
        return PixelObjective(vit(), make_predictor(PIXELS_PER_TOKEN, pos_embed=pos_embed), **kw)
    kw = dict(loss="l1", target_layer=-1, target_layernorm=True) | kwargs
    predictor = make_predictor(64, pos_embed=pos_embed)
    if method == "salt":
        return SaltObjective(vit(), predictor, vit(), check_every=1, **kw)
    if method == "vjepa":
        return VJepaObjective(vit(), predictor, momentum=[0.99, 1.0], total_steps=100, **kw)
    raise ValueError(f"unknown method {method!r}")


def make_batch(batch_size: int = 2, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    masks = build_mask_generator(MaskConfig(), GRID)(batch_size, generator)
    return {"video": torch.randn(batch_size, 1, 4, 16, 16, generator=generator), "masks": masks}
