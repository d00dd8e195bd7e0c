"""Hyperparameter search for one run recipe with optuna (e.g. a student's optim.lr and optim.weight_decay at a
given size), with trials run by many workers at once: local processes, or SLURM array tasks via submitit.

    space = {"optim.lr": ("log_uniform", 1e-4, 3e-3), "optim.weight_decay": ("uniform", 0.0, 0.1)}
    jobs = launch(executor, n_workers=8, n_trials=64, recipe=Recipe(cfg, space, "studies/lr_wd"),
                  pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    salt.study.launch.wait_jobs(jobs, poll_s=5.0)
    best_trial_table(storage_path("studies/lr_wd"), "hpo")

Every worker shares one storage: an optuna JournalStorage file guarded by a file lock (works on NFS), or an RDB
URL (sqlite:///..., postgresql://...). A trial is one ordinary training run, built from the base config by
`key=value` overrides (the config module's one override path: an unknown key or a wrong type is an error before
anything runs), named by its run id as a study names the same config (`STUDY/trials/<run id>`; user attribute
`run_id`) and trained by the study's job code (salt.study.job.train_resumable). Its intermediate value, reported
at each logged step, is the training loss averaged over the last `smooth` log records; the pruner may stop the
trial there (optuna.TrialPruned; the run folder stays resumable). Its value is that smoothed loss at the last
step, or with value="heldout_loss" the run's own objective on fixed held-out clips and masks (salt.eval.evaluate).
A trial is one process: ranks from the environment are not used (several tasks of one job are several workers).
A search made before trials were named by run id (`trials/trial-<number>`) is read, not continued.

Lost and requeued workers (docs/studies.md): each trial records its worker (`worker_identity`); every `launch`
fails the RUNNING trials whose worker is gone and enqueues their values again (`fail_lost_trials`: optuna's
JournalStorage has no heartbeat), then submits only what the study lacks. A requeued `Worker` first finishes the
trials its job left RUNNING from their run folders. Waiting for workers: salt.study.launch.wait_jobs.
"""
from __future__ import annotations

import collections
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna
import pandas as pd
import submitit
import yaml
from optuna.trial import TrialState

from salt.config import ConfigError, with_overrides
from salt.identity import run_id
from salt.layout import read_metrics
from salt.objectives import get_method
from salt.runlock import RunLockedError, hold
from salt.schema import RunConfig
from salt.study.job import LOCK_WAIT_S, train_resumable
from salt.study.state import process_alive, slurm_outcome, slurm_queue
from salt.train.distributed import DistributedContext
from salt.train.loop import NonFiniteLossError, run_layout

KINDS = ("log_uniform", "uniform", "categorical")
VALUES = ("train_loss", "heldout_loss")
DEFAULT_STUDY = "hpo"
WORKER_ATTR = "worker"            # trial user attribute: who runs it (worker_identity())
RUN_ID_ATTR = "run_id"            # trial user attribute: its run's id (the folder STUDY/trials/<run id>)
LOST_ATTR = "worker_lost"         # on a trial failed by fail_lost_trials: why its worker counts as gone
RETRY_ATTR = "retry_of"           # on the trial enqueued in its place: the lost trial's number
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
TRIAL_ERRORS = (NonFiniteLossError, RunLockedError)   # the trial fails (recorded), its worker goes on

# {dotted config key: ("log_uniform", lo, hi) | ("uniform", lo, hi) | ("categorical", [choice, ...])}
SearchSpace = Mapping[str, tuple]


@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs to run trials (picklable, so submitit can ship it to an array task)."""

    base: RunConfig
    space: dict[str, tuple]
    study_dir: str
    value: str = "train_loss"   # train_loss | heldout_loss
    smooth: int = 3             # intermediate value = mean loss of the last `smooth` log records
    teacher_id: str = ""        # a student's teacher by run id, as a study names it ("": by checkpoint path)

    def __post_init__(self):
        if self.value not in VALUES:
            raise ConfigError(f"value must be one of {', '.join(VALUES)}, got {self.value!r}")
        if self.smooth < 1:
            raise ConfigError(f"smooth must be >= 1, got {self.smooth}")
        object.__setattr__(self, "space", check_space(self.space, self.base))


def override(key: str, value: Any) -> str:
    """`key=value` with the value written as YAML (1e-05 -> 1.0e-05: YAML reads the former as a string)."""
    text = yaml.safe_dump(value, default_flow_style=True).rstrip("\n").removesuffix("\n...")
    return f"{key}={text}"


def check_space(space: SearchSpace, base: RunConfig) -> dict[str, tuple]:
    """The space, checked: known kind, sane bounds, and every key a config key whose type takes the values
    (each bound / choice is applied to `base`). A ConfigError names the key otherwise."""
    if not space:
        raise ConfigError("the search space is empty")
    checked = {}
    for key, spec in space.items():
        if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
            raise ConfigError(f"search space {key!r}: expected (kind, ...) with kind one of {', '.join(KINDS)}, "
                              f"got {spec!r}")
        kind, *args = spec
        if kind == "categorical":
            if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
                raise ConfigError(f"search space {key!r}: expected ('categorical', [choice, ...]), got {spec!r}")
            values = list(args[0])
        else:
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ConfigError(f"search space {key!r}: expected ({kind!r}, low, high), got {spec!r}")
            lo, hi = float(args[0]), float(args[1])
            if not lo < hi or (kind == "log_uniform" and lo <= 0):
                raise ConfigError(f"search space {key!r}: need {'0 < ' if kind == 'log_uniform' else ''}low < high, "
                                  f"got {spec!r}")
            values = [lo, hi]
        for v in values:
            try:
                with_overrides(base, [override(key, v)])
            except ConfigError as e:
                raise ConfigError(f"search space {key!r}: {e}") from e
        checked[key] = (kind, values) if kind == "categorical" else (kind, *values)
    return checked


def suggest(trial: optuna.Trial, space: SearchSpace) -> list[str]:
    """The trial's values as `key=value` overrides (optuna's parameter names are the config keys)."""
    out = []
    for key, (kind, *args) in space.items():
        if kind == "categorical":
            value = trial.suggest_categorical(key, args[0])
        else:
            value = trial.suggest_float(key, args[0], args[1], log=kind == "log_uniform")
        out.append(override(key, value))
    return out


def trial_config(recipe: Recipe, overrides: list[str]) -> RunConfig:
    """The trial's run, named by its run id as a study names the same config (`run_id(cfg, "study")`, a student's
    teacher by `recipe.teacher_id`), in STUDY/trials/: the same values are the same run (a retry continues it)."""
    cfg = with_overrides(recipe.base, overrides)
    teacher = ""
    if get_method(cfg.objective.method).needs_teacher:
        teacher = recipe.teacher_id or cfg.objective.teacher_checkpoint
    name = run_id(cfg, "study", teacher_id=teacher)
    return with_overrides(cfg, [f"name={name}", override("out_dir", str(Path(recipe.study_dir) / "trials")),
                                "train.progress=false"])


def smoothed(losses: list[float]) -> float:
    """A trial's value from its logged training losses: the mean of the last ones (the caller keeps `smooth`)."""
    return sum(losses) / len(losses)


class PruningCallback:
    """Trainer callback: report the smoothed training loss at each logged step (a resumed run's earlier losses
    count too: its first call reads them back); stop if the pruner says so."""

    def __init__(self, trial: optuna.Trial, smooth: int):
        self.trial, self.recent, self.started = trial, collections.deque(maxlen=smooth), False

    def __call__(self, trainer, step: int, record: dict) -> None:
        if not self.started and trainer.start_step:   # resumed: the record of `step` is already in the log
            self.trial.set_user_attr("resumed_at_step", trainer.start_step)
            logged = read_metrics(trainer.layout.metrics)
            self.recent.extend(r["loss"] for r in logged if r["step"] < trainer.start_step)
        self.started = True
        self.recent.append(record["loss"])
        value = smoothed(list(self.recent))
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: smoothed training loss {value:.4f}")


def objective(trial: optuna.Trial, recipe: Recipe) -> float:
    """Train the trial's run as a study job trains one (salt.study.job.train_resumable), under its folder's lock;
    its value, the smoothed final training loss from the run's log (or the held-out loss of its last checkpoint),
    is the same whether the run went through in one go, was resumed, or had finished before (a retry)."""
    trial.set_user_attr(WORKER_ATTR, worker_identity())
    overrides = suggest(trial, recipe.space)
    cfg = trial_config(recipe, overrides)
    layout = run_layout(cfg)
    for name, value in {"overrides": overrides, RUN_ID_ATTR: cfg.name, "run_dir": str(layout.root)}.items():
        trial.set_user_attr(name, value)
    dist = DistributedContext()   # one process: several tasks of a job are several workers
    # one worker at a time trains the run (a retry whose lost worker still runs it waits, then fails: TRIAL_ERRORS)
    with hold(layout.root, "hpo trial", wait_s=LOCK_WAIT_S, dist=dist):
        train_resumable(cfg, dist, [PruningCallback(trial, recipe.smooth)])
    values = {"train_loss": smoothed([r["loss"] for r in read_metrics(layout.metrics)][-recipe.smooth:])}
    if recipe.value == "heldout_loss":
        values["heldout_loss"] = _heldout_loss(cfg, layout.root)
    for name, value in values.items():   # user attributes: every value computed, the trial's among them
        trial.set_user_attr(name, value)
    return values[recipe.value]


def _heldout_loss(cfg: RunConfig, run_dir: Path) -> float:
    """The run's own objective, restored from its last checkpoint, on fixed held-out clips and masks."""
    from salt.checkpoint import load_checkpoint
    from salt.data import build_dataset
    from salt.eval.evaluate import heldout_loss, restored_objective
    from salt.eval.protocol import eval_protocol
    test_set, geometry = build_dataset(cfg.data, "test")
    restored = restored_objective(cfg, load_checkpoint(run_dir), geometry)
    return heldout_loss(restored, cfg, test_set, eval_protocol(cfg.train.eval_protocol))


def storage_path(study_dir: str | Path) -> str:
    """The default storage of a study folder: a journal file in it."""
    return str(Path(study_dir) / "optuna.journal")


def create_storage(path: str | Path) -> optuna.storages.BaseStorage:
    """An RDB storage for a URL (sqlite:///x.db, postgresql://...), else a JournalStorage on a file that every
    worker appends to under a lock file (open(O_EXCL) lock: safe on local disks and NFSv3+)."""
    text = str(path)
    if "://" in text:
        return optuna.storages.RDBStorage(text)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(text, lock_obj=JournalFileOpenLock(text)))


def create_study(storage: str | Path, study_name: str = DEFAULT_STUDY) -> optuna.Study:   # or reopen it
    return optuna.create_study(storage=create_storage(storage), study_name=study_name, direction="minimize",
                               load_if_exists=True)


def worker_identity() -> dict:
    """Who runs a trial, so that another process can tell later whether it is still alive: submitit's cluster
    ("slurm", "local", "debug"; "process" outside submitit), SLURM job id and task rank, host and pid."""
    try:
        env = submitit.JobEnvironment()
        executor, job_id, task = env.cluster, str(env.job_id), env.global_rank
    except RuntimeError:   # not inside a submitit job
        executor, job_id, task = "process", "", 0
    return {"executor": executor, "job_id": job_id, "task": task, "host": socket.gethostname(), "pid": os.getpid()}


class Worker(submitit.helpers.Checkpointable):
    """One job of `launch` (an array task on SLURM): `n_trials` trials of the shared study, one after another, with
    a sampler seeded per worker. A trial whose loss is not finite, or whose run another worker holds, fails
    (recorded, not fatal). On SLURM's signal the trial's run saves as a study job's does, then `checkpoint`
    requeues the same call, leaving the trial RUNNING; the requeued job (same id) first finishes the trials the
    storage says it left RUNNING, from their run folders, and counts them towards its share (`scontrol
    requeue`: the same, from the last periodic checkpoint)."""

    def __init__(self, storage: str, study_name: str, recipe: Recipe,
                 pruner: optuna.pruners.BasePruner | None = None, seed: int | None = None):
        self.storage, self.study_name, self.recipe, self.pruner, self.seed = storage, study_name, recipe, pruner, seed
        self._exiting = False   # checkpoint() ran: submitit requeues the job and exits

    def __call__(self, worker: int, n_trials: int) -> list[int]:
        # constant_liar: running trials count as bad guesses, so concurrent workers do not all try the same point
        sampler = optuna.samplers.TPESampler(seed=None if self.seed is None else self.seed + worker,
                                             constant_liar=True)
        return self.run(n_trials, sampler)

    def run(self, n_trials: int, sampler: optuna.samplers.BaseSampler | None = None) -> list[int]:
        """-> the numbers of the trials this call ran (resumed ones first)."""
        study = optuna.load_study(study_name=self.study_name, storage=create_storage(self.storage),
                                  sampler=sampler or optuna.samplers.TPESampler(constant_liar=True),
                                  pruner=self.pruner)
        me, key = worker_identity(), ("executor", "job_id", "task")   # a requeued SLURM job keeps its id and task
        mine = [t for t in study.get_trials(deepcopy=False) if me["executor"] == "slurm" and LOST_ATTR not in
                t.user_attrs and all(t.user_attrs.get(WORKER_ATTR, {}).get(k) == me[k] for k in key)]
        numbers = []
        for t in mine:
            if t.state == TrialState.RUNNING:
                self._finish(study, t)
                numbers.append(t.number)

        def remember(study_, trial):
            numbers.append(trial.number)

        if n_trials > len(mine):
            study.optimize(self._objective, n_trials=n_trials - len(mine), catch=TRIAL_ERRORS,
                           callbacks=[remember], gc_after_trial=True)
        return numbers

    def _objective(self, trial: optuna.Trial) -> float:
        try:
            return objective(trial, self.recipe)
        except Exception as error:
            if self._exiting:   # submitit's exit (a signal outside training), raised inside whatever ran, surfaced
                raise SystemExit(-1) from error   # as another error: not the trial's failure, leave it RUNNING
            raise

    def _finish(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        """Run a RUNNING trial to its end and tell the storage, as study.optimize does for the trials it asks."""
        trial = optuna.Trial(study, frozen._trial_id)   # the existing trial: suggest() returns its parameters
        try:
            value = self._objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as error:
            study.tell(trial, state=TrialState.FAIL)
            if not isinstance(error, TRIAL_ERRORS):
                raise
        else:
            study.tell(trial, value)

    def checkpoint(self, worker: int, n_trials: int) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on SLURM's signal: during training once the trial's run saved the step under way
        (salt.study.job.train_resumable), otherwise at once."""
        self._exiting = True
        return submitit.helpers.DelayedSubmission(
            Worker(self.storage, self.study_name, self.recipe, self.pruner, self.seed), worker, n_trials)


def fail_lost_trials(storage: str | Path, study_name: str = DEFAULT_STUDY) -> list[int]:
    """Mark FAIL each RUNNING trial whose worker is gone, and enqueue its parameters again (user attribute
    `retry_of`: its number), so that the next worker runs them. Gone: its SLURM job is no longer queued or running
    (squeue; a requeued job is still queued: it finishes the trial itself), or its local process is not alive on
    this host. A trial with no recorded worker, or whose local worker ran on another host, cannot be judged from
    here and is left alone. Several invocations at once: only the one whose FAIL lands enqueues the retry.
    -> the numbers of the trials failed here."""
    store = create_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=store)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    workers = {t.number: t.user_attrs.get(WORKER_ATTR, {}) for t in running}
    slurm_ids = sorted({w["job_id"] for w in workers.values() if w.get("executor") == "slurm"})
    queued = {job_id: state for job_id, (state, _) in slurm_queue(slurm_ids).items() if state.is_active}
    ended = slurm_outcome([job_id for job_id in slurm_ids if job_id not in queued])
    lost = []
    for t in running:
        worker = workers[t.number]
        if worker.get("executor") == "slurm":
            if worker["job_id"] in queued:
                continue
            reason = f"SLURM job {worker['job_id']} left the queue ({ended.get(worker['job_id'], 'ended')})"
        elif worker.get("host") == socket.gethostname() and "pid" in worker:
            if process_alive(worker["host"], worker["pid"]):
                continue
            reason = f"process {worker['pid']} on {worker['host']} is gone"
        else:
            continue
        try:
            store.set_trial_user_attr(t._trial_id, LOST_ATTR, reason)
            store.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue   # it finished meanwhile, or another invocation failed it first
        study.enqueue_trial(t.params, user_attrs={RETRY_ATTR: t.number})
        lost.append(t.number)
    return lost


def counted_trials(study: optuna.Study) -> int:
    """The trials that count towards a study's total: finished or running; a lost trial does not (its retry does)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == TrialState.RUNNING or (t.state in FINISHED and LOST_ATTR not in t.user_attrs))


def launch(executor, n_workers: int, n_trials: int, recipe: Recipe, *, storage: str | Path | None = None,
           study_name: str = DEFAULT_STUDY, pruner: optuna.pruners.BasePruner | None = None,
           seed: int | None = None) -> list:
    """Create (or reopen) the study, fail the trials of lost workers (`fail_lost_trials`: their parameters are
    enqueued again), then submit up to `n_workers` jobs sharing it (a job array on SLURM through
    `executor.map_array`) for the trials it still lacks, split as evenly as possible: `n_trials` is the study's
    total (finished and running), so a re-invocation adds only what is missing. -> the submitit jobs.
    The recipe's space was checked against its base config when the Recipe was made."""
    if n_workers < 1 or n_trials < 1:
        raise ConfigError(f"n_workers and n_trials must be >= 1, got {n_workers} and {n_trials}")
    storage = str(storage or storage_path(recipe.study_dir))
    study = create_study(storage, study_name)
    fail_lost_trials(storage, study_name)
    missing = max(0, n_trials - counted_trials(study))
    counts = [missing // n_workers + (w < missing % n_workers) for w in range(n_workers)]
    workers = [w for w in range(n_workers) if counts[w]]
    if not workers:
        return []
    return executor.map_array(Worker(storage, study_name, recipe, pruner, seed), workers, [counts[w] for w in workers])


def best_trial_table(storage: str | Path, study_name: str = DEFAULT_STUDY) -> pd.DataFrame:
    """One row per trial, best first (finished trials by value, then pruned, running, failed): number, state,
    value (a pruned or running trial's last reported value), the searched values (config keys), last reported
    step, run id and folder (a search made before trials were named by run id: no run id, its trial-N folder),
    duration."""
    study = optuna.load_study(study_name=study_name, storage=create_storage(storage))
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
    rows = []
    for t in study.get_trials(deepcopy=False):
        last_step = t.last_step
        rows.append({"number": t.number, "state": t.state.name,
                     "value": t.value if t.value is not None else (t.intermediate_values.get(last_step, math.nan)
                                                                   if last_step is not None else math.nan),
                     **t.params, "last_step": last_step, "run_id": t.user_attrs.get(RUN_ID_ATTR, ""),
                     "run_dir": t.user_attrs.get("run_dir", ""),
                     "duration_s": t.duration.total_seconds() if t.duration else math.nan})
    table = pd.DataFrame(rows, columns=None if rows else ["number", "state", "value"])
    if table.empty:
        return table
    table["_order"] = table["state"].map(order)
    return (table.sort_values(["_order", "value", "number"], na_position="last").drop(columns="_order")
            .reset_index(drop=True))


__all__ = ["KINDS", "PruningCallback", "Recipe", "SearchSpace", "Worker", "best_trial_table", "check_space",
           "counted_trials", "create_storage", "create_study", "fail_lost_trials", "launch", "objective",
           "storage_path", "suggest", "trial_config", "with_overrides", "worker_identity"]
