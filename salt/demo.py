"""The embedded-data demo: pixel teacher -> SALT student, plus a V-JEPA baseline, then linear probes of each
against a random-init encoder and raw pixels. It is a small study (salt.study) run like any other: `demo_plan` maps
a preset to a `StudyPlan` (pure), `run_plan` trains and evaluates it, and the table is read back from the records
the runs wrote. The runs train in this process, one after another (submitit's debug executor: progress bars on the
terminal, no process started per run). Re-running skips finished runs and resumes interrupted ones, as a study
does: OUT/study.json, run folders OUT/runs/<run id>/, baselines OUT/runs/baselines/<id>/."""
from __future__ import annotations

import contextlib
import pdb
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from salt.errors import UserError
from salt.eval.record import read_record
from salt.io import atomic_write_json
from salt.layout import StudyLayout
from salt.study.cli import status_table
from salt.study.launch import LaunchOptions, run_plan
from salt.study.spec import PlanBuilder, RunSpec, StudyPlan
from salt.study.state import RunState


@dataclass(frozen=True)
class DemoPreset:
    config_prefix: str            # salt/configs/{prefix}_{teacher,student,vjepa}.yaml
    teacher_steps: int
    student_steps: int
    vjepa_steps: int
    protocol: str = "fast"        # evaluation protocol (salt.eval.evaluate.EVAL_PROTOCOLS)
    overrides: list = field(default_factory=list)   # applied to all three runs


DEMO_PRESETS = {
    # ~minutes on 2 CPU cores: tests the pipeline, not the science.
    "tiny": DemoPreset("tiny", teacher_steps=450, student_steps=250, vjepa_steps=250),
    # ~40 minutes on 2 CPU cores: the teacher leaves the mean-prediction plateau (loss / mean-prediction loss
    # 0.99 at step 250, 0.71 at 1500, 0.63 at 2500; docs/results.md, History) and the student has a teacher worth copying.
    "small": DemoPreset("tiny", teacher_steps=2500, student_steps=2000, vjepa_steps=1500),
    # seconds: for the tests (the packaged micro setting, salt/configs/micro.yaml).
    "smoke": DemoPreset("micro", teacher_steps=4, student_steps=4, vjepa_steps=4, protocol="smoke"),
}


# the table's rows, in order: the method of each run of the plan (one run each) -> its row's name
ROWS = {"raw_pixels": "raw pixels", "random_init": "random init", "pixel": "pixel teacher", "salt": "SALT student",
        "vjepa": "V-JEPA"}
LABEL_WORDS = {"appearance": "app."}   # a probe's label in a column header (others: the label's own name)
# In-process; every invocation tries each unfinished run again, as the demo always did (a study's cap on attempts
# guards unattended resubmission; here each attempt is the user's own command).
DEMO_LAUNCH = LaunchOptions(executor="debug", max_attempts=sys.maxsize)


def demo_plan(preset_name: str, out_dir: str | Path, extra: list[str] = ()) -> StudyPlan:
    """The preset's dials -> the demo's plan (pure: no files, no jobs): the teacher, its SALT student and V-JEPA
    (trained in that order), and the raw-pixel and random-init baselines of the teacher's data and size.
    `extra` (key=value) applies to every run."""
    if preset_name not in DEMO_PRESETS:
        raise ValueError(f"unknown demo preset {preset_name!r}; valid: {', '.join(DEMO_PRESETS)}")
    preset = DEMO_PRESETS[preset_name]
    b = PlanBuilder("demo", preset_name, out_dir, evaluation=preset.protocol, overrides=[*preset.overrides, *extra],
                    progress=True)
    teacher = b.run(f"{preset.config_prefix}_teacher", [f"train.steps={preset.teacher_steps}"])
    b.student(f"{preset.config_prefix}_student", teacher, [f"train.steps={preset.student_steps}"])
    b.run(f"{preset.config_prefix}_vjepa", [f"train.steps={preset.vjepa_steps}"])
    for kind in ("raw_pixels", "random_init"):
        b.baseline(kind, teacher)
    return b.plan()


@contextlib.contextmanager
def _no_post_mortem():
    """submitit's debug executor opens pdb on a failed job; the demo reports the failure as an error instead."""
    post_mortem, pdb.post_mortem = pdb.post_mortem, lambda *args, **kwargs: None
    try:
        yield
    finally:
        pdb.post_mortem = post_mortem


def run_demo(preset_name: str = "tiny", out_dir: str | Path = "runs/demo", extra: list[str] = ()) -> list[dict]:
    """Plan, run what is not done, print the table (and write it to OUT/demo_results.json); -> its rows. A run
    that failed: the study's status table, then a UserError."""
    t0 = time.perf_counter()
    plan = demo_plan(preset_name, out_dir, list(extra))
    with _no_post_mortem():
        states = run_plan(plan, DEMO_LAUNCH)
    if any(s["state"] is not RunState.DONE for s in states.values()):
        print(status_table(plan, DEMO_LAUNCH, states))
        raise UserError(f"the demo in {out_dir} did not finish: the runs above that are not done say why (their "
                        "logs: the log / error column); the same command resumes them")
    rows = demo_rows(plan)
    trained = [spec for spec in plan.runs if spec.role != "baseline"]
    t_train = sum(spec.layout.read_done()["wall_time_s"] for spec in trained)   # as the runs measured it
    result = {"preset": preset_name, "rows": rows, "train_wall_s": t_train,
              "total_wall_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}
    table = Path(out_dir) / "demo_results.json"
    atomic_write_json(table, result)
    print(format_table(rows))
    print(HEADLINE)
    print(f"\ntraining {t_train:.0f} s (the runs' done.json), total {result['total_wall_s']:.0f} s; records in each "
          f"run's evals/ folder under {StudyLayout(out_dir).runs} (baselines too); table in {table}")
    return rows


def _final_record(spec: RunSpec):
    """The record of the run's last checkpoint (a baseline's: step 0) under the plan's evaluation."""
    step = 0 if spec.role == "baseline" else spec.config.train.steps
    return read_record(spec.layout.record(step, spec.evaluation))


def demo_rows(plan: StudyPlan) -> list[dict]:
    """The table's rows, read back from the records the plan's runs wrote."""
    by_method = {spec.method: spec for spec in plan.runs}
    return [summary_row(name, _final_record(by_method[method])) for method, name in ROWS.items()]


HEADLINE = ("\nHeadline: the 10-shot linear probe on per-time-step pooled features (motion). On small synthetic data a "
            "label-trained probe with all labels learns from random features too (the random init row above), so "
            "full-label and attentive columns are context, not the verdict.")


def summary_row(name: str, record) -> dict:
    """The demo's view of one evaluation record."""
    row = {"encoder": name, "train_steps": record.checkpoint_step, "flops_total": record.flops_total,
           "heldout_loss": record.losses.get("heldout", float("nan")), "rankme": record.metrics["rankme"],
           "lidar": record.metrics.get("lidar", float("nan")), "alpha_req": record.metrics.get("alpha_req", float("nan"))}
    for p in record.probes:
        if p.probe == "knn":
            continue
        key = f"{p.probe}_{p.label}_{p.shots or 'all'}"
        row[key], row[key + "_std"] = p.test_accuracy, p.test_std
    return row


def probe_header(key: str) -> str:
    """A probe column of `summary_row` (probe_label_shots) in words: linear_motion_10 -> "motion 10-shot",
    linear_motion_all -> "motion all", attentive_appearance_all -> "attentive app."."""
    probe, rest = key.split("_", 1)
    label, shots = rest.rsplit("_", 1)
    words = LABEL_WORDS.get(label, label)
    if probe == "linear":
        return f"{words} {shots}-shot" if shots != "all" else f"{words} all"
    return f"{probe} {words}" + (f" {shots}-shot" if shots != "all" else "")


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table (what the demo prints, and docs/results.md and the README quote); a value a
    row does not have (raw pixels' held-out loss, a probe not run) is "-"."""
    keys = sorted({k for r in rows for k in r if k.startswith(("linear_", "attentive_")) and not k.endswith("_std")},
                  key=lambda k: (k.startswith("attentive"), k.endswith("_all"), k))
    header = ["encoder", "steps", "PFLOPs", "held-out loss", "RankMe", "LiDAR", "alpha", *map(probe_header, keys)]

    def number(value: float, digits: int) -> str:
        return "-" if value != value else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["encoder"], str(r["train_steps"]), number(r["flops_total"] / 1e15, 4), number(r["heldout_loss"], 4),
                 number(r["rankme"], 1), number(r["lidar"], 1), number(r["alpha_req"], 2),
                 *(f"{r[k]:.3f}" + (f" ± {r[k + '_std']:.3f}" if r.get(k + "_std") else "") if k in r else "-"
                   for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
