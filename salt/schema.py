"""The run config: every knob of a teacher, student or V-JEPA run, typed, with the embedded default.

Loaded through `salt.config.load_config(RunConfig, files, overrides)`; YAML presets live in salt/configs/.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from salt.config import load_config
from salt.data import items_per_step, source_names
from salt.data.moving_digits import MovingDigitsConfig
from salt.data.video.lists import VideoListConfig
from salt.identity import ALWAYS, NEVER, SCHEDULING, SCHEDULING_UNLESS_DEFAULT, UNLESS_DEFAULT
from salt.layout import LayoutError, RunLayout
from salt.masks import MaskConfig
from salt.objectives.registry import get_method


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class DataConfig:
    source: str = field(default="moving_digits", metadata=ALWAYS)   # a registered source (salt.data.sources)
    moving_digits: MovingDigitsConfig = field(default_factory=MovingDigitsConfig, metadata=ALWAYS)
    video: VideoListConfig = field(default_factory=VideoListConfig, metadata=ALWAYS)
    num_workers: int = field(default=0, metadata=SCHEDULING)

    def __post_init__(self):
        _check_choice("source", self.source, source_names())
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass
class ModelConfig:
    # a preset of salt.models.vit.SIZE_PRESETS, or custom (the fields below)
    size: str = field(default="tiny", metadata=ALWAYS)
    patch_size: int = field(default=4, metadata=ALWAYS)
    tubelet_size: int = field(default=2, metadata=ALWAYS)
    init: str = field(default="xavier", metadata=ALWAYS)   # xavier (MAE) | trunc_normal (V-JEPA)
    # sincos (fixed, added) | rope (3D rotary in attention, the paper's) | sincos_1d (VideoMAE's fixed table over the
    # token index)
    pos_embed: str = field(default="sincos", metadata=ALWAYS)
    # What a released encoder needs (salt.importers; VideoViT documents each); the defaults are this project's.
    embed_dim: int = field(default=0, metadata=UNLESS_DEFAULT)    # size=custom: width, depth, heads, MLP ratio
    depth: int = field(default=0, metadata=UNLESS_DEFAULT)
    num_heads: int = field(default=0, metadata=UNLESS_DEFAULT)
    mlp_ratio: float = field(default=4.0, metadata=UNLESS_DEFAULT)
    norm_eps: float = field(default=1e-6, metadata=UNLESS_DEFAULT)
    final_norm: bool = field(default=True, metadata=UNLESS_DEFAULT)
    rope_layout: str = field(default="salt", metadata=UNLESS_DEFAULT)   # salt | vjepa2
    rope_key_bias: bool = field(default=False, metadata=UNLESS_DEFAULT)
    pos_grid: list[int] = field(default_factory=list, metadata=UNLESS_DEFAULT)   # [T, H, W] the table was made for
    input_mean: list[float] = field(default_factory=list, metadata=UNLESS_DEFAULT)   # per channel; [] = no input norm
    input_std: list[float] = field(default_factory=list, metadata=UNLESS_DEFAULT)
    # recompute each trained block's activations in backward instead of keeping them (same result, ~1/3 more compute)
    activation_checkpointing: bool = field(default=False, metadata=SCHEDULING_UNLESS_DEFAULT)

    def __post_init__(self):
        from salt.models.tokens import POSITION_KINDS, ROPE_LAYOUTS
        from salt.models.vit import CUSTOM_SIZE, SIZE_PRESETS
        _check_choice("size", self.size, (*SIZE_PRESETS, CUSTOM_SIZE))
        _check_choice("init", self.init, ("xavier", "trunc_normal"))
        _check_choice("pos_embed", self.pos_embed, POSITION_KINDS)
        _check_choice("rope_layout", self.rope_layout, ROPE_LAYOUTS)
        if self.patch_size < 1 or self.tubelet_size < 1:
            raise ValueError("patch_size and tubelet_size must be >= 1")
        custom = (self.embed_dim, self.depth, self.num_heads)
        if (self.size == CUSTOM_SIZE) != all(v > 0 for v in custom) or (self.size != CUSTOM_SIZE and any(custom)):
            raise ValueError(f"embed_dim, depth and num_heads (got {custom}) are given exactly when size={CUSTOM_SIZE}"
                             f" (got size={self.size!r})")
        if self.size != CUSTOM_SIZE and self.mlp_ratio != 4.0:
            raise ValueError(f"mlp_ratio is a size=custom field; size {self.size!r} has its own")
        if self.mlp_ratio <= 0 or self.norm_eps <= 0:
            raise ValueError(f"mlp_ratio and norm_eps must be > 0, got {self.mlp_ratio}, {self.norm_eps}")
        if self.pos_grid and (len(self.pos_grid) != 3 or min(self.pos_grid) < 1):
            raise ValueError(f"pos_grid must be [T, H, W] of positive ints or empty, got {self.pos_grid}")
        if len(self.input_mean) != len(self.input_std) or min(self.input_std, default=1.0) <= 0:
            raise ValueError(f"input_mean and input_std need one value per channel each (std > 0), got "
                             f"{self.input_mean} and {self.input_std}")


@dataclass
class PredictorConfig:
    """SALT/V-JEPA predictor, or the pixel teacher's decoder (paper predictor: 384 wide, 12 deep, 16 heads)."""
    embed_dim: int = field(default=64, metadata=ALWAYS)
    depth: int = field(default=2, metadata=ALWAYS)
    num_heads: int = field(default=4, metadata=ALWAYS)
    mlp_ratio: float = field(default=4.0, metadata=ALWAYS)


@dataclass
class ObjectiveConfig:
    # a registered method (salt.objectives.registry): pixel (stage-1 teacher) | salt (stage-2 student) | vjepa (EMA
    # baseline) | ...
    method: str = field(default="pixel", metadata=ALWAYS)
    # pixel: VideoMAE per-tubelet, per-channel normalised targets
    normalize_targets: bool = field(default=True, metadata=ALWAYS)
    loss: str = field(default="l1", metadata=ALWAYS)   # salt/vjepa: l1 (paper) | l2
    # salt/vjepa: -1 = final output (after the encoder's norm); k = block k
    target_layer: int = field(default=-1, metadata=ALWAYS)
    # salt/vjepa: LayerNorm without affine on targets (V-JEPA's code)
    target_layernorm: bool = field(default=True, metadata=ALWAYS)
    # methods with a frozen teacher (salt): a checkpoint of any earlier run
    teacher_checkpoint: str = field(default="", metadata=ALWAYS)
    # ... and its architecture, checked against the file
    teacher: ModelConfig = field(default_factory=ModelConfig, metadata=ALWAYS)
    # vjepa: linear start -> end
    ema_momentum: list[float] = field(default_factory=lambda: [0.998, 1.0], metadata=ALWAYS)
    # salt: steps between checks that the frozen teacher is unchanged
    teacher_check_every: int = field(default=100, metadata=ALWAYS)
    # pixel: warn when loss / mean-prediction loss stays above this ...
    plateau_ratio: float = field(default=0.95, metadata=ALWAYS)
    plateau_after: int = field(default=200, metadata=ALWAYS)   # ... after this many steps

    def __post_init__(self):
        get_method(self.method)   # unknown: an error listing the registered methods
        _check_choice("loss", self.loss, ("l1", "l2"))
        if len(self.ema_momentum) != 2 or not all(0.0 <= m <= 1.0 for m in self.ema_momentum):
            raise ValueError(f"ema_momentum must be [start, end] in [0, 1], got {self.ema_momentum}")


@dataclass
class OptimConfig:
    """AdamW; LR: linear warmup start_lr -> lr, then cosine -> final_lr; weight decay: cosine wd -> final_wd."""
    lr: float = field(default=1e-3, metadata=ALWAYS)
    start_lr: float = field(default=1e-4, metadata=ALWAYS)
    final_lr: float = field(default=1e-5, metadata=ALWAYS)
    warmup_steps: int = field(default=50, metadata=ALWAYS)
    weight_decay: float = field(default=0.04, metadata=ALWAYS)
    final_weight_decay: float = field(default=0.04, metadata=ALWAYS)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata=ALWAYS)
    grad_clip: float = field(default=1.0, metadata=ALWAYS)   # max grad norm; 0 disables

    def __post_init__(self):
        if len(self.betas) != 2:
            raise ValueError(f"betas must be [beta1, beta2], got {self.betas}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError("warmup_steps must be >= 0 and lr > 0")


@dataclass
class TrainConfig:
    steps: int = field(default=300, metadata=ALWAYS)
    # clips per optimizer step, over all processes and micro-batches
    batch_size: int = field(default=32, metadata=ALWAYS)
    # micro-batches per optimizer step (gradient accumulation): each process runs batch_size / (processes x
    # accumulate) clips at a time; schedules, masks, EMA, FLOPs and checkpoints stay per optimizer step
    accumulate: int = field(default=1, metadata=SCHEDULING_UNLESS_DEFAULT)
    seed: int = field(default=0, metadata=ALWAYS)
    device: str = field(default="auto", metadata=SCHEDULING)   # auto | cpu | cuda
    precision: str = field(default="auto", metadata=ALWAYS)   # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    log_every: int = field(default=10, metadata=SCHEDULING)
    checkpoint_every: int = field(default=100, metadata=SCHEDULING)
    keep_checkpoints: int = field(default=2, metadata=SCHEDULING)
    # >0: evaluate (salt.eval.evaluate) every this many steps and at the end
    eval_every: int = field(default=0, metadata=SCHEDULING)
    # the protocol of those evaluations: smoke | fast | systematic
    eval_protocol: str = field(default="smoke", metadata=SCHEDULING)
    # False: the paper's 6ND/2ND accounting; True: add attention's 4*n^2*d
    count_attention_flops: bool = field(default=False, metadata=ALWAYS)
    progress: bool = field(default=True, metadata=SCHEDULING)
    # torch.compile each transformer block of the trained networks (in place: checkpoints keep their keys)
    compile: bool = field(default=False, metadata=SCHEDULING_UNLESS_DEFAULT)
    # none: every process holds all weights (gradients all-reduced) | fsdp: the trained networks (and V-JEPA's EMA
    # target) sharded over the processes with FSDP2, block by block (salt.train.distributed); same math either way
    shard: str = field(default="none", metadata=SCHEDULING_UNLESS_DEFAULT)
    # collapse alarm (salt.train.watch): every watch_every steps (0: never), RankMe of the encoder on watch_clips
    # fixed clips, logged; CollapseWarning (CollapseError with collapse_stop) below collapse_floor, or, after
    # collapse_after of the run, below collapse_fraction of the run's highest value. It computes nothing the run
    # trains on. Defaults calibrated on healthy and collapsing tiny runs (benchmarks/collapse_watch.py).
    watch_every: int = field(default=100, metadata=SCHEDULING_UNLESS_DEFAULT)
    watch_clips: int = field(default=32, metadata=SCHEDULING_UNLESS_DEFAULT)
    collapse_floor: float = field(default=1.0, metadata=SCHEDULING_UNLESS_DEFAULT)
    collapse_fraction: float = field(default=0.7, metadata=SCHEDULING_UNLESS_DEFAULT)
    collapse_after: float = field(default=0.5, metadata=SCHEDULING_UNLESS_DEFAULT)
    collapse_stop: bool = field(default=False, metadata=SCHEDULING_UNLESS_DEFAULT)

    def __post_init__(self):
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        if (self.watch_every < 0 or self.watch_clips < 2 or not 0 <= self.collapse_fraction < 1
                or not 0 <= self.collapse_after <= 1):
            raise ValueError(f"watch_every must be >= 0, watch_clips >= 2, collapse_fraction in [0, 1) and "
                             f"collapse_after in [0, 1]; got {self.watch_every}, {self.watch_clips}, "
                             f"{self.collapse_fraction}, {self.collapse_after}")
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        _check_choice("eval_protocol", self.eval_protocol, ("smoke", "fast", "systematic"))
        _check_choice("shard", self.shard, ("none", "fsdp"))
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ValueError(f"accumulate must be >= 1 and divide batch_size ({self.batch_size}), got {self.accumulate}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, batch_size, checkpoint_every and keep_checkpoints must be >= 1")


@dataclass
class WandbConfig:
    enabled: bool = field(default=False, metadata=NEVER)
    project: str = field(default="salt", metadata=NEVER)
    group: str = field(default="", metadata=NEVER)
    # used when WANDB_MODE is not set: offline works without network
    mode: str = field(default="offline", metadata=NEVER)


@dataclass
class RunConfig:
    name: str = field(default="", metadata=NEVER)   # run folder name; "" -> "<method>-<hash of the resolved config>"
    out_dir: str = field(default="runs", metadata=NEVER)
    data: DataConfig = field(default_factory=DataConfig, metadata=ALWAYS)
    model: ModelConfig = field(default_factory=ModelConfig, metadata=ALWAYS)
    predictor: PredictorConfig = field(default_factory=PredictorConfig, metadata=ALWAYS)
    mask: MaskConfig = field(default_factory=MaskConfig, metadata=ALWAYS)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig, metadata=ALWAYS)
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=ALWAYS)
    train: TrainConfig = field(default_factory=TrainConfig, metadata=ALWAYS)
    wandb: WandbConfig = field(default_factory=WandbConfig, metadata=NEVER)

    def __post_init__(self):
        if get_method(self.objective.method).needs_teacher and not self.objective.teacher_checkpoint:
            raise ValueError(f"objective.teacher_checkpoint is required for method {self.objective.method!r}")
        items_per_step(self.data, self.train.batch_size)   # several clips per video must fill the batch evenly


def finished_run(run_dir: str | Path) -> tuple[RunLayout, RunConfig]:
    """A finished run folder (an imported encoder, or any earlier run) and its resolved config, placed where the
    folder is now (so a moved folder still names its own checkpoints). A folder that is not a finished run is
    refused by name: LayoutError."""
    layout = RunLayout(Path(run_dir).resolve())
    if not layout.config.is_file() or not layout.is_done():
        raise LayoutError(f"{layout.root} is not a finished run folder (needs {layout.config.name} and "
                          f"{layout.done.name}): import the encoder with `python -m salt import-encoder` or finish "
                          "the run first")
    cfg = load_config(RunConfig, [layout.config], [f"name={layout.root.name}", f"out_dir={layout.root.parent}"])
    return layout, cfg
