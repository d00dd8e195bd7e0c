"""Evaluate a run's frozen encoder (or a baseline) and write one EvalRecord per (run, checkpoint, evaluation,
benchmark).

Every evaluation measures the same things the SALT and V-JEPA papers do, without their selection bias:
label-free metrics (RankMe, LiDAR, alpha-ReQ), the held-out loss of the run's own objective on fixed clips
and masks, and probes (linear on time-pooled features, low-shot and full; k-NN; attentive). With the default
`strict` selection hyperparameters are chosen on a held-out part of the probe's training set and the test split
is scored once; `paper` selection reports the best of the grid on test, as V-JEPA 2 publishes (optimistic).

One path for every encoder and benchmark: a feature source (salt.eval.features: the default benchmark's clips
held in memory, `ProbeData`, the run's own data; or a named benchmark, salt.eval.benchmark, streamed into an
on-disk fp16 feature cache, salt.eval.cache) -> label-free metrics and probes (salt.eval.scores) -> one record
(`write_evaluation`). Protocols: salt.eval.protocol.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from salt.checkpoint import load_checkpoint, load_matching
from salt.config import from_dict
from salt.data import DATA_COUNTERS, ClipGeometry, build_dataset, get_source, label_specs
from salt.eval.benchmark import BenchmarkConfig, load_benchmark
from salt.eval.features import (PROBE_DRAW_SEED, ProbeData, benchmark_features, clip_features, pixel_features,
                                view_rows)
from salt.eval.probes import stratified_subset
from salt.eval.protocol import EvalProtocol, eval_protocol, for_benchmark
from salt.eval.record import EvalRecord, ProbeScore, read_record, write_record
from salt.eval.scores import feature_scores
from salt.identity import BASELINE_KINDS, config_hash, run_id
from salt.losslog import train_losses
from salt.masks import build_mask_generator
from salt.layout import DEFAULT_BENCHMARK, RunLayout, read_metrics
from salt.models import VideoViT
from salt.objectives import build_network, build_objective, get_method
from salt.provenance import code_version, hardware_description
from salt.runlock import hold as hold_run
from salt.schema import RunConfig

HELDOUT_MASK_SEED = 20250929   # fixed masks for held-out losses: comparable across runs and checkpoints


def resolve_benchmark(benchmark: str | BenchmarkConfig | None) -> BenchmarkConfig | None:
    """None or "default": the run's own data; a name / YAML path: a loaded benchmark; a config: checked."""
    if benchmark is None or benchmark == DEFAULT_BENCHMARK:
        return None
    if isinstance(benchmark, BenchmarkConfig):
        return benchmark.check()
    return load_benchmark(benchmark)


def benchmark_name(benchmark: BenchmarkConfig | None) -> str:
    return DEFAULT_BENCHMARK if benchmark is None else benchmark.name


def random_encoder(cfg: RunConfig, geometry: ClipGeometry, seed: int) -> VideoViT:
    """A random-init encoder of the same size and init scheme: the baseline every encoder must beat."""
    with torch.random.fork_rng(devices=[]):   # leaves the caller's RNG stream untouched
        torch.manual_seed(seed)
        return build_network(cfg.model, geometry).eval()


def clips_and_labels(dataset, rows) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clips `rows` (a count: the first ones; or indices) of a dataset as one tensor, each label as a tensor."""
    rows = range(min(rows, len(dataset))) if isinstance(rows, int) else rows
    items = [dataset[(int(i), 0)] for i in rows]
    videos = torch.stack([it["video"] for it in items])
    labels = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != "video" and k not in DATA_COUNTERS}
    return videos, labels


def load_probe_data(data_cfg, protocol: EvalProtocol) -> ProbeData:
    """The default benchmark's probe clips: stratified draws (by class, seeded: the source's `class_keys`) of the
    train and test splits. A source without labelled splits (a video list: probes need a benchmark) gives its
    clips (eval transforms, first view) to the label-free metrics only, and no probe is trained on them."""
    source = get_source(data_cfg.source)
    class_keys = source.class_keys
    test_set, _ = build_dataset(data_cfg, "test")
    if not source.labelled_splits:
        rows = stratified_subset(class_keys(test_set), protocol.metric_clips, PROBE_DRAW_SEED)
        videos, _ = clips_and_labels(test_set, rows)
        videos = videos[:, 0] if videos.dim() == 6 else videos
        return ProbeData(videos, {}, videos[:0], {}, [])
    train_set, _ = build_dataset(data_cfg, "train")
    train_rows = stratified_subset(class_keys(train_set), protocol.probe_train_clips, PROBE_DRAW_SEED)
    test_rows = stratified_subset(class_keys(test_set), protocol.probe_test_clips, PROBE_DRAW_SEED)
    train_videos, train_labels = clips_and_labels(train_set, train_rows)
    test_videos, test_labels = clips_and_labels(test_set, test_rows)
    return ProbeData(train_videos, train_labels, test_videos, test_labels, label_specs(data_cfg))


def encoder_scores(encoder: VideoViT, protocol: EvalProtocol, bench: BenchmarkConfig | None, layout: RunLayout,
                   data: ProbeData | None, data_cfg) -> tuple[dict, list[ProbeScore]]:
    """One frozen encoder's label-free metrics and probes: its features from the benchmark's source (the default
    benchmark's clips in memory, `data` or loaded from `data_cfg`; a named benchmark's cached shards under
    `layout`), then the one path from features to scores (salt.eval.scores)."""
    protocol = for_benchmark(protocol, bench)
    if bench is None:
        features = clip_features(encoder, data or load_probe_data(data_cfg, protocol), protocol)
    else:
        features = benchmark_features(encoder, bench, protocol, layout)
    return feature_scores(features, protocol)


def write_evaluation(folder: Path, protocol: EvalProtocol, bench: BenchmarkConfig | None,
                     scores: tuple[dict, list[ProbeScore]], started: float, **subject) -> EvalRecord:
    """The one place an evaluation becomes a record: what was evaluated (`subject`: run id, method, stage,
    checkpoint, evaluation name, ...), its scores, the benchmark and selection, and where and how long it ran
    (salt.provenance). Written into folder/evals/ and returned as stored (created_at filled in)."""
    metrics, probes = scores
    record = EvalRecord(**subject, code_version=code_version(), metrics=metrics, probes=probes,
                        wall_time_s=time.perf_counter() - started, hardware=hardware_description(),
                        benchmark=benchmark_name(bench), selection=protocol.selection)
    return read_record(write_record(folder, record))


def restored_objective(cfg: RunConfig, state: dict, geometry: ClipGeometry):
    """The run's objective (encoder, predictor/decoder, target network) with the checkpoint's weights."""
    objective = build_objective(cfg, geometry)
    for name, module in objective.saved().items():
        load_matching(module, state["models"][name], f"checkpoint of {state['run_id']} ({name})")
    return objective.eval()


@torch.no_grad()
def heldout_loss(objective, cfg: RunConfig, test_set, protocol: EvalProtocol) -> float:
    """The run's own objective on the first test clips with fixed masks (the same for every run and
    checkpoint), so losses are comparable along a run and across runs."""
    videos, _ = clips_and_labels(test_set, protocol.heldout_clips)
    videos, _ = view_rows(videos)   # every clip of a multi-clip test video (video lists) is a clip here
    masks = build_mask_generator(cfg.mask, objective.encoder.grid)
    losses = []
    for i, start in enumerate(range(0, len(videos), 64)):
        batch = {"video": videos[start:start + 64]}
        batch["masks"] = masks(len(batch["video"]), torch.Generator().manual_seed(HELDOUT_MASK_SEED + i))
        losses.append(float(objective.loss(batch, 0)["loss"]) * len(batch["video"]))
    return sum(losses) / len(videos)


def logged_train_losses(layout: RunLayout, step: int, steps_total: int) -> dict[str, float]:
    """losses["train"] and ["train_early"] of a checkpoint from the run's metrics log (salt.losslog.train_losses):
    the training loss itself, the paper's teacher-selection signal; none when the run kept no log."""
    return train_losses(read_metrics(layout.metrics), step, steps_total) if layout.metrics.is_file() else {}


ENCODER_CHOICES = ("default", "online", "ema")


def probed_encoder(objective, method, choice: str = "default") -> tuple[VideoViT, str]:
    """The encoder an evaluation probes and its record name: a method with an EMA copy (V-JEPA's target encoder,
    what V-JEPA's own evaluation loads) is probed through it by default ("ema"), its online encoder on request
    ("online"); other methods have their trained encoder only."""
    if choice not in ENCODER_CHOICES:
        raise ValueError(f"encoder must be one of {', '.join(ENCODER_CHOICES)}; got {choice!r}")
    if choice == "ema" and not method.ema:
        raise ValueError(f"method {method.name!r} keeps no EMA encoder: evaluate its online encoder")
    if method.ema and choice != "online":
        return getattr(objective, method.ema), "ema"
    return getattr(objective, method.probed), "online"


def evaluation_name(protocol: EvalProtocol, method, encoder: str) -> str:
    """The record's evaluation name: the protocol's, with "-online" when a method with an EMA encoder is probed
    through its online one (so both records stand side by side)."""
    return protocol.name + ("-online" if method.ema and encoder == "online" else "")


def evaluate_run(run_dir: str | Path, step: int | None = None, protocol: str | EvalProtocol = "fast",
                 data: ProbeData | None = None, *, benchmark: str | BenchmarkConfig | None = None,
                 selection: str | None = None, encoder: str = "default") -> EvalRecord:
    """Evaluate a run's checkpoint (latest if `step` is None) on a benchmark (None: the default, the run's own
    data) and write its record into run_dir/evals/. `selection` "paper" evaluates the protocol's paper-selection
    variant; `encoder` picks V-JEPA's EMA ("default", "ema") or online encoder. Bad settings fail before any
    clip is encoded. Holds the run folder's lock (salt.runlock; a training job's periodic evaluation shares its
    job's): while another job trains or evaluates the run, this fails with RunLockedError naming it."""
    with hold_run(run_dir, "evaluate", create=False):
        return _evaluate_run(Path(run_dir), step, protocol, data, benchmark, selection, encoder)


def _evaluate_run(run_dir: Path, step, protocol, data, benchmark, selection, encoder) -> EvalRecord:
    layout = RunLayout(run_dir)
    t0 = time.perf_counter()
    proto = eval_protocol(protocol, selection)
    bench = resolve_benchmark(benchmark)
    state = load_checkpoint(layout.checkpoint(step) if step is not None else run_dir)
    cfg = from_dict(RunConfig, state["config"])
    test_set, geometry = build_dataset(cfg.data, "test")
    objective = restored_objective(cfg, state, geometry)
    method = get_method(cfg.objective.method)
    probed, which = probed_encoder(objective, method, encoder)
    losses = logged_train_losses(layout, int(state["step"]), cfg.train.steps)
    scores = encoder_scores(probed, proto, bench, layout, data, cfg.data)
    if bench is None and method.trains:   # the held-out loss is the run's objective on its own data (the default
        losses["heldout"] = heldout_loss(objective, cfg, test_set, proto)   # benchmark's); an imported one has none
    teacher_run_id, teacher_step = objective.teacher_source
    return write_evaluation(
        run_dir, proto, bench, scores, t0, run_id=state["run_id"], method=method.name, stage=method.stage,
        checkpoint_step=int(state["step"]), steps_total=cfg.train.steps,
        evaluation=evaluation_name(proto, method, which), seed=cfg.train.seed, config_hash=config_hash(cfg),
        model_size=cfg.model.size, params={"encoder": sum(p.numel() for p in probed.parameters())},
        teacher_run_id=teacher_run_id, teacher_step=teacher_step,
        flops_teacher_stage=float(state["flops_total"]) - float(state["flops"]), flops_run=float(state["flops"]),
        flops_total=float(state["flops_total"]), losses=losses, encoder=which)


def evaluate_baseline(kind: str, cfg: RunConfig, out_dir: str | Path, protocol: str | EvalProtocol = "fast",
                      data: ProbeData | None = None, *, benchmark: str | BenchmarkConfig | None = None,
                      selection: str | None = None) -> EvalRecord:
    """Random-init encoder of cfg.model's size, or raw pixels, on cfg.data (or a named benchmark: random init
    only): evaluated once per (data, model, protocol, benchmark) and reused from out_dir/baselines/ afterwards
    (written under the baseline folder's lock, salt.runlock)."""
    if kind not in BASELINE_KINDS:
        raise ValueError(f"baseline must be one of {', '.join(BASELINE_KINDS)}, got {kind!r}")
    layout = RunLayout.baseline(out_dir, run_id(cfg, kind))   # one per data (and model): salt.identity
    with hold_run(layout.root, "evaluate baseline"):
        return _evaluate_baseline(kind, cfg, layout, protocol, data, benchmark, selection)


def _evaluate_baseline(kind: str, cfg: RunConfig, layout: RunLayout, protocol, data, benchmark,
                       selection) -> EvalRecord:
    proto = eval_protocol(protocol, selection)
    bench = resolve_benchmark(benchmark)
    if bench is not None and kind == "raw_pixels":
        raise ValueError(f"the raw-pixel baseline is evaluated on the default benchmark only, not on {bench.name!r}")
    path = layout.record(0, proto.name, benchmark_name(bench))
    if path.exists():
        return read_record(path)
    t0 = time.perf_counter()
    if kind == "raw_pixels":
        scores = feature_scores(pixel_features(data or load_probe_data(cfg.data, proto)), proto)
        params = {}
    else:
        _, geometry = build_dataset(cfg.data, "test")
        encoder = random_encoder(cfg, geometry, seed=cfg.train.seed)
        scores = encoder_scores(encoder, proto, bench, layout, data, cfg.data)
        params = {"encoder": sum(p.numel() for p in encoder.parameters())}
    return write_evaluation(layout.root, proto, bench, scores, t0, run_id=layout.root.name, method=kind,
                            stage="baseline", checkpoint_step=0, steps_total=0, evaluation=proto.name,
                            seed=cfg.train.seed, model_size=cfg.model.size if kind == "random_init" else "",
                            params=params, encoder="")
