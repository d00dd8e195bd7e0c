"""Models: the video ViT encoder (size presets), the masked-token predictor / pixel decoder, token helpers."""
from salt.models.predictor import MaskedTokenPredictor
from salt.models.tokens import gather_tokens
from salt.models.vit import SIZE_PRESETS, VideoViT, size_preset


def build_encoder(model_cfg, *, img_size: int, num_frames: int, in_chans: int) -> VideoViT:
    """VideoViT from a ModelConfig (salt.schema) and the data's clip geometry."""
    preset = size_preset(model_cfg.size)
    return VideoViT(img_size=img_size, num_frames=num_frames, in_chans=in_chans, patch_size=model_cfg.patch_size,
                    tubelet_size=model_cfg.tubelet_size, embed_dim=preset.embed_dim, depth=preset.depth,
                    num_heads=preset.num_heads, mlp_ratio=preset.mlp_ratio, init=model_cfg.init,
                    pos_embed=model_cfg.pos_embed)


__all__ = ["MaskedTokenPredictor", "SIZE_PRESETS", "VideoViT", "build_encoder", "gather_tokens", "size_preset"]
