"""Run identity (salt.identity). Golden run ids: every packaged config's ids, as the command line, a study and a
baseline name them, and every run id of the compute-allocation study's plans, pinned in tests/golden_run_ids.json.
A run id names a folder that holds finished work: a change that moves one would retrain (or, worse, reuse) runs
silently. An intended change regenerates the file (`python -m tests.test_run_ids --write`) and says so in its commit.

The file was first written from commit 53a0407 (before issue 20), so the ids it holds are the ones run folders made
until then carry. Besides: every config field declares its identity, a field added as UNLESS_DEFAULT keeps every
id at its default, and the id scheme is stored in done.json and study.json and read back."""
from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import pytest

from salt.config import load_config, resolve_config
from salt.identity import (ALWAYS, BASELINE_KINDS, FORMS, ID_SCHEME, IDENTITIES, NEVER, SCHEDULING,
                           SCHEDULING_UNLESS_DEFAULT, UNLESS_DEFAULT, config_hash, run_id)
from salt.layout import LayoutError, RunLayout, StudyLayout
from salt.schema import RunConfig

GOLDEN = Path(__file__).with_name("golden_run_ids.json")
CONFIGS = Path(__file__).resolve().parents[1] / "salt" / "configs"
TEACHER = "objective.teacher_checkpoint=teacher-placeholder"   # configs whose method needs a teacher
STUDY_PRESETS = ("default", "small", "paper")


def config_ids() -> dict[str, dict[str, str]]:
    """Per packaged run config: the CLI run id, the study run id (teacher named "teacher-x") and both baselines'."""
    ids = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.stem.endswith("_common") or path.stem == "micro":   # layers, not runs
            continue
        base = load_config(RunConfig, [resolve_config(path.stem)], [TEACHER]) if "student" in path.stem else \
            load_config(RunConfig, [resolve_config(path.stem)])
        ids[path.stem] = {"cli": run_id(base), "study": run_id(base, "study", teacher_id="teacher-x"),
                          **{kind: run_id(base, kind) for kind in BASELINE_KINDS}}
    return ids


def study_ids() -> dict[str, list[str]]:
    """Every run id of the compute-allocation study's plans, per preset (the plan only: nothing runs)."""
    from studies.compute_allocation import PRESETS, build
    return {preset: [spec.run_id for spec in build(PRESETS[preset], preset, Path("/nonexistent/study")).runs]
            for preset in STUDY_PRESETS}


def current() -> dict:
    return {"configs": config_ids(), "compute_allocation": study_ids()}


def test_run_ids_are_the_pinned_ones():
    golden, now = json.loads(GOLDEN.read_text()), current()
    moved = [f"{name} {kind}: {ids[kind]} -> {now['configs'].get(name, {}).get(kind)}"
             for name, ids in golden["configs"].items() for kind in ids
             if now["configs"].get(name, {}).get(kind) != ids[kind]]
    moved += [f"compute_allocation {preset}: {sorted(set(ids) ^ set(now['compute_allocation'][preset]))}"
              for preset, ids in golden["compute_allocation"].items() if ids != now["compute_allocation"][preset]]
    assert not moved, "run ids moved (existing run folders would not be found):\n" + "\n".join(moved)
    assert set(now["configs"]) == set(golden["configs"]), "a packaged config was added or removed: pin its ids"


# -- every field declares its identity ------------------------------------------------------------------------

def config_classes(root: type = RunConfig) -> list[type]:
    """Every dataclass of the config tree under `root`: field types, and the item types of list fields."""
    found, todo = [], [root]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        for hint in typing.get_type_hints(cls).values():
            todo += [t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)]
    return found


def test_every_field_of_every_config_dataclass_declares_its_identity():
    classes = config_classes()
    assert {"RunConfig", "DataConfig", "MovingDigitsConfig", "VideoListConfig", "ModelConfig", "PredictorConfig",
            "MaskConfig", "BlockConfig", "ObjectiveConfig", "OptimConfig", "TrainConfig",
            "WandbConfig"} <= {c.__name__ for c in classes}
    undeclared = [f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)
                  if "identity" not in f.metadata or f.metadata["identity"] not in IDENTITIES]
    assert not undeclared, f"fields without a run identity (salt.identity): {', '.join(undeclared)}"


def with_knob(cfg: RunConfig, part: str, metadata, value: int = 3, default: int = 3) -> RunConfig:
    """`cfg` whose `part` (a section, e.g. "model") has one more field, `knob`, as a later commit would add it."""
    old = getattr(cfg, part)
    knob = dataclasses.field(default=default, metadata=metadata) if metadata is not None else \
        dataclasses.field(default=default)
    cls = dataclasses.make_dataclass(f"{type(old).__name__}WithKnob", [("knob", int, knob)], bases=(type(old),))
    return dataclasses.replace(cfg, **{part: cls(**{f.name: getattr(old, f.name) for f in dataclasses.fields(old)},
                                                 knob=value)})


def ids(cfg: RunConfig) -> dict[str, str]:
    return {form: run_id(cfg, form) for form in FORMS}


def moved(cfg: RunConfig, other: RunConfig) -> set[str]:
    return {form for form, i in ids(cfg).items() if ids(other)[form] != i}


@pytest.fixture(scope="module")
def teacher() -> RunConfig:
    return load_config(RunConfig, [resolve_config("tiny_teacher")])


def test_a_field_without_an_identity_is_refused_by_name(teacher):
    with pytest.raises(TypeError, match="OptimConfigWithKnob.knob declares no run identity"):
        run_id(with_knob(teacher, "optim", None))


@pytest.mark.parametrize("part, named_by", [("data", set(FORMS)), ("model", set(FORMS) - {"raw_pixels"})])
def test_a_new_unless_default_field_keeps_every_id_at_its_default(teacher, part, named_by):
    """The point of UNLESS_DEFAULT: a knob added later leaves the ids of existing runs alone until it is set."""
    assert moved(teacher, with_knob(teacher, part, UNLESS_DEFAULT)) == set()
    assert moved(teacher, with_knob(teacher, part, UNLESS_DEFAULT, value=4)) == named_by
    # ALWAYS would move every id that hashes the section, at once: why a new field is never ALWAYS
    assert moved(teacher, with_knob(teacher, part, ALWAYS)) == named_by


def test_scheduling_and_naming_fields(teacher):
    """SCHEDULING: only a command-line folder's id hashes it (scheme 1 did); NEVER: no id does."""
    for value in (3, 4):
        assert moved(teacher, with_knob(teacher, "data", NEVER, value)) == set()
        assert moved(teacher, with_knob(teacher, "data", SCHEDULING_UNLESS_DEFAULT, value)) == \
            ({"run"} if value != 3 else set())
    assert moved(with_knob(teacher, "data", SCHEDULING), with_knob(teacher, "data", SCHEDULING, 4)) == {"run"}
    assert moved(teacher, with_knob(teacher, "data", SCHEDULING)) == {"run", *BASELINE_KINDS}   # at its default


def test_scheduling_keys_name_no_study_run_or_baseline(teacher):
    """How data is cached, loaded or decoded, and where and how often a run logs, checkpoints or runs, is
    scheduling. data.video.decode_threads too: the baseline's hand-made key missed it (a baseline id hashed it
    off its default; no packaged config or study sets it, so no pinned id moves)."""
    scheduled = load_config(RunConfig, [resolve_config("tiny_teacher")], [
        "data.video.decode_threads=4", "data.num_workers=3", "data.moving_digits.cache_dir=/elsewhere",
        "train.log_every=3", "train.checkpoint_every=7", "train.keep_checkpoints=5", "train.progress=false",
        "train.device=cpu", "train.eval_every=50", "train.eval_protocol=fast", "train.accumulate=2",
        "train.compile=true", "train.shard=fsdp", "model.activation_checkpointing=true"])
    assert moved(teacher, scheduled) == {"run"}
    named = load_config(RunConfig, [resolve_config("tiny_teacher")], ["out_dir=/x", "wandb.enabled=true",
                                                                      "wandb.group=g"])
    assert moved(teacher, named) == set()
    assert run_id(load_config(RunConfig, [resolve_config("tiny_teacher")], ["name=mine"])) == "mine"


def test_names_folders_and_logging_leave_the_config_hash_alone():
    """A record's config_hash is the command-line folder id's hash: names, folders and wandb are not in it."""
    a = load_config(RunConfig, [], ["name=x", "out_dir=/tmp/a"])
    b = load_config(RunConfig, [], ["name=y", "out_dir=/tmp/b", "wandb.enabled=true"])
    c = load_config(RunConfig, [], ["train.steps=301"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert run_id(dataclasses.replace(a, name="")) == f"pixel-{config_hash(a)}"


def test_forms_are_checked(teacher):
    with pytest.raises(ValueError, match="form must be one of run, study, random_init, raw_pixels"):
        run_id(teacher, "baseline")
    with pytest.raises(ValueError, match="teacher_id"):
        run_id(teacher, "run", teacher_id="t")
    assert run_id(teacher, "study", teacher_id="t") != run_id(teacher, "study")


# -- the scheme is stored and read back -----------------------------------------------------------------------

def test_done_json_stores_the_id_scheme_and_reads_it_back(tmp_path):
    run = RunLayout(tmp_path / "r")
    written = run.write_done({"run_id": "r", "steps": 3})
    assert json.loads(run.done.read_text())["id_scheme"] == written["id_scheme"] == ID_SCHEME
    assert run.read_done()["id_scheme"] == ID_SCHEME
    run.done.write_text(json.dumps({"run_id": "r", "steps": 3, "schema_version": 1}))   # before the scheme was kept
    assert run.read_done()["id_scheme"] == 1
    run.done.write_text(json.dumps({"run_id": "r", "schema_version": 1, "id_scheme": 99}))
    with pytest.raises(LayoutError, match=rf"{run.done} names its runs with id scheme 99.*newer salt"):
        run.read_done()


def test_study_json_stores_the_id_scheme_and_reads_it_back(tmp_path):
    from salt.study.spec import PlanBuilder, StudyError, read_plan, write_plan
    builder = PlanBuilder("ids", "p", tmp_path, evaluation="smoke")
    builder.baseline("raw_pixels", builder.run("micro_teacher"))
    plan = builder.plan()
    path = write_plan(plan)
    assert path == StudyLayout(tmp_path).plan and json.loads(path.read_text())["id_scheme"] == ID_SCHEME
    back = read_plan(tmp_path)
    assert back.id_scheme == ID_SCHEME and [s.run_id for s in back.runs] == [s.run_id for s in plan.runs]
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in stored.items() if k != "id_scheme"}))   # an older study folder
    assert read_plan(tmp_path).id_scheme == 1
    write_plan(plan)
    assert json.loads(path.read_text()) == stored   # rewritten once with its scheme
    path.write_text(json.dumps({**stored, "id_scheme": 99}))
    for action in (lambda: read_plan(tmp_path), lambda: write_plan(plan)):
        with pytest.raises(StudyError, match="id scheme 99"):
            action()
    assert json.loads(path.read_text())["id_scheme"] == 99   # refused before anything was written


if __name__ == "__main__":   # python -m tests.test_run_ids --write: pin the ids this code gives
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_run_ids --write")
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
