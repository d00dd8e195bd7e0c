"""Hyperparameter search for one run recipe with optuna (e.g. a student's optim.lr and optim.weight_decay at a
given size), with trials run by many workers at once: local processes, or SLURM array tasks via submitit.

    space = {"optim.lr": ("log_uniform", 1e-4, 3e-3), "optim.weight_decay": ("uniform", 0.0, 0.1)}
    launch(executor, n_workers=8, n_trials=64, base=cfg, space=space, study_dir="studies/lr_wd",
           pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    best_trial_table(storage_path("studies/lr_wd"), "hpo")

Every worker shares one storage: an optuna JournalStorage file guarded by a file lock (works on NFS), or an RDB
URL (sqlite:///..., postgresql://...). A trial is one ordinary training run, `STUDY/trials/trial-<number>`,
built from the base config by `key=value` overrides (the config module's one override path: an unknown key or
a wrong type is an error before anything runs). Its intermediate value, reported at each logged step, is the
training loss averaged over the last `smooth` log records; the pruner may stop the trial there
(optuna.TrialPruned; the run folder stays resumable). Its value is that smoothed loss at the last step, or
with value="heldout_loss" the run's own objective on fixed held-out clips and masks (salt.eval.evaluate).
A trial is one process: ranks from the environment are not used (several tasks of one job are several workers).
"""
from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna
import pandas as pd
import yaml

from salt.config import ConfigError, with_overrides
from salt.schema import RunConfig
from salt.train.distributed import DistributedContext
from salt.train.loop import NonFiniteLossError, Trainer, run_dir_for, train

KINDS = ("log_uniform", "uniform", "categorical")
VALUES = ("train_loss", "heldout_loss")
DEFAULT_STUDY = "hpo"

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

    def __post_init__(self):
        if self.value not in VALUES:
            raise ConfigError(f"value must be one of {', '.join(VALUES)}, got {self.value!r}")
        if self.smooth < 1:
            raise ConfigError(f"smooth must be >= 1, got {self.smooth}")
        object.__setattr__(self, "space", check_space(self.space, self.base))


# -- search space and configs ----------------------------------------------------------------------------
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


def trial_config(recipe: Recipe, number: int, overrides: list[str]) -> RunConfig:
    trials = Path(recipe.study_dir) / "trials"
    return with_overrides(recipe.base, [*overrides, f"name=trial-{number}", override("out_dir", str(trials)),
                                        "train.progress=false"])


# -- one trial -----------------------------------------------------------------------------------------
class PruningCallback:
    """Trainer callback: report the smoothed training loss at each logged step; stop if the pruner says so."""

    def __init__(self, trial: optuna.Trial, smooth: int):
        self.trial, self.recent = trial, collections.deque(maxlen=smooth)
        self.trainer: Trainer | None = None

    @property
    def value(self) -> float:
        return sum(self.recent) / len(self.recent)

    def __call__(self, trainer: Trainer, step: int, record: dict) -> None:
        self.trainer = trainer
        self.recent.append(record["loss"])
        self.trial.report(self.value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}: smoothed training loss {self.value:.4f}")


def objective(trial: optuna.Trial, recipe: Recipe) -> float:
    """Train the trial's run; its value is the smoothed final training loss (or the held-out loss)."""
    overrides = suggest(trial, recipe.space)
    cfg = trial_config(recipe, trial.number, overrides)
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("run_dir", str(run_dir_for(cfg)))
    callback = PruningCallback(trial, recipe.smooth)
    train(cfg, callbacks=[callback], dist=DistributedContext())
    trial.set_user_attr("train_loss", callback.value)
    if recipe.value == "train_loss":
        return callback.value
    heldout = _heldout_loss(callback.trainer, cfg)
    trial.set_user_attr("heldout_loss", heldout)
    return heldout


def _heldout_loss(trainer: Trainer, cfg: RunConfig) -> float:
    from salt.data import build_dataset
    from salt.eval.evaluate import eval_protocol, heldout_loss
    test_set, _ = build_dataset(cfg.data, "test")
    return heldout_loss(trainer.objective.cpu().eval(), cfg, test_set, eval_protocol(cfg.train.eval_protocol))


# -- storage, workers, launch ------------------------------------------------------------------------------
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


def create_study(storage: str | Path, study_name: str = DEFAULT_STUDY) -> optuna.Study:
    return optuna.create_study(storage=create_storage(storage), study_name=study_name, direction="minimize",
                               load_if_exists=True)


def run_worker(storage: str | Path, study_name: str, n_trials: int, recipe: Recipe, *,
               pruner: optuna.pruners.BasePruner | None = None, sampler: optuna.samplers.BaseSampler | None = None,
               ) -> list[int]:
    """What one worker (one array task) runs: `n_trials` trials of the shared study, one after another.
    A trial whose loss is not finite fails (recorded, not fatal). -> the numbers of the trials it ran."""
    study = optuna.load_study(study_name=study_name, storage=create_storage(storage),
                              sampler=sampler or optuna.samplers.TPESampler(constant_liar=True), pruner=pruner)
    numbers = []

    def remember(study_, trial):
        numbers.append(trial.number)

    study.optimize(functools.partial(objective, recipe=recipe), n_trials=n_trials,
                   catch=(NonFiniteLossError,), callbacks=[remember], gc_after_trial=True)
    return numbers


def _worker_task(worker: int, n_trials: int, storage: str, study_name: str, recipe: Recipe, pruner, seed):
    # constant_liar: running trials count as bad guesses, so concurrent workers do not all try the same point
    sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + worker, constant_liar=True)
    return run_worker(storage, study_name, n_trials, recipe, pruner=pruner, sampler=sampler)


def launch(executor, n_workers: int, n_trials: int, recipe: Recipe, *, storage: str | Path | None = None,
           study_name: str = DEFAULT_STUDY, pruner: optuna.pruners.BasePruner | None = None,
           seed: int | None = None) -> list:
    """Create (or reopen) the study, then submit `n_workers` jobs sharing it (a job array on SLURM through
    `executor.map_array`), `n_trials` trials in all, split as evenly as possible. -> the submitit jobs.
    The recipe's space was checked against its base config when the Recipe was made."""
    if n_workers < 1 or n_trials < 1:
        raise ConfigError(f"n_workers and n_trials must be >= 1, got {n_workers} and {n_trials}")
    storage = str(storage or storage_path(recipe.study_dir))
    create_study(storage, study_name)
    counts = [n_trials // n_workers + (w < n_trials % n_workers) for w in range(n_workers)]
    workers = [w for w in range(n_workers) if counts[w]]
    task = functools.partial(_worker_task, storage=storage, study_name=study_name, recipe=recipe, pruner=pruner,
                             seed=seed)
    return executor.map_array(task, workers, [counts[w] for w in workers])


def best_trial_table(storage: str | Path, study_name: str = DEFAULT_STUDY) -> pd.DataFrame:
    """One row per trial, best first (finished trials by value, then pruned, running, failed): number, state,
    value (a pruned or running trial's last reported value), the searched values (config keys), last reported
    step, run folder, duration."""
    study = optuna.load_study(study_name=study_name, storage=create_storage(storage))
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
    rows = []
    for t in study.get_trials(deepcopy=False):
        last_step = t.last_step
        rows.append({"number": t.number, "state": t.state.name,
                     "value": t.value if t.value is not None else (t.intermediate_values.get(last_step, math.nan)
                                                                   if last_step is not None else math.nan),
                     **t.params, "last_step": last_step, "run_dir": t.user_attrs.get("run_dir", ""),
                     "duration_s": t.duration.total_seconds() if t.duration else math.nan})
    table = pd.DataFrame(rows, columns=None if rows else ["number", "state", "value"])
    if table.empty:
        return table
    table["_order"] = table["state"].map(order)
    return (table.sort_values(["_order", "value", "number"], na_position="last").drop(columns="_order")
            .reset_index(drop=True))


__all__ = ["KINDS", "PruningCallback", "Recipe", "SearchSpace", "best_trial_table", "check_space", "create_storage",
           "create_study", "launch", "objective", "run_worker", "storage_path", "suggest", "trial_config",
           "with_overrides"]
