"""What one study job runs: train a run to completion (resuming from its last checkpoint), then write its
evaluation records. The same callable runs under every submitit executor (debug, local, SLURM).

`train_resumable` is how every job trains a run, a study's `RunJob` and an HPO trial (salt.study.hpo) alike. On
SLURM, a timeout or preemption signal during training asks the run for a checkpoint at the end of the step under
way (all ranks agree, sharded runs save collectively: `Trainer.save_on_signal`); then submitit calls the job's
`checkpoint()` and requeues it as a fresh job that resumes from that step. Every start is logged in
RUN_DIR/attempts.jsonl (job id, the step it started from). The job holds the run folder's lock (salt.runlock)
while it trains and evaluates.
"""
from __future__ import annotations

import json
import os
import socket
import time

import submitit

from salt.io import append_line
from salt.study.spec import RunSpec

REQUEUE_WAIT_S = 300.0   # how long ranks other than 0 wait, after a checkpoint on request, for the requeue to end them
LOCK_WAIT_S = 120.0   # how long a job waits for another job of the same run (salt.runlock) before it fails


def _benchmarks(spec: RunSpec) -> list:
    from salt.config import from_dict
    from salt.eval.benchmark import BenchmarkConfig
    return [from_dict(BenchmarkConfig, b).check() for b in spec.benchmarks]


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:   # not inside a submitit job (called directly)
        return ""


def train_resumable(cfg, dist, callbacks=()) -> dict:
    """Train `cfg`'s run to its end from its last checkpoint, as every study job trains (a study's `RunJob`, an HPO
    trial: salt.study.hpo); the caller holds the run folder's lock. A finished run returns its summary. Each start
    is logged in RUN_DIR/attempts.jsonl (rank 0); `callbacks` see every logged step (salt.train.loop.Callback)."""
    from salt.eval.periodic import evaluation_hooks
    from salt.train.loop import Trainer, run_layout
    layout = run_layout(cfg)
    if layout.is_done():
        return layout.read_done()
    trainer = Trainer(cfg, resume=True, callbacks=callbacks, checkpoint_hooks=evaluation_hooks(cfg), dist=dist)
    if dist.is_main:
        _log_attempt(layout, trainer.start_step)
    return _fit(trainer)


def _log_attempt(layout, start_step: int) -> None:
    entry = {"job_id": _job_id(), "start_step": start_step, "host": socket.gethostname(), "pid": os.getpid(),
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    layout.root.mkdir(parents=True, exist_ok=True)
    append_line(layout.attempts, json.dumps(entry))   # one short line per start, whole or not at all


def _fit(trainer) -> dict:
    """Train. SLURM's timeout / preemption signal only asks for a checkpoint at the end of the step under way
    (every rank agrees; a sharded run saves collectively); once it is written, submitit's own handler runs (on
    rank 0: the job's `checkpoint`, then the requeue and exit). The other ranks wait for the requeue to end them."""
    from salt.train.loop import SavedOnRequest
    signum = submitit.JobEnvironment._usr_sig()   # the signal submitit handles (SUBMITIT_PREEMPT_SIGNAL)
    saved = None
    with trainer.save_on_signal(signum) as submitit_handler:
        try:
            summary = trainer.fit()
        except SavedOnRequest as e:
            saved = e
    if saved is None and not trainer.save_requested:
        return summary
    if not callable(submitit_handler):   # not inside a submitit job: nobody to requeue it
        raise saved or SavedOnRequest(trainer.next_step)
    submitit_handler(signum, None)   # rank 0: requeue, then exit
    time.sleep(REQUEUE_WAIT_S)
    raise RuntimeError(f"the job was not requeued within {REQUEUE_WAIT_S:g} s of its checkpoint at step "
                       f"{trainer.next_step}; rerun the study to resume it")


class RunJob(submitit.helpers.Checkpointable):
    def __init__(self, spec: dict, threads: int = 0):
        self.spec, self.threads = spec, threads   # plain JSON-able data: pickles across versions and hosts

    def __call__(self) -> dict:
        import torch
        if self.threads:
            torch.set_num_threads(self.threads)
        spec = RunSpec.from_json(self.spec)
        if spec.role == "baseline":
            return self._baseline(spec)
        return self._train_and_evaluate(spec)

    def _baseline(self, spec: RunSpec) -> dict:
        from salt.eval.evaluate import evaluate_baseline
        record = evaluate_baseline(spec.method, spec.config, spec.config.out_dir, spec.evaluation)
        for bench in _benchmarks(spec):
            evaluate_baseline(spec.method, spec.config, spec.config.out_dir, spec.evaluation, benchmark=bench)
        return {"run_id": spec.run_id, "record": str(record.run_id)}

    def _train_and_evaluate(self, spec: RunSpec) -> dict:
        from salt.eval.evaluate import evaluate_run
        from salt.runlock import hold
        from salt.train.distributed import DistributedContext
        from salt.train.loop import resolve_device
        layout = spec.layout
        dist = DistributedContext.from_env(resolve_device(spec.config.train)[0].type)   # several tasks (GPUs): DDP
        # one job at a time trains and evaluates the run (rank 0 locks for every rank); a requeued job whose
        # earlier incarnation is still being killed waits for it
        with hold(spec.run_dir, "study job", wait_s=LOCK_WAIT_S, dist=dist):
            summary = train_resumable(spec.config, dist)
            if not dist.is_main:   # evaluation records are written once, by rank 0
                return summary
            for step in sorted(set(spec.eval_steps) | {spec.config.train.steps}):
                if not layout.record(step, spec.evaluation).exists():
                    evaluate_run(spec.run_dir, step, spec.evaluation)
                for bench in _benchmarks(spec):   # and on every benchmark the study names
                    if not layout.record(step, spec.evaluation, bench.name).exists():
                        evaluate_run(spec.run_dir, step, spec.evaluation, benchmark=bench)
        return summary

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on SLURM's timeout/preemption signal, before the job is requeued: during training
        once the requested checkpoint is written (`_fit`), otherwise at once (nothing to save)."""
        return submitit.helpers.DelayedSubmission(RunJob(self.spec, self.threads))
