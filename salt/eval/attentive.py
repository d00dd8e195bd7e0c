"""Attentive probes on cached frozen features (V-JEPA 2 / SALT protocol), trained as parallel heads and
selected honestly.

A probe is a few self-attention blocks over all tokens, one cross-attention block from learnable queries, and
a linear head. The paper's "systematic" protocol trains 20 heads over an LR x WD grid; V-JEPA 2's public eval
then reports the best head *on the split it scores*, which inflates the number. Here the grid is searched on a
stratified holdout of the TRAIN features, and the test split is scored with the chosen head only (every
head's test score is reported too, for inspection, never used to choose).

The selected head is not refit on the full train set: refitting a non-convex, stochastic probe gives a
different model from the one that was selected, and doubles the cost; the chosen head has seen
(1 - val_fraction) of the train labels, which the result's details record as `num_fit`.

Inputs are token features [N, tokens, D] (or [N, views, tokens, D]) extracted once by the caller: probing
never re-runs the encoder (salt.eval.cache keeps a benchmark's features on disk between evaluations).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from salt.eval.probes import ProbeResult, _as_labels, _holdout_split, check_selection
from salt.eval.cache import TokenRows, device_autocast, resolve_device
from salt.models.tokens import init_weights
from salt.models.vit import LayerNorm

SYSTEMATIC_LRS = [5e-3, 3e-3, 1e-3, 3e-4, 1e-4]
SYSTEMATIC_WDS = [0.8, 0.4, 0.1, 0.01]
FAST_LR, FAST_WD = 1e-3, 0.01
PROTOCOLS = ("fast", "systematic")


def protocol_grid(protocol: str) -> list[tuple[float, float]]:
    """(lr, wd) per head: "fast" = one head (1e-3, 0.01); "systematic" = the paper's 5 x 4 grid."""
    if protocol == "fast":
        return [(FAST_LR, FAST_WD)]
    if protocol == "systematic":
        return [(lr, wd) for lr in SYSTEMATIC_LRS for wd in SYSTEMATIC_WDS]
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")


@dataclass
class AttentiveProbeConfig:
    protocol: str = "fast"
    val_fraction: float = 0.2        # stratified holdout of the TRAIN set used to pick the head
    seed: int = 0                    # holdout split, probe init (shared by all heads) and batch order
    epochs: int = 20
    batch_size: int = 256
    warmup_epochs: float = 1.0       # linear warmup from 0, then cosine to final_lr_ratio * lr
    final_lr_ratio: float = 0.0
    self_attn_depth: int = 3         # self-attention blocks before the cross-attention block (paper: 3)
    num_heads: int = 4               # attention heads; must divide the probe width
    width: int = 0                   # probe width; 0 = the feature width (no input projection)
    num_queries: int = 1
    mlp_ratio: float = 4.0
    eval_batch_size: int = 512
    selection: str = "strict"        # strict: head chosen on the train holdout | paper: best head on test (optimistic)

    def __post_init__(self):
        protocol_grid(self.protocol)
        check_selection(self.selection)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("epochs", "batch_size", "num_heads", "num_queries", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("self_attn_depth", "width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if not 0 <= self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    def architecture(self) -> dict:
        return dict(self_attn_depth=self.self_attn_depth, num_heads=self.num_heads, width=self.width,
                    num_queries=self.num_queries, mlp_ratio=self.mlp_ratio)


class CrossAttentionBlock(nn.Module):
    """Queries [B, Q, D] attend to tokens [B, N, D]; residual attention then residual MLP (timm has none).

    As in V-JEPA 2's attentive pooler, the tokens are layer-normed before the keys/values (pre-norm) while the
    queries enter un-normed (on entry they are learned parameters, so a norm would only rescale them).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"probe width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_tokens = LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, num_queries, dim = queries.shape
        head_dim = dim // self.num_heads
        q = self.q(queries).reshape(batch, num_queries, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(self.norm_tokens(tokens)).reshape(batch, tokens.shape[1], 2, self.num_heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, num_queries, dim)
        queries = queries + self.proj(attended)
        return queries + self.mlp(self.norm_mlp(queries))


class AttentiveProbe(nn.Module):
    """tokens [B, N, in_dim] -> logits [B, num_classes]: `self_attn_depth` timm Blocks over all tokens, one
    cross-attention block from `num_queries` learned queries, then a linear head on the concatenated queries.

    The probe adds no positional embedding: the frozen features already carry their encoder's positions.
    Init as V-JEPA 2: trunc-normal(0.02) linears and queries, zero biases.
    """

    def __init__(self, in_dim: int, num_classes: int, *, self_attn_depth: int = 3, num_heads: int = 4,
                 width: int = 0, num_queries: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        if in_dim <= 0 or num_classes < 2:
            raise ValueError(f"need in_dim > 0 and num_classes >= 2, got {in_dim} and {num_classes}")
        width = width or in_dim
        if width % num_heads:
            raise ValueError(f"probe width {width} must be divisible by num_heads {num_heads}")
        self.project = nn.Linear(in_dim, width) if width != in_dim else nn.Identity()
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
                                    for _ in range(self_attn_depth))
        self.queries = nn.Parameter(torch.zeros(1, num_queries, width))
        self.pool = CrossAttentionBlock(width, num_heads, mlp_ratio)
        self.head = nn.Linear(num_queries * width, num_classes)
        init_weights(self, "trunc_normal")
        trunc_normal_(self.queries, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.project(tokens)
        for block in self.blocks:
            x = block(x)
        pooled = self.pool(self.queries.expand(x.shape[0], -1, -1), x)
        return self.head(pooled.flatten(1))


class ParallelAttentiveProbes(nn.Module):
    """H independent probes, one per (lr, wd) of `grid`, trained together in one pass over the features.

    The heads share no parameters, and the loss is the sum of the heads' losses, so each head's gradient is
    exactly its own: training them together equals training each alone (same seed, same batch order). All
    heads start from the same init (drawn from `seed` without touching the global RNG), so they differ only
    in their hyperparameters.
    """

    def __init__(self, in_dim: int, num_classes: int, grid: list[tuple[float, float]], *, seed: int = 0,
                 **architecture):
        super().__init__()
        if not grid:
            raise ValueError("grid must contain at least one (lr, wd) pair")
        if any(not (lr > 0 and wd >= 0 and math.isfinite(lr) and math.isfinite(wd)) for lr, wd in grid):
            raise ValueError(f"grid needs lr > 0 and wd >= 0 (finite), got {grid}")
        self.grid = [(float(lr), float(wd)) for lr, wd in grid]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            first = AttentiveProbe(in_dim, num_classes, **architecture)
        self.probes = nn.ModuleList([first] + [copy.deepcopy(first) for _ in self.grid[1:]])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, D] -> logits [H, B, C]."""
        return torch.stack([probe(tokens) for probe in self.probes])

    def param_groups(self) -> list[dict]:
        """Two AdamW groups per head with that head's lr: matrices (and queries) decayed by its wd, biases
        and norm gains not decayed (as V-JEPA 2's eval). `base_lr` is what the schedule scales."""
        groups = []
        for probe, (lr, wd) in zip(self.probes, self.grid):
            params = list(probe.parameters())
            groups.append(dict(params=[p for p in params if p.ndim > 1], lr=lr, base_lr=lr, weight_decay=wd))
            groups.append(dict(params=[p for p in params if p.ndim <= 1], lr=lr, base_lr=lr, weight_decay=0.0))
        return groups


def lr_factor(step: int, warmup_steps: int, total_steps: int, final_ratio: float) -> float:
    """Linear warmup to 1 over `warmup_steps` (first step already > 0), then cosine to `final_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def as_view_tokens(tokens, name: str) -> torch.Tensor:
    """[N, tokens, D] -> [N, 1, tokens, D]; [N, views, tokens, D] unchanged; anything else a ValueError.
    Token rows read from the on-disk feature cache (salt.eval.cache.TokenRows: [N, views, tokens, D], checked
    finite when written) pass unchanged: batches gather their rows without loading the rest."""
    if isinstance(tokens, TokenRows):
        return tokens
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.ndim == 3:
        tokens = tokens.unsqueeze(1)
    if tokens.ndim != 4 or min(tokens.shape) == 0:
        raise ValueError(f"{name} must be [N, tokens, D] or [N, views, tokens, D] and non-empty, "
                         f"got shape {tuple(tokens.shape)}")
    if not tokens.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {tokens.dtype}")
    if not torch.isfinite(tokens).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return tokens


def _batch(tokens: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `idx` of [N, V, T, D] as float32 [B*V, T, D] on `device` (views become extra batch rows)."""
    return tokens[idx].to(device, torch.float32, non_blocking=True).flatten(0, 1)


def train_parallel_probes(probes: ParallelAttentiveProbes, tokens: torch.Tensor, labels: torch.Tensor, *,
                          epochs: int, batch_size: int, warmup_epochs: float = 1.0, final_lr_ratio: float = 0.0,
                          seed: int = 0, indices: torch.Tensor | None = None, device=None) -> list[float]:
    """Train every head with AdamW (one lr/wd per head) under a per-step warmup + cosine schedule.

    `tokens` [N, tokens, D] or [N, V, tokens, D] may live on CPU in any float dtype (batches are moved and
    cast to fp32); `indices` restricts training to those rows without copying the features. The batch order
    comes from a generator seeded by `seed`. With V views every view is a training example of its clip's
    label (loss averaged over views, as V-JEPA 2). Returns each head's mean loss over the last epoch.
    """
    tokens = as_view_tokens(tokens, "tokens")
    labels = torch.as_tensor(labels).long().cpu()
    rows = torch.arange(len(tokens)) if indices is None else torch.as_tensor(indices).long().cpu()
    if len(labels) != len(tokens) or len(rows) == 0:
        raise ValueError(f"need one label per clip and >= 1 row: {len(tokens)} clips, {len(labels)} labels, "
                         f"{len(rows)} rows")
    if epochs <= 0 or batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    device = resolve_device(device)
    probes.to(device).train()
    optimizer = torch.optim.AdamW(probes.param_groups())
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
    num_heads, views = len(probes.grid), tokens.shape[1]
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = rows[torch.randperm(len(rows), generator=generator)]
        epoch_loss = torch.zeros(num_heads)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            targets = labels[idx].repeat_interleave(views).to(device)
            factor = lr_factor(step, warmup_steps, total_steps, final_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            with device_autocast(device):
                logits = probes(_batch(tokens, idx, device))
            losses = F.cross_entropy(logits.float().flatten(0, 1), targets.repeat(num_heads),
                                     reduction="none").view(num_heads, -1).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            epoch_loss += losses.detach().cpu() * len(idx)
            step += 1
    return (epoch_loss / len(rows)).tolist()


@torch.no_grad()
def view_averaged_logits(model: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, *,
                         batch_size: int = 512, indices: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """Logits per clip, averaged over its views (clips x spatial views): [..., N, C] on CPU, fp32.

    `model` maps [B, tokens, D] to [B, C] or [H, B, C]. Multi-view testing averages the *logits* of a clip's
    V views before the argmax (V-JEPA 2 averages softmax probabilities instead; the two agree in most cases
    and logits keep one code path for accuracy and cross-entropy). Put the model in eval mode first.
    """
    tokens = as_view_tokens(tokens, "tokens")
    rows = torch.arange(len(tokens)) if indices is None else torch.as_tensor(indices).long().cpu()
    device = resolve_device(device)
    views, outputs = tokens.shape[1], []
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        with device_autocast(device):
            logits = model(_batch(tokens, idx, device))
        outputs.append(logits.float().unflatten(-2, (len(idx), views)).mean(dim=-2).cpu())
    return torch.cat(outputs, dim=-2)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-head accuracy and cross-entropy of logits [H, N, C] against labels [N]."""
    accuracy = (logits.argmax(dim=-1) == labels).float().mean(dim=-1)
    loss = torch.stack([F.cross_entropy(head_logits, labels) for head_logits in logits])
    return accuracy.tolist(), loss.tolist()


def _check_inputs(train_tokens, train_labels, test_tokens, test_labels, num_classes: int):
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    train_tokens = as_view_tokens(train_tokens, "train_tokens")
    test_tokens = as_view_tokens(test_tokens, "test_tokens")
    train_labels = _as_labels(train_labels, num_classes, "train_labels").cpu()
    test_labels = _as_labels(test_labels, num_classes, "test_labels").cpu()
    if len(train_tokens) != len(train_labels):
        raise ValueError(f"train_tokens has {len(train_tokens)} clips but train_labels has {len(train_labels)}")
    if len(test_tokens) != len(test_labels):
        raise ValueError(f"test_tokens has {len(test_tokens)} clips but test_labels has {len(test_labels)}")
    if train_tokens.shape[-1] != test_tokens.shape[-1]:
        raise ValueError(f"train_tokens have width {train_tokens.shape[-1]} but test_tokens have "
                         f"{test_tokens.shape[-1]}")
    return train_tokens, train_labels, test_tokens, test_labels


def fit_attentive_probes(train_tokens, train_labels, test_tokens, test_labels, *, num_classes: int,
                         device=None, **options) -> ProbeResult:
    """Train the protocol's heads on a stratified part of TRAIN, pick the best on the rest, score test once.

    The result: the chosen head's test accuracy and its held-out accuracy (the selection score); details hold
    the chosen lr/wd ("selected"), every head's scores ("per_head"), "epochs", the clip counts of the fit,
    held-out and test parts, and "test_views".

    `options` are AttentiveProbeConfig fields (protocol, val_fraction, seed, epochs, batch_size, ...).
    Tokens are [N, tokens, D] or [N, views, tokens, D] (views averaged at evaluation, see
    `view_averaged_logits`). Selection: highest held-out accuracy, ties broken by lower held-out
    cross-entropy, then grid order. No refit on the full train set (see module docstring). `device` None
    means CUDA when available (bf16 autocast there), else CPU fp32.
    selection="paper": every head trains on all train clips and the best head ON TEST is reported (V-JEPA 2's
    published protocol; its selection score is that test accuracy).
    """
    cfg = AttentiveProbeConfig(**options)
    train_tokens, train_labels, test_tokens, test_labels = _check_inputs(
        train_tokens, train_labels, test_tokens, test_labels, num_classes)
    if cfg.selection == "paper":   # V-JEPA 2's published protocol: every head fit on all train clips, best on test
        fit_idx, val_idx = torch.arange(len(train_labels)), torch.zeros(0, dtype=torch.long)
    else:
        fit_idx, val_idx = _holdout_split(train_labels, cfg.val_fraction, cfg.seed)
        if len(val_idx) == 0:
            raise ValueError("cannot hold out a validation split: every class has a single train example")
    grid = protocol_grid(cfg.protocol)
    probes = ParallelAttentiveProbes(train_tokens.shape[-1], num_classes, grid, seed=cfg.seed,
                                     **cfg.architecture())
    train_losses = train_parallel_probes(
        probes, train_tokens, train_labels, epochs=cfg.epochs, batch_size=cfg.batch_size,
        warmup_epochs=cfg.warmup_epochs, final_lr_ratio=cfg.final_lr_ratio, seed=cfg.seed, indices=fit_idx,
        device=device)
    probes.eval()
    evaluate = dict(batch_size=cfg.eval_batch_size, device=device)

    if cfg.selection == "paper":
        test_acc, test_loss = _scores(view_averaged_logits(probes, test_tokens, **evaluate), test_labels)
        val_acc, val_loss = test_acc, test_loss   # the test split chooses: the optimistic published number
    else:
        val_acc, val_loss = _scores(view_averaged_logits(probes, train_tokens, indices=val_idx, **evaluate),
                                    train_labels[val_idx])
    chosen = max(range(len(grid)), key=lambda h: (val_acc[h], -val_loss[h], -h))
    if cfg.selection == "strict":
        # Only now is the test split touched; every head is scored for inspection, the chosen one is reported.
        test_acc, _ = _scores(view_averaged_logits(probes, test_tokens, **evaluate), test_labels)
    details = {"selected": {"lr": grid[chosen][0], "wd": grid[chosen][1]},
               "per_head": [{"lr": lr, "wd": wd, "val_accuracy": val_acc[h], "val_loss": val_loss[h],
                             "test_accuracy": test_acc[h], "train_loss": train_losses[h]}
                            for h, (lr, wd) in enumerate(grid)],
               "epochs": cfg.epochs, "num_fit": len(fit_idx), "num_val": len(val_idx), "num_test": len(test_labels),
               "test_views": test_tokens.shape[1], "selection": cfg.selection, "num_heads": cfg.num_heads,
               "blocks": cfg.self_attn_depth + 1}
    return ProbeResult(test_acc[chosen], selection_score=val_acc[chosen], details=details)
