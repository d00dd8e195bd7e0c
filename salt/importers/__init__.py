"""Released video encoders as run folders: `python -m salt import-encoder {videomae,vjepa2} SOURCE OUT_DIR`.

SOURCE is a local copy of a release, in either of two formats:
  - Hugging Face transformers: a folder with config.json and safetensors weights (`save_pretrained` of
    VideoMAEModel / VideoMAEForPreTraining / VideoMAEForVideoClassification, VJEPA2Model / VJEPA2ForVideoClassification);
  - the project's own release: a .pth / .pt file of MCG-NJU/VideoMAE (a "model" / "module" entry, `encoder.` keys)
    or of facebookresearch/vjepa2 (an "encoder" / "target_encoder" entry, `module.` / `backbone.` prefixes).

Every tensor of the source is accounted for: it becomes an encoder tensor, or it belongs to a part that is not
the encoder (decoder, predictor, classifier) and is listed in the provenance as left out, with the reason;
anything else is an error naming it. The result is an ordinary run folder (config.yaml, one checkpoint in the
format the training loop writes, done.json with provenance), so it serves as `objective.teacher_checkpoint` and as
`python -m salt eval` target. Its method is `pixel` only so that an evaluation can rebuild the run: the pixel
decoder in the checkpoint is freshly initialised (not part of the release), so that held-out loss means nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from salt.checkpoint import load_matching, save_checkpoint
from salt.config import ConfigError, load_config, resolve_config, to_dict
from salt.data import clip_geometry
from salt.flops import num_params
from salt.io import atomic_write_text
from salt.layout import LayoutError, RunLayout
from salt.models import CUSTOM_SIZE
from salt.objectives import build_objective
from salt.schema import RunConfig, finished_run

FAMILIES = ("videomae", "vjepa2")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]   # both releases' input statistics
# Attention heads are not recorded in the original weights; these are the releases' (VideoMAE v1/v2 ViT-S..g,
# V-JEPA 2 ViT-L/H/g: vjepa2's vit_giant_xformers has 22 heads). Other widths need --num-heads.
RELEASE_HEADS = {"videomae": {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16},
                 "vjepa2": {1024: 16, 1280: 16, 1408: 22}}
# The clips each release was trained on (frames, pixels), when the source does not say.
RELEASE_CLIPS = {"videomae": (16, 224), "vjepa2": (64, 256)}


class ImportError_(ValueError):
    """A source that cannot be imported; the message names the file and, where one is at fault, the tensor."""


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

def _sha256(path: Path) -> str:
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


# -- key maps ----------------------------------------------------------------------------------------------------

class _Mapper:
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


def _depth(state: dict, pattern: str) -> int:
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _qkv_bias(q: torch.Tensor | None, k: torch.Tensor | None, v: torch.Tensor | None, dim: int) -> list[torch.Tensor]:
    zero = torch.zeros(dim)
    return [zero if b is None else b for b in (q, k, v)]


def _block_common(m: _Mapper, ours: str, theirs: dict[str, str]) -> None:
    for our_name, their_name in theirs.items():
        for p in ("weight", "bias"):
            m.copy(f"{ours}.{our_name}.{p}", f"{their_name}.{p}")


def _map_videomae_original(m: _Mapper, depth: int, dim: int) -> None:
    m.copy("patch_embed.weight", "patch_embed.proj.weight")
    m.copy("patch_embed.bias", "patch_embed.proj.bias")
    for i in range(depth):
        b = f"blocks.{i}"
        m.copy(f"{b}.attn.qkv.weight", f"{b}.attn.qkv.weight")
        q = m.take(f"{b}.attn.q_bias") if m.has(f"{b}.attn.q_bias") else None
        v = m.take(f"{b}.attn.v_bias") if m.has(f"{b}.attn.v_bias") else None
        # VideoMAE has no key bias; without RoPE it could not change attention, so a zero one is exact.
        m.put(f"{b}.attn.qkv.bias", torch.cat(_qkv_bias(q, None, v, dim)), f"{b}.attn.q_bias", f"{b}.attn.v_bias")
        _block_common(m, b, {n: f"{b}.{n}" for n in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2")})
    if m.has("norm.weight"):
        m.copy("norm.weight", "norm.weight")
        m.copy("norm.bias", "norm.bias")


def _map_videomae_hf(m: _Mapper, depth: int, dim: int) -> None:
    m.copy("patch_embed.weight", "embeddings.patch_embeddings.projection.weight")
    m.copy("patch_embed.bias", "embeddings.patch_embeddings.projection.bias")
    for i in range(depth):
        s, b = f"encoder.layer.{i}", f"blocks.{i}"
        a = f"{s}.attention.attention"
        m.put(f"{b}.attn.qkv.weight", torch.cat([m.take(f"{a}.{n}.weight") for n in ("query", "key", "value")]),
              f"{a}.query/key/value.weight")
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


def _split_qkv_bias(m: _Mapper, b: str, bias: torch.Tensor | None, dim: int, source: str) -> None:
    q, k, v = (None, None, None) if bias is None else bias.split(dim)
    for name, value in zip(("q_bias", "k_bias", "v_bias"), _qkv_bias(q, k, v, dim)):
        m.put(f"{b}.attn.{name}", value, source)


def _map_vjepa2_original(m: _Mapper, depth: int, dim: int) -> None:
    m.copy("patch_embed.weight", "patch_embed.proj.weight")
    m.copy("patch_embed.bias", "patch_embed.proj.bias")
    for i in range(depth):
        b = f"blocks.{i}"
        m.copy(f"{b}.attn.qkv.weight", f"{b}.attn.qkv.weight")
        bias = m.take(f"{b}.attn.qkv.bias") if m.has(f"{b}.attn.qkv.bias") else None
        _split_qkv_bias(m, b, bias, dim, f"{b}.attn.qkv.bias")
        _block_common(m, b, {n: f"{b}.{n}" for n in ("attn.proj", "norm1", "norm2", "mlp.fc1", "mlp.fc2")})
    m.copy("norm.weight", "norm.weight")
    m.copy("norm.bias", "norm.bias")


def _map_vjepa2_hf(m: _Mapper, depth: int, dim: int) -> None:
    m.copy("patch_embed.weight", "encoder.embeddings.patch_embeddings.proj.weight")
    m.copy("patch_embed.bias", "encoder.embeddings.patch_embeddings.proj.bias")
    for i in range(depth):
        s, b = f"encoder.layer.{i}", f"blocks.{i}"
        a = f"{s}.attention"
        m.put(f"{b}.attn.qkv.weight", torch.cat([m.take(f"{a}.{n}.weight") for n in ("query", "key", "value")]),
              f"{a}.query/key/value.weight")
        if m.has(f"{a}.query.bias"):
            bias = torch.cat([m.take(f"{a}.{n}.bias") for n in ("query", "key", "value")])
        else:
            bias = None
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
        mapper = _map_videomae_hf
    else:
        inter, mlp_ratio = int(dim * config["mlp_ratio"]), config["mlp_ratio"]
        clip = (config["frames_per_clip"], config["crop_size"])
        arch = dict(pos_embed="rope", rope_layout="vjepa2", rope_key_bias=True,
                    norm_eps=config.get("layer_norm_eps", 1e-6), final_norm=True)
        mapper = _map_vjepa2_hf
    patch = config["patch_size"]
    arch.update(embed_dim=dim, depth=depth, num_heads=config["num_attention_heads"], mlp_ratio=mlp_ratio,
                patch_size=patch if isinstance(patch, int) else patch[0], tubelet_size=config["tubelet_size"],
                in_chans=config.get("num_channels", config.get("in_chans", 3)), mlp_hidden=inter)
    m = _Mapper(state, str(folder))
    mapper(m, depth, dim)
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
    depth = _depth(state, r"blocks\.(\d+)\.")
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
    m = _Mapper(state, where)
    {"videomae": _map_videomae_original, "vjepa2": _map_vjepa2_original}[family](m, depth, arch["embed_dim"])
    left_out = LEFT_OUT[(family, "original")]
    m.finish(left_out)
    return Release(family, "original", [path], arch, clip, m.state, m.origin,
                   {p: why for p, why in left_out.items() if any(re.fullmatch(p, k) for k in state)},
                   entry=found, num_heads_from=heads_from)


# -- the run folder ----------------------------------------------------------------------------------------------

def _mlp_ratio(dim: int, hidden: int) -> float:
    """A ratio r with int(dim * r) == hidden (timm's Mlp width), robust to float rounding."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = float(torch.nextafter(torch.tensor(ratio, dtype=torch.float64), torch.tensor(float("inf"),
                                                                                             dtype=torch.float64)))
    return ratio


def model_overrides(release: Release, cfg: RunConfig) -> list[str]:
    """`model.*` overrides that make a VideoViT compute what the release computes, on the clips of `cfg.data`
    (their grid, their normalisation)."""
    a = release.arch
    geometry = clip_geometry(cfg.data)
    if geometry.channels != a["in_chans"]:
        raise ImportError_(f"the release takes clips of {a['in_chans']} channels, data.source={cfg.data.source} gives "
                           f"{geometry.channels}: use RGB video (data.source=video_list)")
    values = dict(size=CUSTOM_SIZE, patch_size=a["patch_size"], tubelet_size=a["tubelet_size"],
                  embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                  mlp_ratio=_mlp_ratio(a["embed_dim"], a["mlp_hidden"]), pos_embed=a["pos_embed"],
                  norm_eps=a["norm_eps"], final_norm=a["final_norm"], rope_layout=a.get("rope_layout", "salt"),
                  rope_key_bias=a.get("rope_key_bias", False), init="trunc_normal")
    frames, pixels = release.clip
    source_grid = [frames // a["tubelet_size"], pixels // a["patch_size"], pixels // a["patch_size"]]
    grid = [geometry.frames // a["tubelet_size"], geometry.size // a["patch_size"], geometry.size // a["patch_size"]]
    values["pos_grid"] = source_grid if a["pos_embed"] != "rope" and grid != source_grid else []
    if cfg.data.source == "video_list":
        # The data normalise with their own statistics; re-normalise to the release's (exact, per channel).
        m_d, s_d = cfg.data.video.mean, cfg.data.video.std
        if (m_d, s_d) != (IMAGENET_MEAN, IMAGENET_STD):
            values["input_mean"] = [(me - md) / sd for me, md, sd in zip(IMAGENET_MEAN, m_d, s_d)]
            values["input_std"] = [se / sd for se, sd in zip(IMAGENET_STD, s_d)]
    return [f"model.{k}={_value(v)}" for k, v in values.items()]


def _value(v) -> str:
    """A config value as `key=value` text (parsed back as YAML)."""
    return v if isinstance(v, str) else json.dumps(v)


def teacher_overrides(cfg: RunConfig, run_dir: Path) -> list[str]:
    """What a student's command line needs to use this run as its frozen teacher."""
    return [f"objective.teacher_checkpoint={run_dir}",
            *(f"objective.teacher.{k}={_value(v)}" for k, v in to_dict(cfg.model).items())]


def run_teacher_overrides(run_dir: str | Path) -> list[str]:
    """`teacher_overrides` of a finished run folder (an import, or any earlier run), from its config.yaml: what
    `python -m salt student --teacher RUN_DIR` expands to."""
    try:
        layout, cfg = finished_run(run_dir)
    except LayoutError as e:
        raise ValueError(f"--teacher {run_dir}: {e}") from e
    return teacher_overrides(cfg, layout.root)


def import_encoder(family: str, source: str | Path, out_dir: str | Path, *, configs: list[str] = (),
                   overrides: list[str] = (), entry: str = "", num_heads: int | None = None) -> dict:
    """Import a released encoder into the run folder `out_dir`; -> its done.json summary. A finished import of
    the same source is returned as it is; any other existing folder is refused (never overwritten)."""
    t0 = time.perf_counter()
    layout = RunLayout(Path(out_dir).resolve())
    if layout.is_done():
        raise ImportError_(f"{layout.root} already holds a finished run ({layout.done}); choose another OUT_DIR")
    if layout.root.exists() and any(layout.root.iterdir()):
        raise ImportError_(f"{layout.root} exists and is not empty; choose another OUT_DIR")
    release = read_release(family, source, entry=entry, num_heads=num_heads)
    frames, pixels = release.clip
    files = [resolve_config(c) for c in configs]
    base = ["objective.method=pixel", "data.source=video_list", f"data.video.resolution={pixels}",
            f"data.video.frames_per_clip={frames}", f"name={layout.root.name}", f"out_dir={layout.root.parent}"]
    try:
        first = load_config(RunConfig, files, [*base, *overrides])
        cfg = load_config(RunConfig, files, [*base, *model_overrides(release, first), *overrides,
                                             f"name={layout.root.name}", f"out_dir={layout.root.parent}"])
    except ConfigError as e:
        raise ImportError_(str(e)) from e
    geometry = clip_geometry(cfg.data)
    torch.manual_seed(cfg.train.seed)   # the pixel decoder's initialisation (not part of the release)
    objective = build_objective(cfg, geometry)
    where = f"{release.files[-1]} ({family}, {release.format} format)"
    own = objective.encoder.state_dict()
    for key, value in release.state.items():
        if key in own and own[key].shape != value.shape:
            raise ImportError_(f"{where}: tensor {release.origin[key]!r} has shape {tuple(value.shape)}, but the "
                               f"encoder its architecture describes expects {tuple(own[key].shape)} (as {key!r})")
    load_matching(objective.encoder, release.state, where)
    hashes = {str(p.resolve()): _sha256(p) for p in release.files}
    params = {name: num_params(m) for name, m in objective.saved().items()}
    models = {name: m.state_dict() for name, m in objective.saved().items()}
    state = {"step": 0, "run_id": cfg.name, "config": to_dict(cfg), "models": models, "optimizer": {},
             "flops": 0.0, "flops_total": 0.0, "decode_failures": 0, "rng": {"torch": torch.get_rng_state()},
             "data": {"seed": cfg.train.seed, "next_step": 0}, "masks": {"seed": cfg.train.seed, "next_step": 0},
             "imported": True}
    checkpoint = save_checkpoint(layout.root, 0, state, keep=1)
    atomic_write_text(layout.config, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    summary = {
        "run_id": cfg.name, "method": cfg.objective.method, "steps": 0, "final_metrics": {},
        "flops": {"run": None, "teacher_stage": None, "total": None},
        "flops_note": "unknown: the encoder was trained outside this project; its checkpoint carries 0 FLOPs, so a "
                      "student trained from it counts its own compute only",
        "params": params, "decode_failures": 0, "wall_time_s": time.perf_counter() - t0, "device": "cpu",
        "checkpoint": str(checkpoint), "teacher_checkpoint": "",
        "imported": {
            "family": family, "format": release.format, "source": str(Path(source).resolve()),
            "sha256": hashes, "entry": release.entry, "encoder_parameters": params["encoder"],
            "num_heads_from": release.num_heads_from, "trained_clip": {"frames": frames, "pixels": pixels},
            "left_out": release.left_out,
            "decoder": "the checkpoint's pixel decoder (models.decoder) is freshly initialised, not part of the "
                       "release: it exists so that `python -m salt eval` can rebuild the run; its held-out loss "
                       "means nothing",
            "teacher_overrides": teacher_overrides(cfg, layout.root),
        },
    }
    return layout.write_done(summary)
