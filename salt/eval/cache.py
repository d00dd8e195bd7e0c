"""Streaming feature extraction into an on-disk cache of fp16 shards, and reading it back.

A benchmark's clips are decoded by DataLoader workers, encoded in batches on the device (bf16 autocast on CUDA,
fp32 on CPU) and written shard by shard (`shard_size` videos each, atomically: salt.io), so peak memory is one
shard plus the loader's prefetch whatever the number of clips. A shard holds, per video and per view (temporal
clips x spatial crops), the time- and mean-pooled features (linear and k-NN probes, label-free metrics) and, for
the first `token_rows` videos of the split, every token (the attentive probe). Which videos come first is the
caller's choice (salt.eval.evaluate puts a stratified draw there).

The cache folder is named by a key: the encoder's weights (`encoder_fingerprint`), the benchmark, the split, the
clip and view settings and the videos drawn (salt.layout.RunLayout.feature_cache owns where it lives). An
interrupted extraction keeps its finished shards and a rerun encodes only the missing ones; a finished cache
(its manifest written last) is read without building a loader or calling the encoder. Probes then train on these
fixed features, without augmentation, as V-JEPA's frozen evaluation does.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable

import torch

from salt.eval.probes import pool_tokens
from salt.io import atomic_write_bytes, atomic_write_json
from salt.layout import FeatureCacheLayout

CACHE_FORMAT = 1
POOLINGS = ("time", "mean")


def encoder_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of a network's state: every tensor's name, dtype, shape and bytes. Two
    encoders with this fingerprint compute the same features, whichever checkpoint file they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def cache_key(description: dict) -> str:
    """A short hash of what makes the features what they are (JSON-able `description`)."""
    blob = json.dumps({**description, "format": CACHE_FORMAT}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TokenRows:
    """Token features [N, views, tokens, D] kept in the cache's shards (memory-mapped fp16): indexing with a
    tensor of row numbers gathers those rows only, so an attentive probe reads a batch at a time."""

    def __init__(self, parts: list[torch.Tensor]):
        if not parts:
            raise ValueError("TokenRows needs at least one shard of tokens")
        self.parts = parts
        self.starts = torch.tensor([0] + [len(p) for p in parts]).cumsum(0)
        self.shape = torch.Size((int(self.starts[-1]), *parts[0].shape[1:]))
        self.dtype = parts[0].dtype
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def is_floating_point(self) -> bool:
        return True

    def __getitem__(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(rows).long().reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside [0, {len(self)})")
        shard = torch.bucketize(rows, self.starts[1:], right=True)
        out = torch.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for s in shard.unique().tolist():
            where = torch.nonzero(shard == s).flatten()
            out[where] = self.parts[s][rows[where] - self.starts[s]]
        return out

    def materialize(self) -> torch.Tensor:
        return torch.cat(self.parts)


@dataclass
class CachedSplit:
    """One split's features as the cache holds them."""
    labels: torch.Tensor                  # [N] int64: the label of the clip actually decoded
    pooled: dict[str, torch.Tensor]       # "time" / "mean" -> [N, views, F] fp16 (per view, not yet averaged)
    tokens: TokenRows | None              # rows 0..token_rows-1: [rows, views, tokens, D] fp16
    decode_failures: int                  # unreadable files replaced by the next list entry while extracting

    def averaged(self, how: str) -> torch.Tensor:
        """[N, F] float32: a video's features averaged over its views (the one place linear / k-NN inputs of a
        multi-view split are averaged; attentive probes average logits instead)."""
        return self.pooled[how].float().mean(dim=1)


class _Rows(torch.utils.data.Dataset):
    """The dataset's items `rows`, in order (evaluation items: plain indices, no randomness)."""

    def __init__(self, dataset, rows: list[int]):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.rows[i]]


def resolve_device(device=None) -> torch.device:
    """`device`, or CUDA when available else CPU when None."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_autocast(device: torch.device):
    """bf16 on CUDA only; CPU runs in fp32 (CPU bf16 matmuls are slow and change the numbers)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _pool(tokens: torch.Tensor, grid: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """Time-pooled features (salt.eval.probes.pool_tokens) and their mean over time steps as the mean-pooled
    ones (the mean of per-step means: what caches have always held, equal to the mean over tokens up to rounding)."""
    per_time = pool_tokens(tokens, grid, "time")
    return {"time": per_time, "mean": per_time.unflatten(1, (grid[0], -1)).mean(dim=1)}


def _write_shard(path, videos: list[dict]) -> None:
    shard = {"labels": torch.stack([v["label"] for v in videos]),
             "decode_failures": torch.stack([v["decode_failures"] for v in videos]),
             **{f"pooled_{how}": torch.stack([v[how] for v in videos]) for how in POOLINGS}}
    with_tokens = [v["tokens"] for v in videos if "tokens" in v]
    if with_tokens:
        shard["tokens"] = torch.stack(with_tokens)
    atomic_write_bytes(path, lambda f: torch.save(shard, f))


def extract_split(encode: Callable[[torch.Tensor], torch.Tensor], grid: tuple[int, int, int], dataset,
                  rows: list[int], cache: FeatureCacheLayout, description: dict, *, views: int, token_rows: int,
                  shard_size: int = 256, batch_size: int = 64, num_workers: int = 0, device=None) -> CachedSplit:
    """Features of `dataset[rows[i]]` (items {"video": [views, C, T, H, W], "label", "decode_failures"}) for
    every i, from the cache when it is complete, else encoded (only the shards that are missing) and cached.

    `encode` maps [B, C, T, H, W] to tokens [B, tokens, D] on the grid `grid`; `views` is the clips per item;
    `batch_size` bounds the clips
    (views) encoded at once; tokens are kept for rows 0..token_rows-1. `description` (JSON-able) is what the
    cache folder's key stands for; it is written beside the shards for people to read."""
    if not rows:
        raise ValueError(f"no videos to extract into {cache.root}")
    if shard_size < 1 or batch_size < 1 or num_workers < 0 or views < 1:
        raise ValueError(f"need shard_size >= 1, batch_size >= 1, num_workers >= 0, views >= 1; got {shard_size}, "
                         f"{batch_size}, {num_workers}, {views}")
    if cache.manifest.is_file():
        return load_split(cache)
    device = resolve_device(device)
    atomic_write_json(cache.key, description)
    shards = math.ceil(len(rows) / shard_size)
    missing = [s for s in range(shards) if not cache.shard(s).is_file()]
    todo = [(s, i) for s in missing for i in range(s * shard_size, min((s + 1) * shard_size, len(rows)))]
    if todo:
        pending: list[dict] = []
        position = 0   # index into todo of the next video to come out of the loader
        loader_items = [rows[i] for _, i in todo]
        loader = torch.utils.data.DataLoader(_Rows(dataset, loader_items), batch_size=max(1, batch_size // views),
                                             num_workers=num_workers, shuffle=False)
        with torch.no_grad():
            for batch in loader:
                clips = batch["video"]
                if clips.dim() != 6 or clips.shape[1] != views:
                    raise ValueError(f"benchmark items must be [views={views}, C, T, H, W], got "
                                     f"{tuple(clips.shape[1:])}")
                flat = clips.flatten(0, 1)
                outputs = []
                for start in range(0, len(flat), batch_size):
                    with device_autocast(device):
                        outputs.append(encode(flat[start:start + batch_size].to(device)).float())
                tokens = torch.cat(outputs)
                if not torch.isfinite(tokens).all():
                    raise ValueError(f"the encoder gave NaN or infinite features for videos {position}.."
                                     f"{position + len(clips) - 1} of the extraction into {cache.root}")
                pooled = {how: p.unflatten(0, (len(clips), views)).half().cpu() for how, p in _pool(tokens, grid).items()}
                tokens = tokens.unflatten(0, (len(clips), views)).half().cpu()
                for j in range(len(clips)):
                    shard, row = todo[position]
                    video = {"label": batch["label"][j], "decode_failures": batch["decode_failures"][j],
                             **{how: pooled[how][j].clone() for how in POOLINGS}}
                    if row < token_rows:
                        video["tokens"] = tokens[j].clone()
                    pending.append(video)
                    position += 1
                    if position == len(todo) or todo[position][0] != shard:
                        _write_shard(cache.shard(shard), pending)
                        pending = []
    atomic_write_json(cache.manifest, {"format": CACHE_FORMAT, "shards": shards, "rows": len(rows),
                                       "token_rows": min(token_rows, len(rows)), "shard_size": shard_size})
    return load_split(cache)


def load_split(cache: FeatureCacheLayout) -> CachedSplit:
    """A complete cache folder (its manifest written) as a CachedSplit; shards are memory-mapped."""
    manifest = json.loads(cache.manifest.read_text())
    if manifest.get("format") != CACHE_FORMAT:
        raise ValueError(f"{cache.manifest}: cache format {manifest.get('format')!r}, this code reads "
                         f"{CACHE_FORMAT} (delete the folder to extract again)")
    parts = [torch.load(cache.shard(s), map_location="cpu", weights_only=True, mmap=True)
             for s in range(manifest["shards"])]
    labels = torch.cat([p["labels"] for p in parts])
    if len(labels) != manifest["rows"]:
        raise ValueError(f"{cache.root}: shards hold {len(labels)} videos, the manifest says {manifest['rows']}")
    tokens = [p["tokens"] for p in parts if "tokens" in p]
    return CachedSplit(labels=labels, pooled={how: torch.cat([p[f"pooled_{how}"] for p in parts]) for how in POOLINGS},
                       tokens=TokenRows(tokens) if tokens else None,
                       decode_failures=int(sum(int(p["decode_failures"].sum()) for p in parts)))
