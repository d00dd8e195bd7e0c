"""Models: the video ViT encoder (size presets), the masked-token predictor / pixel decoder, token helpers."""
from salt.models.predictor import MaskedTokenPredictor
from salt.models.tokens import gather_tokens
from salt.models.vit import CUSTOM_SIZE, SIZE_PRESETS, SizePreset, VideoViT, size_preset


def model_size(model_cfg) -> SizePreset:
    """Width, depth, heads and MLP ratio of a ModelConfig: its size preset, or its own fields for size=custom."""
    if model_cfg.size == CUSTOM_SIZE:
        return SizePreset(model_cfg.embed_dim, model_cfg.depth, model_cfg.num_heads, model_cfg.mlp_ratio)
    return size_preset(model_cfg.size)


def build_encoder(model_cfg, *, img_size: int, num_frames: int, in_chans: int) -> VideoViT:
    """VideoViT from a ModelConfig (salt.schema) and the data's clip geometry."""
    preset = model_size(model_cfg)
    return VideoViT(img_size=img_size, num_frames=num_frames, in_chans=in_chans, patch_size=model_cfg.patch_size,
                    tubelet_size=model_cfg.tubelet_size, embed_dim=preset.embed_dim, depth=preset.depth,
                    num_heads=preset.num_heads, mlp_ratio=preset.mlp_ratio, init=model_cfg.init,
                    pos_embed=model_cfg.pos_embed, norm_eps=model_cfg.norm_eps, final_norm=model_cfg.final_norm,
                    rope_layout=model_cfg.rope_layout, rope_key_bias=model_cfg.rope_key_bias,
                    pos_grid=tuple(model_cfg.pos_grid) or None, input_mean=model_cfg.input_mean or None,
                    input_std=model_cfg.input_std or None)


__all__ = ["CUSTOM_SIZE", "MaskedTokenPredictor", "SIZE_PRESETS", "VideoViT", "build_encoder", "gather_tokens",
           "model_size", "size_preset"]
