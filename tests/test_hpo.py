"""optuna search over a run recipe: shared journal storage across worker processes, pruning, early errors; trials
named by run id and trained by the study's job code."""
import json
from pathlib import Path

import optuna
import pytest

from salt.config import ConfigError
from salt.data import build_dataset
from salt.identity import run_id
from salt.study.hpo import (Recipe, Worker, best_trial_table, create_storage, create_study, launch, storage_path,
                            trial_config, with_overrides)

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
    for t in trials:   # each trial's run: STUDY/trials/<its run id as a study names it>, finished
        again = with_overrides(base, t.user_attrs["overrides"])   # the trial's overrides reproduce its values
        assert t.user_attrs["run_id"] == run_id(again, "study")
        assert t.user_attrs["run_dir"] == str(tmp_path / "study" / "trials" / t.user_attrs["run_id"])
        assert (Path(t.user_attrs["run_dir"]) / "done.json").exists()
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
    ran = Worker(storage, "prune", recipe, optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)).run(4)
    assert ran == [0, 1, 2, 3]
    trials = optuna.load_study(study_name="prune", storage=create_storage(storage)).get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"], [t.intermediate_values for t in trials]
    pruned = trials[2]
    assert pruned.last_step < 5 and not (Path(pruned.user_attrs["run_dir"]) / "done.json").exists()
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


def test_a_resumed_trial_continues_its_run_and_reports_what_an_uninterrupted_one_does(base, tmp_path):
    """A trial whose run stopped after its checkpoint at step 2 (a requeued or retried trial) resumes it: the same
    value and intermediate values as the same trial run in one go, and the resume step recorded."""
    from salt.train.loop import train
    cfg = with_overrides(base, ["train.checkpoint_every=2", "train.steps=5"])
    space = {"optim.lr": ("log_uniform", 1e-4, 1e-2)}
    whole, cut = (Recipe(cfg, space, str(tmp_path / name), smooth=2) for name in ("whole", "cut"))

    class Stop(Exception):
        pass

    def stop_at_3(trainer, step, record):
        if step == 3:
            raise Stop
    with pytest.raises(Stop):   # the trial's own run, interrupted after its checkpoint at step 2
        train(trial_config(cut, ["optim.lr=0.003"]), resume=True, callbacks=[stop_at_3])
    values = {}
    for recipe in (whole, cut):
        storage = storage_path(recipe.study_dir)
        create_study(storage).enqueue_trial({"optim.lr": 3e-3})
        assert Worker(storage, "hpo", recipe, optuna.pruners.NopPruner()).run(1) == [0]
        (t,) = create_study(storage).get_trials()
        values[recipe.study_dir] = (t.value, t.intermediate_values, t.user_attrs.get("resumed_at_step"))
        assert Path(t.user_attrs["run_dir"]).name == t.user_attrs["run_id"]
    (value, reported, resumed), (value_cut, reported_cut, resumed_cut) = values.values()
    assert value_cut == value and resumed_cut == 2 and resumed is None
    assert reported_cut == {step: v for step, v in reported.items() if step >= 2}   # steps 0, 1 before the cut
    attempts = Path(cut.study_dir) / "trials" / run_id(with_overrides(cfg, ["optim.lr=0.003"]), "study") / \
        "attempts.jsonl"
    assert [json.loads(line)["start_step"] for line in attempts.read_text().splitlines()] == [2]


def test_the_same_values_twice_are_one_run(base, tmp_path):
    """A second trial with a finished trial's values (a lost trial's retry, a repeated categorical choice) finds its
    run done: the same value, read back, and no training."""
    recipe = Recipe(base, {"optim.lr": ("categorical", [1e-3])}, str(tmp_path / "study"), value="heldout_loss")
    storage = storage_path(recipe.study_dir)
    create_study(storage)
    assert Worker(storage, "hpo", recipe, optuna.pruners.NopPruner()).run(2) == [0, 1]
    first, second = create_study(storage).get_trials()
    assert first.user_attrs["run_dir"] == second.user_attrs["run_dir"]
    assert (first.value, first.user_attrs["train_loss"]) == (second.value, second.user_attrs["train_loss"])
    assert len((Path(first.user_attrs["run_dir"]) / "attempts.jsonl").read_text().splitlines()) == 1


def test_a_student_trial_is_named_as_the_study_names_the_same_student(tmp_path):
    """hpo_student's trials: the run id PlanBuilder.student gives the same config (the teacher by its run id)."""
    from salt.study.spec import PlanBuilder
    from studies import hpo_student
    dials = hpo_student.PRESETS["smoke"]
    plan = hpo_student.teacher_plan(dials, "smoke", tmp_path / "h")
    recipe = hpo_student.student_recipe(dials, plan)
    values = ["optim.lr=0.0005", "optim.weight_decay=0.01"]
    b = PlanBuilder(hpo_student.STUDY, "smoke", tmp_path / "h", evaluation=dials.evaluation)
    student = b.student(dials.student_config, plan.runs[0],
                        [f"model.size={dials.student_size}", f"train.steps={dials.student_steps}", *values])
    cfg = trial_config(recipe, values)
    assert cfg.name == student.run_id and cfg.out_dir == str(tmp_path / "h" / "hpo" / "trials")
    assert trial_config(recipe, ["optim.lr=0.0006", values[1]]).name != student.run_id


def test_a_journal_from_before_run_ids_still_gives_its_table(tmp_path):
    """Trials of a search made before trials were named by run id (folders trial-N, no run_id attribute): the
    table reads them, with an empty run id and their old folders."""
    storage = storage_path(tmp_path / "old")
    study = create_study(storage)
    for n, value in enumerate((0.5, 0.25)):
        trial = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        trial.set_user_attr("run_dir", str(tmp_path / "old" / "trials" / f"trial-{n}"))
        study.tell(trial, value)
    table = best_trial_table(storage)
    assert list(table["number"]) == [1, 0] and list(table["run_id"]) == ["", ""]
    assert list(table["run_dir"]) == [str(tmp_path / "old" / "trials" / f"trial-{n}") for n in (1, 0)]
