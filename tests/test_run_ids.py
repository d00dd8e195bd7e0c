"""Golden run ids: every packaged config's ids, as the command line, a study and a baseline name them, and every
run id of the compute-allocation study's plans, pinned in tests/golden_run_ids.json. A run id names a folder that
holds finished work: a change that moves one would retrain (or, worse, reuse) runs silently. An intended change
regenerates the file (`python -m tests.test_run_ids --write`) and says so in its commit.

The file was first written from commit 53a0407 (before issue 20), so the ids it holds are the ones run folders made
until then carry."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from salt.config import load_config, resolve_config
from salt.schema import RunConfig

GOLDEN = Path(__file__).with_name("golden_run_ids.json")
CONFIGS = Path(__file__).resolve().parents[1] / "salt" / "configs"
TEACHER = "objective.teacher_checkpoint=teacher-placeholder"   # configs whose method needs a teacher
STUDY_PRESETS = ("default", "small", "paper")


def config_ids() -> dict[str, dict[str, str]]:
    """Per packaged run config: the CLI run id, the study run id (teacher named "teacher-x") and both baselines'."""
    from salt.eval.evaluate import baseline_run_id
    from salt.study.spec import spec_run_id
    from salt.train.loop import run_id
    ids = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        if path.stem.endswith("_common") or path.stem == "micro":   # layers, not runs
            continue
        base = load_config(RunConfig, [resolve_config(path.stem)], [TEACHER]) if "student" in path.stem else \
            load_config(RunConfig, [resolve_config(path.stem)])
        ids[path.stem] = {"cli": run_id(base), "study": spec_run_id(base, teacher_id="teacher-x"),
                          "random_init": baseline_run_id("random_init", base),
                          "raw_pixels": baseline_run_id("raw_pixels", base)}
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


if __name__ == "__main__":   # python -m tests.test_run_ids --write: pin the ids this code gives
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_run_ids --write")
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
