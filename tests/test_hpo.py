"""optuna search over a run recipe: shared journal storage across worker processes, pruning, early errors."""
import optuna
import pytest

from salt.config import ConfigError
from salt.data import build_dataset
from salt.study.hpo import (Recipe, best_trial_table, create_storage, create_study, launch, run_worker,
                            storage_path, with_overrides)
from salt.train.loop import run_dir_for

SPACE = {"optim.lr": ("log_uniform", 1e-4, 1e-2), "optim.weight_decay": ("uniform", 0.0, 0.1)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def base(micro_config):
    """The micro teacher recipe, constant LR after step 0 (no warmup), logged every step."""
    cfg = micro_config("teacher", "base", "optim.warmup_steps=0", "train.checkpoint_every=100", steps=4)
    build_dataset(cfg.data, "train")   # cache the clips once, before workers start
    return cfg


def test_search_space_errors_come_before_any_trial(base, tmp_path):
    study_dir = tmp_path / "study"
    bad = [({"optim.lrr": ("log_uniform", 1e-4, 1e-2)}, r"optim\.lrr.*unknown config key 'optim\.lrr'"),
           ({"optim.lr": ("loguniform", 1e-4, 1e-2)}, r"'optim\.lr'.*kind one of log_uniform, uniform, categorical"),
           ({"optim.lr": ("log_uniform", 0.0, 1e-2)}, r"'optim\.lr'.*0 < low < high"),
           ({"optim.lr": ("uniform", 1e-2, 1e-4)}, r"'optim\.lr'.*low < high"),
           ({"optim.lr": ("categorical", ["fast"])}, r"'optim\.lr'.*expected a float"),
           ({"train.device": ("categorical", ["cpu", "tpu"])}, r"train\.device.*tpu"),
           ({}, "empty")]
    for space, message in bad:
        with pytest.raises(ConfigError, match=message):
            Recipe(base, space, str(study_dir))
    assert not study_dir.exists()
    # The overrides take the config module's path: types and unknown keys checked there.
    cfg = with_overrides(base, ["optim.lr=1.0e-05", "train.steps=7"])
    assert (cfg.optim.lr, cfg.train.steps, cfg.optim.weight_decay) == (1e-5, 7, base.optim.weight_decay)


def test_two_worker_processes_share_one_journal(base, tmp_path, monkeypatch):
    """launch: 2 submitit jobs (local processes, as array tasks would be on SLURM), 6 trials on one journal
    file: distinct numbers, none lost, each a finished run folder."""
    import submitit
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = Recipe(base, SPACE, str(tmp_path / "study"))
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=3)
    jobs = launch(executor, n_workers=2, n_trials=6, recipe=recipe, pruner=optuna.pruners.NopPruner(), seed=0)
    ran = [job.result() for job in jobs]
    assert sorted(len(numbers) for numbers in ran) == [3, 3]
    assert sorted(n for numbers in ran for n in numbers) == list(range(6))
    study = optuna.load_study(study_name="hpo", storage=create_storage(storage_path(recipe.study_dir)))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["optim.lr"] for t in trials}) == 6
    for t in trials:
        assert (tmp_path / "study" / "trials" / f"trial-{t.number}" / "done.json").exists()
        again = with_overrides(base, t.user_attrs["overrides"])   # the trial's overrides reproduce its values
        assert (again.optim.lr, again.optim.weight_decay) == (t.params["optim.lr"], t.params["optim.weight_decay"])
        assert t.intermediate_values.keys() == {0, 1, 2, 3}
    table = best_trial_table(storage_path(recipe.study_dir), "hpo")
    assert list(table["number"]) == [t.number for t in sorted(trials, key=lambda t: t.value)]
    assert {"optim.lr", "optim.weight_decay", "value", "state", "run_dir"} <= set(table.columns)


def test_a_clearly_worse_trial_is_pruned(base, tmp_path):
    """Two good learning rates complete; lr=1e-7 (no learning) is clearly worse than their median by step 1
    and is pruned; a third good one completes. The values are held-out losses."""
    cfg = with_overrides(base, ["train.steps=6"])
    recipe = Recipe(cfg, {"optim.lr": ("log_uniform", 1e-8, 1e-1)}, str(tmp_path / "study"), value="heldout_loss",
                    smooth=2)
    storage = storage_path(recipe.study_dir)
    study = create_study(storage, "prune")
    for lr in (3e-3, 1e-2, 1e-7, 5e-3):
        study.enqueue_trial({"optim.lr": lr})
    ran = run_worker(storage, "prune", 4, recipe,
                     pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    assert ran == [0, 1, 2, 3]
    trials = optuna.load_study(study_name="prune", storage=create_storage(storage)).get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"], [t.intermediate_values for t in trials]
    pruned = trials[2]
    assert pruned.last_step < 5 and not (run_dir_for(with_overrides(cfg, [
        "name=trial-2", f"out_dir={tmp_path / 'study' / 'trials'}"])) / "done.json").exists()
    for t in (trials[0], trials[1], trials[3]):
        assert t.value == t.user_attrs["heldout_loss"] != t.user_attrs["train_loss"]
    table = best_trial_table(storage, "prune")
    assert list(table["state"]) == ["COMPLETE"] * 3 + ["PRUNED"]
    assert table["value"].iloc[0] == min(t.value for t in trials if t.value is not None)


def test_rdb_url_storage(tmp_path):
    pytest.importorskip("sqlalchemy")
    storage = create_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert isinstance(storage, optuna.storages.RDBStorage)


def test_a_killed_local_worker_leaves_no_trial_running_for_ever(base, tmp_path, monkeypatch):
    """A worker process killed mid-trial (SIGKILL: nothing of it runs afterwards) leaves its trial RUNNING in the
    journal. The next launch fails it (its pid is gone from this host), enqueues its parameters again and runs
    only what the study lacks: the retry and the trial never started."""
    import os
    import signal
    import time

    import submitit
    from salt.study.hpo import LOST_ATTR, RETRY_ATTR, WORKER_ATTR, counted_trials, fail_lost_trials
    from salt.study.state import process_alive
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = Recipe(with_overrides(base, ["train.steps=400"]), SPACE, str(tmp_path / "study"))   # long: killable
    short = Recipe(base, SPACE, recipe.study_dir)   # the same search, 4 steps a trial: the retries end soon
    storage = storage_path(recipe.study_dir)
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=3)
    (job,) = launch(executor, n_workers=1, n_trials=2, recipe=recipe, pruner=optuna.pruners.NopPruner(), seed=0)
    deadline = time.time() + 60
    while True:   # the trial is under way: it has reported a loss
        trials = create_study(storage).get_trials()
        if trials and trials[0].intermediate_values:
            break
        assert time.time() < deadline and not job.done(), "trial 0 did not start within 60 s"
        time.sleep(0.2)
    worker = trials[0].user_attrs[WORKER_ATTR]
    assert (worker["executor"], worker["job_id"]) == ("local", str(job.job_id))
    os.kill(worker["pid"], signal.SIGKILL)
    while process_alive(worker["host"], worker["pid"]):
        time.sleep(0.05)
    study = create_study(storage)
    states = [(t.state.name, t.user_attrs.get(WORKER_ATTR)) for t in study.get_trials()]
    assert [state for state, _ in states] == ["RUNNING"], states   # what optuna alone would keep for ever
    assert counted_trials(study) == 1
    assert fail_lost_trials(storage) == [0] and fail_lost_trials(storage) == []   # once only
    lost, retry = study.get_trials()
    assert lost.state.name == "FAIL" and f"process {worker['pid']}" in lost.user_attrs[LOST_ATTR]
    assert retry.state.name == "WAITING" and retry.user_attrs[RETRY_ATTR] == 0
    assert counted_trials(study) == 0
    jobs = launch(executor, n_workers=1, n_trials=2, recipe=short, pruner=optuna.pruners.NopPruner())
    assert sorted(n for j in jobs for n in j.result()) == [1, 2]
    trials = create_study(storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"], trials
    assert trials[1].params == lost.params and trials[1].user_attrs[RETRY_ATTR] == 0
    assert launch(executor, n_workers=1, n_trials=2, recipe=recipe) == []   # the study has its 2 trials
    table = best_trial_table(storage)
    best = min(trials[1:], key=lambda t: t.value)
    assert table["number"].iloc[0] == best.number and table["value"].iloc[0] == best.value == study.best_value
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "FAIL"]
