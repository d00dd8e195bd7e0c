"""The one training loop, for every method. A method is an objective object (salt.objectives); this file
owns everything else: data order, masks, schedules, optimiser, precision, compute accounting, checkpoints, logs.

Data order, masks and schedules are pure functions of (seed, step): resuming from a checkpoint at step s
computes exactly what the uninterrupted run computed from step s on. Under several processes
(salt.train.distributed) each rank computes its shard of the same global step; rank 0 alone writes files.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from salt.checkpoint import (Checkpoint, RunSummary, finish_run, load_latest, load_matching, save_checkpoint,
                             write_run_config)
from salt.config import to_dict
from salt.data import DATA_COUNTERS, build_dataset, collate, step_sampler
from salt.data.sampler import batch_for_step, mix_seed
from salt.errors import UserError
from salt.flops import num_params, total_flops
from salt.identity import run_id   # a command-line run's folder name (and its checkpoints' run_id)
from salt.masks import build_mask_generator
from salt.layout import RunLayout
from salt.objectives import Objective, build_objective, get_method
from salt.runlock import hold as hold_run
from salt.schedules import cosine, warmup_cosine
from salt.schema import RunConfig
from salt.train.distributed import DistributedContext, ShardedBatchSampler
from salt.train.metrics import MetricsLog, StepTimer, WandbLogger
from salt.train.watch import WATCH_SEED, CollapseWatch

MASK_STREAM = 1   # keeps the mask RNG stream apart from the data stream that shares the run seed


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite: the run stops, its last checkpoint stays good."""


class SavedOnRequest(Exception):
    """`fit` stopped after writing the checkpoint `Trainer.request_save` asked for; `step` is the step the run
    resumes from."""

    def __init__(self, step: int):
        super().__init__(f"saved on request: the run resumes from step {step}")
        self.step = step


class RunFolderInUseError(UserError, RuntimeError):
    """The run folder has checkpoints and the run was not asked to resume them."""


class DeviceUnavailableError(UserError, RuntimeError):
    """train.device asks for a device this machine does not have."""


# callback(trainer, step, record): called after each logged step with the record written to metrics.jsonl. It
# may raise to stop training (the run stays resumable). It runs on every rank; one that stops must decide alike.
Callback = Callable[["Trainer", int, dict], None]
# checkpoint hook(trainer, step): called on rank 0 after the checkpoint of `step` was written (e.g. periodic
# evaluation, salt.eval.periodic). It must not touch the global RNG, so that resuming stays exact.
CheckpointHook = Callable[["Trainer", int], None]


def run_layout(cfg: RunConfig) -> RunLayout:
    return RunLayout.of(cfg.out_dir, run_id(cfg))


def run_dir_for(cfg: RunConfig) -> Path:
    return run_layout(cfg).root


def resolve_device(train_cfg) -> tuple[torch.device, torch.dtype | None]:
    """-> (device, autocast dtype or None). bf16 autocast on CUDA by default; fp32 on CPU."""
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("train.device=cuda but CUDA is not available (train.device=auto uses it "
                                     "when there is one)")
    use_cuda = train_cfg.device == "cuda" or (train_cfg.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if train_cfg.precision == "bf16" or (train_cfg.precision == "auto" and use_cuda):
        return device, torch.bfloat16
    return device, None


def build_optimizer(objective: Objective, optim_cfg) -> torch.optim.AdamW:
    """AdamW; biases, norm weights and mask tokens get no weight decay (as in V-JEPA/MAE)."""
    decay, no_decay = [], []
    for module in objective.trainable().values():
        for name, p in module.named_parameters():
            (no_decay if p.ndim < 2 or "mask_tokens" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay, "decayed": True},
              {"params": no_decay, "weight_decay": 0.0, "decayed": False}]
    return torch.optim.AdamW(groups, lr=optim_cfg.start_lr, betas=tuple(optim_cfg.betas))


def set_schedules(optimizer, optim_cfg, step: int, total_steps: int) -> tuple[float, float]:
    lr = warmup_cosine(step, total_steps, start=optim_cfg.start_lr, peak=optim_cfg.lr, final=optim_cfg.final_lr,
                       warmup=optim_cfg.warmup_steps)
    wd = cosine(step, total_steps, start=optim_cfg.weight_decay, final=optim_cfg.final_weight_decay)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if group["decayed"]:
            group["weight_decay"] = wd
    return lr, wd


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """`next_step` is the step the next `step()` call runs; whenever `in_step` is False the models, optimiser
    and counters are exactly those of a run about to compute `next_step` (what a checkpoint at it holds). A
    signal asks for a checkpoint through `request_save` (`save_on_signal`), written at the next step boundary."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False, callbacks: Iterable[Callback] = (),
                 checkpoint_hooks: Iterable[CheckpointHook] = (), dist: DistributedContext | None = None):
        if not get_method(cfg.objective.method).trains:
            raise ValueError(f"objective.method={cfg.objective.method} is not trained here (an encoder made elsewhere, "
                             "e.g. by import-encoder): train a student of it with objective.teacher_checkpoint")
        self.cfg, self.layout = cfg, run_layout(cfg)
        self.run_dir, self.callbacks, self.checkpoint_hooks = self.layout.root, list(callbacks), list(checkpoint_hooks)
        if cfg.train.eval_every and not self.checkpoint_hooks:
            raise ValueError(f"train.eval_every={cfg.train.eval_every} needs an evaluation hook: pass "
                             "checkpoint_hooks=salt.eval.periodic.evaluation_hooks(cfg) (python -m salt and study "
                             "jobs do)")
        self.device, self.amp_dtype = resolve_device(cfg.train)
        self.dist = dist or DistributedContext.from_env(self.device.type)
        local = self.dist.local_batch_size(cfg.train.batch_size)   # a clear error if the processes cannot share it
        if local % cfg.train.accumulate:
            raise ValueError(f"train.accumulate={cfg.train.accumulate} does not divide the {local} clips each of the "
                             f"{self.dist.world_size} processes runs per step (train.batch_size={cfg.train.batch_size})")
        self.device = self.dist.device(self.device)
        torch.manual_seed(cfg.train.seed)   # model initialisation
        self.dataset, self.geometry = build_dataset(cfg.data, "train")
        self.objective = build_objective(cfg, self.geometry).to(self.device)
        if cfg.train.compile:   # block by block: one compiled graph serves every block of a size, any sequence length
            for module in self.objective.trainable().values():
                for block in getattr(module, "blocks", ()):
                    block.compile(dynamic=True)
        self.masks = build_mask_generator(cfg.mask, self.objective.encoder.grid)
        self.start_step, self.flops = 0, 0.0
        self.data_counts = dict.fromkeys(DATA_COUNTERS, 0)   # unreadable files skipped, decodes that could not seek
        existing = self.layout.latest_checkpoint()
        if existing is not None and not resume:
            raise RunFolderInUseError(f"run folder {self.run_dir} already has checkpoints: pass --resume to continue "
                                      "it, or choose another name/out_dir (finished results are never overwritten)")
        self.watch = self._collapse_watch() if cfg.train.watch_every else None   # decodes clips: after the check
        found = load_latest(self.run_dir) if existing is not None else None   # an unreadable newest is set aside
        state = Checkpoint.from_dict(found[1], f"checkpoint {found[0]}") if found is not None else None
        if state is not None:
            self._restore(state)   # the modules whole, before any sharding
        self.dist.check_same(self.start_step, "the step to resume from")
        self.dist.broadcast_modules(self.objective.saved())
        self.sharded = cfg.train.shard == "fsdp" and self.dist.enabled
        if self.sharded:   # each rank keeps its slice of the (now identical) weights
            self.dist.shard_modules(self.objective.saved(), param_dtype=self.amp_dtype)
        self.optimizer = build_optimizer(self.objective, cfg.optim)   # over the parameters as sharded
        if state is not None:
            self.optimizer.load_state_dict(self.dist.shard_optimizer_state(self.optimizer, state.optimizer))
        self.params = [p for m in self.objective.trainable().values() for p in m.parameters()]
        self.next_step, self.in_step = self.start_step, False
        self.save_requested = False   # request_save(): a checkpoint at the next step boundary, then SavedOnRequest
        self.objective.train()

    def masks_for_step(self, step: int, batch_size: int) -> list:
        """The (context, target) pairs of step `step` (on the CPU): a pure function of (seed, step)."""
        rng = torch.Generator().manual_seed(mix_seed(self.cfg.train.seed, MASK_STREAM, step))
        return self.masks(batch_size, rng)

    # -- one step, top to bottom ---------------------------------------------------------------------------
    def step(self, step: int, batch: dict) -> dict[str, float]:
        """`batch` holds this rank's samples of step `step`'s global batch (all of it for one process), run as
        `train.accumulate` micro-batches whose gradients add up to the gradient of the global batch's mean loss
        (a mean over its clips, or with padded masks over its valid target tokens)."""
        cfg, self.in_step = self.cfg, True
        k = cfg.train.accumulate
        n = batch["video"].shape[0]
        # Masks are drawn for the global batch (the same on every rank); each rank keeps its samples' rows. Padded
        # rows: each micro-batch divides its loss by the global batch's valid target tokens (spread_over), so the
        # step weighs every token alike however the batch is split over processes and micro-batches.
        pairs = [p.spread_over(k * self.dist.world_size).map(self.dist.shard)
                 for p in self.masks_for_step(step, n * self.dist.world_size)]
        lr, wd = set_schedules(self.optimizer, cfg.optim, step, cfg.train.steps)
        autocast = self._autocast()
        self.optimizer.zero_grad(set_to_none=True)
        totals, flops = {}, 0.0
        for rows in (slice(i * n // k, (i + 1) * n // k) for i in range(k)):
            micro = _to_device({key: v[rows] if torch.is_tensor(v) else v for key, v in batch.items()}, self.device)
            micro["masks"] = [p.map(lambda t: t[rows]).trimmed().to(self.device) for p in pairs]
            with autocast:
                out = self.objective.loss(micro, step)
            (out["loss"] / k).backward()
            totals = {name: totals.get(name, 0) + value.detach() for name, value in out.items()}
            flops += total_flops(self.objective.costs(micro), cfg.train.count_attention_flops)
        # logged values: means over micro-batches and ranks (so all ranks see the same loss)
        metrics = self.dist.mean({name: value / k for name, value in totals.items()})
        if not math.isfinite(metrics["loss"]):   # before the optimiser step: the weights stay those of step - 1
            raise NonFiniteLossError(f"loss is {metrics['loss']} at step {step}; stopping. The last good checkpoint "
                                     f"is {self.layout.latest_checkpoint()} (resume with a lower optim.lr?)")
        self.dist.average_gradients(self.params)   # -> the gradient of the global batch, on every rank
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip or float("inf"))
        self.optimizer.step()
        # Costs are linear in the batch: world_size x this rank's costs = the global batch's.
        self.flops += self.dist.world_size * flops
        for key in DATA_COUNTERS:
            self.data_counts[key] += self.dist.sum(batch[key].sum() if key in batch else 0, self.device)
        metrics.update(lr=lr, weight_decay=wd, grad_norm=float(grad_norm))
        self.objective.after_step(step, metrics)
        self.next_step = step + 1
        self.in_step = False   # only now does the state correspond to next_step
        return metrics

    def fit(self) -> dict:
        cfg, main = self.cfg, self.dist.is_main
        if self.layout.is_done():
            return self.layout.read_done()
        if main:
            write_run_config(self.layout, to_dict(cfg))
        log = MetricsLog(self.layout.metrics, self.start_step) if main else None
        wandb = (WandbLogger(cfg.wandb, run_dir=self.run_dir, run_id=run_id(cfg), config=to_dict(cfg),
                             resume=self.start_step > 0) if cfg.wandb.enabled and main else None)
        sampler = step_sampler(cfg.data, self.dataset, cfg.train.batch_size, cfg.train.seed, self.start_step,
                               cfg.train.steps)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=ShardedBatchSampler(sampler, self.dist),
                                             num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                                             collate_fn=collate,
                                             # its own generator: the workers' base seed is not drawn from the
                                             # global RNG, whose saved state then matches an uninterrupted run's
                                             generator=torch.Generator().manual_seed(cfg.train.seed))
        timer = StepTimer(cfg.data.num_workers)   # data_s / step_s: waiting for batches vs computing steps
        bar = tqdm(total=cfg.train.steps, initial=self.start_step, disable=not (cfg.train.progress and main),
                   desc=f"{cfg.objective.method} {run_id(cfg)}", dynamic_ncols=True)
        t0, metrics = time.perf_counter(), {}
        try:
            for step, batch in zip(range(self.start_step, cfg.train.steps), timer.batches(loader)):
                with timer.step():
                    metrics = self.step(step, batch)
                last = step + 1 == cfg.train.steps
                watched = self.watch is not None and (step % cfg.train.watch_every == 0 or last)
                if watched:   # the collapse alarm's measurement, logged with this step
                    metrics.update(self.watch.measure(self._probed(), self.dist, self._autocast()))
                if step % cfg.train.log_every == 0 or last or watched:
                    record = {"step": step, **metrics, "flops": self.flops, **self.data_counts, **timer.window(),
                              "elapsed_s": time.perf_counter() - t0}
                    if log:
                        log.write(record)
                    if wandb:
                        wandb.log(record, step)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", flops=f"{self.flops:.2e}")
                    for callback in self.callbacks:
                        callback(self, step, record)
                bar.update(1)
                if watched:   # warns, or stops before this step's checkpoint (train.collapse_stop)
                    self.watch.check(step, metrics)
                evaluate_now = cfg.train.eval_every and ((step + 1) % cfg.train.eval_every == 0 or last)
                requested = self.dist.any(self.save_requested)   # one flag all-reduce per step (several ranks)
                if (step + 1) % cfg.train.checkpoint_every == 0 or last or evaluate_now or requested:
                    self.dist.check_in_sync(self.objective.saved())
                    if self.save(step + 1) is not None:   # rank 0
                        for hook in self.checkpoint_hooks:
                            hook(self, step + 1)
                if requested and not last:
                    self.dist.barrier()   # rank 0's checkpoint is written before any rank reports it
                    raise SavedOnRequest(step + 1)
        finally:
            bar.close()
            if log:
                log.close()
            if wandb:
                wandb.close()
        self.dist.barrier()   # rank 0's checkpoints are written before any rank reports them
        summary = self._summary(metrics, time.perf_counter() - t0)
        return finish_run(self.layout, summary) if main else summary.to_dict()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    # -- the collapse alarm (salt.train.watch) ---------------------------------------------------------------
    def _collapse_watch(self) -> CollapseWatch:
        """The watched clips: train.watch_clips fixed clips of the training data (at least one per process; each
        process keeps its share), on the device."""
        t = self.cfg.train
        clips = -(-max(t.watch_clips, self.dist.world_size) // self.dist.world_size) * self.dist.world_size
        items = batch_for_step(len(self.dataset), min(clips, len(self.dataset)), WATCH_SEED, 0)
        video = collate([self.dataset[item] for item in self.dist.shard(items)])["video"]
        return CollapseWatch(video.to(self.device), t.collapse_floor, t.collapse_fraction, t.collapse_stop,
                             after=round(t.collapse_after * t.steps))

    def _probed(self) -> torch.nn.Module:
        """The network evaluations probe (the registry's `probed`: the online encoder, V-JEPA's included)."""
        return getattr(self.objective, get_method(self.cfg.objective.method).probed)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def request_save(self) -> None:
        """Ask for a checkpoint at the end of the step under way: `fit` saves it (all ranks agree through one
        all-reduce of the flag; sharded runs save collectively) and raises SavedOnRequest. Only sets a flag, so a
        signal handler may call it (`save_on_signal`)."""
        self.save_requested = True

    @contextlib.contextmanager
    def save_on_signal(self, signum: int):
        """While inside: signal `signum` (e.g. SLURM's preemption / timeout warning) only calls `request_save`;
        yields the handler it replaced, which the caller runs once SavedOnRequest says the checkpoint is written
        (submitit's: requeue the job). Main thread only (Python's rule for signal handlers)."""
        previous = signal.signal(signum, lambda *_: self.request_save())
        try:
            yield previous
        finally:
            signal.signal(signum, previous)

    def save(self, next_step: int) -> Path | None:
        """Write the checkpoint of the state about to compute `next_step` (rank 0 only; None on other ranks).
        Sharded: every rank must call it (the whole tensors are gathered to rank 0; same format as unsharded)."""
        models = {name: self.dist.full_state(m.state_dict()) for name, m in self.objective.saved().items()}
        optimizer = self.dist.full_state(self.optimizer.state_dict())
        if not self.dist.is_main:
            return None
        checkpoint = Checkpoint(
            step=next_step, run_id=run_id(self.cfg), config=to_dict(self.cfg), models=models, optimizer=optimizer,
            flops=self.flops, flops_total=self.flops + self.objective.upstream_flops,   # + its teacher chain
            data_counts=dict(self.data_counts), rng={"torch": torch.get_rng_state()},
            # Data order and masks are pure functions of (seed, step): their whole state is this.
            data={"seed": self.cfg.train.seed, "next_step": next_step},
            masks={"seed": self.cfg.train.seed, "stream": MASK_STREAM, "next_step": next_step},
            watch=self.watch.state_dict() if self.watch is not None else None)
        return save_checkpoint(self.run_dir, checkpoint, keep=self.cfg.train.keep_checkpoints)

    def _restore(self, state: Checkpoint) -> None:
        if state.optimizer is None or state.rng is None:
            raise RunFolderInUseError(f"{self.run_dir}: its checkpoint of step {state.step} holds no training state "
                                      "to resume (an imported encoder); choose another name/out_dir")
        saved = self.objective.saved()
        for name, module in saved.items():
            load_matching(module, state.models[name], f"resume {self.run_dir} ({name})")
        torch.set_rng_state(state.rng["torch"])
        self.start_step, self.flops = state.step, state.flops
        if self.watch is not None and state.watch is not None:   # (checkpoints from before the collapse alarm)
            self.watch.load_state_dict(state.watch)
        # (a counter added after the checkpoint was written starts at 0)
        self.data_counts = {key: state.data_counts[key] if key in state.data_counts else 0 for key in DATA_COUNTERS}

    def _summary(self, metrics: dict, wall_time: float) -> RunSummary:
        o = self.cfg.objective
        teacher_flops = self.objective.upstream_flops
        return RunSummary(
            run_id=run_id(self.cfg), method=o.method, steps=self.cfg.train.steps, final_metrics=metrics,
            flops={"run": self.flops, "teacher_stage": teacher_flops, "total": self.flops + teacher_flops},
            params={name: num_params(m) for name, m in self.objective.saved().items()},
            data_counts=dict(self.data_counts), wall_time_s=wall_time, device=str(self.device),
            checkpoint=str(self.layout.latest_checkpoint()),
            teacher_checkpoint=o.teacher_checkpoint if get_method(o.method).needs_teacher else "")


def train(cfg: RunConfig, *, resume: bool = False, callbacks: Iterable[Callback] = (),
          checkpoint_hooks: Iterable[CheckpointHook] = (), dist: DistributedContext | None = None,
          lock_wait_s: float = 0.0) -> dict:
    """Train one run to completion (or return its summary if it is already done). Without `dist`, the processes
    come from the environment (salt.train.distributed); a process group started here is closed here. The run
    folder's lock (salt.runlock) is held throughout: another job training or evaluating the run makes this wait
    up to `lock_wait_s`, then fail with RunLockedError naming that job."""
    layout = run_layout(cfg)
    if layout.is_done():
        return layout.read_done()
    context = dist or DistributedContext.from_env(resolve_device(cfg.train)[0].type)
    try:
        with hold_run(layout.root, "train", wait_s=lock_wait_s, dist=context):   # rank 0 locks for every rank
            return Trainer(cfg, resume=resume, callbacks=callbacks, checkpoint_hooks=checkpoint_hooks,
                           dist=context).fit()
    finally:
        if dist is None:
            context.close()
