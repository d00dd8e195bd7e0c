"""Reading a released encoder (`read_release`): a Hugging Face transformers folder (config.json + safetensors) or
the project's own .pth / .pt file, its architecture read from the config or the weights, its tensors mapped to
VideoViT's names (salt.importers.keymaps)."""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.importers.keymaps import LEFT_OUT, MAPS, ImportError_, Mapper, depth_of

FAMILIES = ("videomae", "vjepa2")
# Attention heads are not recorded in the original weights; these are the releases' (VideoMAE v1/v2 ViT-S..g,
# V-JEPA 2 ViT-L/H/g: vjepa2's vit_giant_xformers has 22 heads). Other widths need --num-heads.
RELEASE_HEADS = {"videomae": {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16},
                 "vjepa2": {1024: 16, 1280: 16, 1408: 22}}
# The clips each release was trained on (frames, pixels), when the source does not say.
RELEASE_CLIPS = {"videomae": (16, 224), "vjepa2": (64, 256)}


@dataclass
class Release:
    """A released encoder read from SOURCE: its weights under VideoViT's names, its architecture, and what was
    left out of it and why."""
    family: str
    format: str                                   # hf | original
    files: list[Path]
    arch: dict                                    # ModelConfig fields (model.*)
    clip: tuple[int, int]                         # (frames, pixels) it was trained on
    state: dict[str, torch.Tensor]
    origin: dict[str, str] = field(default_factory=dict)     # our tensor name -> the source's
    left_out: dict[str, str] = field(default_factory=dict)   # source name pattern -> why
    entry: str = ""
    num_heads_from: str = ""


# -- reading files -----------------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    """The file's SHA-256 (hex), read in 16 MiB chunks: the provenance of an imported release."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_safetensors(folder: Path) -> tuple[dict, list[Path]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
    else:
        files = [folder / "model.safetensors"]
    state = {}
    for path in files:
        if not path.is_file():
            raise ImportError_(f"{folder}: Hugging Face folder without {path.name} (safetensors weights, as "
                               "save_pretrained writes them)")
        try:
            state.update(load_file(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ImportError_(f"cannot read {path}: not a valid safetensors file ({e})") from e
    return state, files


def _read_torch(path: Path) -> dict:
    # VideoMAE's checkpoints also hold its argparse Namespace ("args"): a plain attribute holder, safe to allow.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImportError_(f"cannot read {path} as a torch checkpoint with weights_only=True: {e}") from e


def _tensors(mapping, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(mapping, dict) or not mapping or not all(torch.is_tensor(v) for v in mapping.values()):
        raise ImportError_(f"{where} is not a state dict (a mapping of names to tensors)")
    return dict(mapping)


def _strip(state: dict, prefixes: tuple[str, ...]) -> dict:
    """Drop wrapper prefixes (DistributedDataParallel's `module.`, V-JEPA's `backbone.`) wherever they lead."""
    out = {}
    for key, value in state.items():
        name = key
        while name.startswith(prefixes):
            name = next(name[len(p):] for p in prefixes if name.startswith(p))
        out[name] = value
    return out


def _heads(family: str, dim: int, num_heads: int | None, path: Path) -> tuple[int, str]:
    if num_heads:
        return num_heads, "--num-heads"
    if dim in RELEASE_HEADS[family]:
        return RELEASE_HEADS[family][dim], f"the {family} releases' head count for width {dim}"
    raise ImportError_(f"{path}: the number of attention heads is not stored in the weights and width {dim} is not "
                       f"a {family} release ({sorted(RELEASE_HEADS[family])}); pass --num-heads")


def _arch_from_weights(state: dict, patch_key: str, fc1_key: str, depth: int) -> dict:
    w = state[patch_key]
    if w.dim() != 5:
        raise ImportError_(f"tensor {patch_key!r} has shape {tuple(w.shape)}; a video encoder's tubelet embedding is "
                           "[width, channels, tubelet, patch, patch]")
    dim, chans, tubelet, patch = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    hidden = state[fc1_key].shape[0] if fc1_key in state else 4 * dim
    return dict(embed_dim=dim, in_chans=chans, tubelet_size=tubelet, patch_size=patch, depth=depth,
                mlp_ratio=hidden / dim)


def read_release(family: str, source: str | Path, *, entry: str = "", num_heads: int | None = None) -> Release:
    """Read SOURCE (a Hugging Face folder or an original .pth/.pt) and map its encoder to VideoViT's names."""
    if family not in FAMILIES:
        raise ImportError_(f"unknown encoder family {family!r}; valid: {', '.join(FAMILIES)}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    if path.is_dir():
        return _read_hf(family, path)
    return _read_original(family, path, entry, num_heads)


def _read_hf(family: str, folder: Path) -> Release:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ImportError_(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise ImportError_(f"{config_path} is not readable JSON: {e}") from e
    if config.get("model_type") != family:
        raise ImportError_(f"{config_path} has model_type {config.get('model_type')!r}, not {family!r} (import it as "
                           "the family it is)")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ImportError_(f"{config_path}: hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    raw, files = _read_safetensors(folder)
    prefix = {"videomae": ("videomae.",), "vjepa2": ("vjepa2.",)}[family]   # task models nest the base model
    state = _strip(raw, prefix)
    dim, depth = config["hidden_size"], config["num_hidden_layers"]
    if family == "videomae":
        inter, mlp_ratio = config["intermediate_size"], config["intermediate_size"] / dim
        clip = (config["num_frames"], config["image_size"])
        arch = dict(pos_embed="sincos_1d", norm_eps=config.get("layer_norm_eps", 1e-12),
                    final_norm="layernorm.weight" in state)
    else:
        inter, mlp_ratio = int(dim * config["mlp_ratio"]), config["mlp_ratio"]
        clip = (config["frames_per_clip"], config["crop_size"])
        arch = dict(pos_embed="rope", rope_layout="vjepa2", rope_key_bias=True,
                    norm_eps=config.get("layer_norm_eps", 1e-6), final_norm=True)
    patch = config["patch_size"]
    arch.update(embed_dim=dim, depth=depth, num_heads=config["num_attention_heads"], mlp_ratio=mlp_ratio,
                patch_size=patch if isinstance(patch, int) else patch[0], tubelet_size=config["tubelet_size"],
                in_chans=config.get("num_channels", config.get("in_chans", 3)), mlp_hidden=inter)
    m = Mapper(state, str(folder))
    MAPS[(family, "hf")](m, depth, dim)
    left_out = LEFT_OUT[(family, "hf")]
    m.finish(left_out)
    return Release(family, "hf", [config_path, *files], arch, clip, m.state, m.origin,
                   {p: why for p, why in left_out.items() if any(re.fullmatch(p, k) for k in state)},
                   num_heads_from="config.json")


def _read_original(family: str, path: Path, entry: str, num_heads: int | None) -> Release:
    if path.suffix == ".safetensors" or path.name == "config.json":
        raise ImportError_(f"{path}: a Hugging Face file; pass the folder that holds config.json and the weights")
    checkpoint = _read_torch(path)
    if not isinstance(checkpoint, dict):
        raise ImportError_(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    entries = (entry,) if entry else {"videomae": ("model", "module"), "vjepa2": ("target_encoder", "encoder")}[family]
    found = next((e for e in entries if e in checkpoint), None)
    if found is None and not entry and all(torch.is_tensor(v) for v in checkpoint.values()):
        found, raw = "", checkpoint        # a bare state dict
    elif found is None:
        raise ImportError_(f"{path} has no {' / '.join(repr(e) for e in entries)} entry (it has "
                           f"{sorted(checkpoint)[:10]}); is it a {family} checkpoint? Pass --entry to choose one")
    else:
        raw = checkpoint[found]
    state = _strip(_tensors(raw, f"{path} [{found or 'top level'}]"), ("module.", "backbone."))
    if family == "videomae":
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
    where = f"{path} [{found or 'top level'}]"
    if "patch_embed.proj.weight" not in state:
        raise ImportError_(f"{where}: missing tensor 'patch_embed.proj.weight': not a {family} encoder's state dict")
    if family == "videomae" and "pos_embed" in state:
        raise ImportError_(f"{where}: tensor 'pos_embed' is a learned position table (use_learnable_pos_emb); only "
                           "VideoMAE's fixed sin-cos table is supported")
    depth = depth_of(state, r"blocks\.(\d+)\.")
    arch = _arch_from_weights(state, "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", depth)
    heads, heads_from = _heads(family, arch["embed_dim"], num_heads, path)
    arch.update(num_heads=heads, mlp_hidden=round(arch["mlp_ratio"] * arch["embed_dim"]))
    if family == "videomae":
        arch.update(pos_embed="sincos_1d", norm_eps=1e-6, final_norm="norm.weight" in state)
        args = checkpoint.get("args")
        clip = ((args.num_frames, args.input_size) if isinstance(args, argparse.Namespace)
                and hasattr(args, "num_frames") and hasattr(args, "input_size") else RELEASE_CLIPS[family])
    else:
        arch.update(pos_embed="rope", rope_layout="vjepa2", rope_key_bias=True, norm_eps=1e-6, final_norm=True)
        clip = RELEASE_CLIPS[family]
    m = Mapper(state, where)
    MAPS[(family, "original")](m, depth, arch["embed_dim"])
    left_out = LEFT_OUT[(family, "original")]
    m.finish(left_out)
    return Release(family, "original", [path], arch, clip, m.state, m.origin,
                   {p: why for p, why in left_out.items() if any(re.fullmatch(p, k) for k in state)},
                   entry=found, num_heads_from=heads_from)


