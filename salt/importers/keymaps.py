"""Released encoders' tensors under VideoViT's names: one key map per family and format, and what each format holds
besides the encoder (left out, with the reason). A `Mapper` consumes source tensors by name, so a tensor that is
neither mapped nor known to be left out is an error naming it."""
from __future__ import annotations

import functools
import re

import torch


class ImportError_(ValueError):
    """A source that cannot be imported; the message names the file and, where one is at fault, the tensor."""


class Mapper:
    """Consumes source tensors by name; what is neither consumed nor matched by a left-out pattern is an error."""

    def __init__(self, state: dict, where: str):
        self.source, self.where = state, where
        self.state: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.source

    def take(self, key: str) -> torch.Tensor:
        if key not in self.source:
            raise ImportError_(f"{self.where}: missing tensor {key!r}")
        self.used.add(key)
        return self.source[key]

    def put(self, ours: str, value: torch.Tensor, *source_keys: str) -> None:
        self.state[ours] = value
        self.origin[ours] = " + ".join(source_keys)

    def copy(self, ours: str, theirs: str) -> None:
        self.put(ours, self.take(theirs), theirs)

    def finish(self, left_out: dict[str, str]) -> None:
        unknown = sorted(k for k in self.source if k not in self.used
                         and not any(re.fullmatch(p, k) for p in left_out))
        if unknown:
            raise ImportError_(f"{self.where}: unknown tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''} "
                               f"({len(unknown)} in all): not part of the encoder this importer knows")


def depth_of(state: dict, pattern: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _qkv_bias(q: torch.Tensor | None, k: torch.Tensor | None, v: torch.Tensor | None, dim: int) -> list[torch.Tensor]:
    zero = torch.zeros(dim)
    return [zero if b is None else b for b in (q, k, v)]


def _block_common(m: Mapper, ours: str, theirs: dict[str, str]) -> None:
    for our_name, their_name in theirs.items():
        for p in ("weight", "bias"):
            m.copy(f"{ours}.{our_name}.{p}", f"{their_name}.{p}")


def _map_original(m: Mapper, depth: int, dim: int, family: str) -> None:
    """The original releases keep timm's names (patch_embed.proj, blocks.i.attn.qkv, norm1, mlp.fc1, ...); they
    differ in the attention biases and in whether the final norm may be absent (VideoMAE's mean-pooling models)."""
    m.copy("patch_embed.weight", "patch_embed.proj.weight")
    m.copy("patch_embed.bias", "patch_embed.proj.bias")
    for i in range(depth):
        b = f"blocks.{i}"
        m.copy(f"{b}.attn.qkv.weight", f"{b}.attn.qkv.weight")
        if family == "videomae":
            q, v = (m.take(f"{b}.attn.{n}") if m.has(f"{b}.attn.{n}") else None for n in ("q_bias", "v_bias"))
            # VideoMAE has no key bias; without RoPE it could not change attention, so a zero one is exact.
            m.put(f"{b}.attn.qkv.bias", torch.cat(_qkv_bias(q, None, v, dim)), f"{b}.attn.q_bias", f"{b}.attn.v_bias")
        else:   # V-JEPA 2: one fused qkv bias, split into the RoPE attention's q/k/v biases
            bias = m.take(f"{b}.attn.qkv.bias") if m.has(f"{b}.attn.qkv.bias") else None
            _split_qkv_bias(m, b, bias, dim, f"{b}.attn.qkv.bias")
        _block_common(m, b, {n: f"{b}.{n}" for n in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2")})
    if family == "vjepa2" or m.has("norm.weight"):
        m.copy("norm.weight", "norm.weight")
        m.copy("norm.bias", "norm.bias")


def _hf_patch_embed(m: Mapper, source: str) -> None:
    """Transformers' patch embedding (a Conv3d at `source`) -> ours."""
    m.copy("patch_embed.weight", f"{source}.weight")
    m.copy("patch_embed.bias", f"{source}.bias")


def _hf_layers(m: Mapper, depth: int, attention: str):
    """Transformers' layers: yields (layer, our block, its attention) for each, the attention's separate
    query/key/value projections already fused into the block's qkv weight."""
    for i in range(depth):
        s, b = f"encoder.layer.{i}", f"blocks.{i}"
        a = f"{s}.{attention}"
        m.put(f"{b}.attn.qkv.weight", torch.cat([m.take(f"{a}.{n}.weight") for n in ("query", "key", "value")]),
              f"{a}.query/key/value.weight")
        yield s, b, a


def _map_videomae_hf(m: Mapper, depth: int, dim: int) -> None:
    _hf_patch_embed(m, "embeddings.patch_embeddings.projection")
    for s, b, a in _hf_layers(m, depth, "attention.attention"):
        # on disk (hub files, save_pretrained) the biases are `q_bias` / `v_bias`; in memory `query.bias` / `value.bias`
        q, k, v = (m.take(f"{a}.{n}.bias") if m.has(f"{a}.{n}.bias") else
                   m.take(f"{a}.{n[0]}_bias") if m.has(f"{a}.{n[0]}_bias") else None for n in ("query", "key", "value"))
        m.put(f"{b}.attn.qkv.bias", torch.cat(_qkv_bias(q, k, v, dim)), f"{a}.q_bias/v_bias")
        _block_common(m, b, {"attn.proj": f"{s}.attention.output.dense", "norm1": f"{s}.layernorm_before",
                             "norm2": f"{s}.layernorm_after", "mlp.fc1": f"{s}.intermediate.dense",
                             "mlp.fc2": f"{s}.output.dense"})
    if m.has("layernorm.weight"):
        m.copy("norm.weight", "layernorm.weight")
        m.copy("norm.bias", "layernorm.bias")


def _split_qkv_bias(m: Mapper, b: str, bias: torch.Tensor | None, dim: int, source: str) -> None:
    q, k, v = (None, None, None) if bias is None else bias.split(dim)
    for name, value in zip(("q_bias", "k_bias", "v_bias"), _qkv_bias(q, k, v, dim)):
        m.put(f"{b}.attn.{name}", value, source)


def _map_vjepa2_hf(m: Mapper, depth: int, dim: int) -> None:
    _hf_patch_embed(m, "encoder.embeddings.patch_embeddings.proj")
    for s, b, a in _hf_layers(m, depth, "attention"):
        bias = (torch.cat([m.take(f"{a}.{n}.bias") for n in ("query", "key", "value")])
                if m.has(f"{a}.query.bias") else None)
        _split_qkv_bias(m, b, bias, dim, f"{a}.query/key/value.bias")
        _block_common(m, b, {"attn.proj": f"{a}.proj", "norm1": f"{s}.norm1", "norm2": f"{s}.norm2",
                             "mlp.fc1": f"{s}.mlp.fc1", "mlp.fc2": f"{s}.mlp.fc2"})
    m.copy("norm.weight", "encoder.layernorm.weight")
    m.copy("norm.bias", "encoder.layernorm.bias")


# What each format holds besides the encoder (regular expressions over the source names), and why it is left out.
LEFT_OUT = {
    ("videomae", "original"): {r"decoder\..*": "VideoMAE's pixel decoder (not the encoder)",
                               r"encoder_to_decoder\..*|mask_token": "VideoMAE's decoder input (not the encoder)",
                               r"head\..*": "classifier head of a fine-tuned model (not the encoder)",
                               r"fc_norm\..*": "norm of mean-pooled features of a fine-tuned model (applies to the "
                                               "pooled vector, not to tokens)"},
    ("videomae", "hf"): {r"decoder\..*": "VideoMAE's pixel decoder (not the encoder)",
                         r"encoder_to_decoder\..*|mask_token": "VideoMAE's decoder input (not the encoder)",
                         r"classifier\..*": "classifier head of a fine-tuned model (not the encoder)",
                         r"fc_norm\..*": "norm of mean-pooled features of a fine-tuned model (applies to the pooled "
                                         "vector, not to tokens)"},
    ("vjepa2", "original"): {r"pos_embed": "a sin-cos table the RoPE encoder never uses (the reference loads it "
                                           "with strict=False and ignores it too)"},
    ("vjepa2", "hf"): {r"predictor\..*": "V-JEPA 2's predictor (not the encoder)",
                       r"pooler\..*|classifier\..*": "attentive pooler / classifier of a fine-tuned model (not the "
                                                     "encoder)"},
}


# (family, format) -> the function that maps its encoder: (mapper, depth, width)
MAPS = {("videomae", "original"): functools.partial(_map_original, family="videomae"),
        ("vjepa2", "original"): functools.partial(_map_original, family="vjepa2"),
        ("videomae", "hf"): _map_videomae_hf, ("vjepa2", "hf"): _map_vjepa2_hf}
