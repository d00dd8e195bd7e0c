"""Synthetic studies where a label-free loss chooses, with a known answer: which teacher (a teacher-selection study,
`write_selection_study`: the design of studies/teacher_selection.py) and which checkpoint (`write_checkpoint_study`:
runs whose accuracy peaks mid-run). Folders in the study layer's layout, written with analysis.synthetic's helpers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.synthetic import SIZES, Chinchilla, add_run, eval_record, noisy, study_json, write_done
from salt.layout import StudyLayout



@dataclass
class SelectionSpec:
    """Teacher runs (sizes x mask kinds x seeds), a student of each teacher checkpoint, every checkpoint of
    both evaluated. The truth:
    - teacher error at step D: the L(N, D) law `pixel` plus `mask_penalty[mask]`;
    - a student's final error = student_floor + teacher_gain * its teacher's error + a student-only term
      (sd `compat_sd`: how well this student fits this teacher, which no teacher metric sees);
    - along a student's training its error falls from `start_error`: e(f) = final + (start - final) exp(-rate f);
    - the student's loss, held-out and logged per step (metrics.jsonl, batch noise `batch_noise`), is
      loss_offset + loss_slope * e(f): it predicts accuracy within a teacher (along f) and across teachers;
      losses.train / train_early come from the log through salt.losslog.train_losses, as evaluate_run's do;
    - teacher RankMe, LiDAR and alpha-ReQ are noise, drawn afresh at every teacher checkpoint.
    """
    teacher_sizes: tuple[str, ...] = ("tiny", "mini")
    teacher_masks: tuple[str, ...] = ("multiblock", "random")
    teacher_checkpoints: tuple[int, ...] = (40, 120)     # the last is the teacher's length
    student_steps: int = 100
    student_checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    seeds: int = 1
    pixel: Chinchilla = Chinchilla(0.10, 0.10, 0.5, 0.02, 0.5)    # errors 0.2-0.6 over 40-2,000 steps
    mask_penalty: dict = field(default_factory=lambda: {"multiblock": 0.08})
    student_floor: float = 0.1
    teacher_gain: float = 0.8
    compat_sd: float = 0.05
    start_error: float = 0.75
    rate: float = 4.0
    loss_offset: float = 0.1
    loss_slope: float = 0.8
    loss_noise: float = 0.005
    batch_noise: float = 0.02
    log_every: int = 1
    noise: float = 0.03
    step_flops: float = 2.0e12
    evaluation: str = "fast"
    device: str = "cpu"
    study: str = "teacher_selection"

    def teacher_error(self, size: str, mask: str, step: int) -> float:
        return float(self.pixel(SIZES[size], step)) + self.mask_penalty.get(mask, 0.0)

    def student_error(self, final: float, fraction: float) -> float:
        return final + (self.start_error - final) * float(np.exp(-self.rate * fraction))


def _selection_plan(spec: SelectionSpec) -> list[dict]:
    runs = []
    length = max(spec.teacher_checkpoints)
    for seed in range(spec.seeds):
        for size in spec.teacher_sizes:
            for mask in spec.teacher_masks:
                tid = f"pixel-{size}-{mask}-s{seed}"
                t_flops = length * spec.step_flops * SIZES[size] / SIZES["tiny"]
                runs.append(dict(run_id=tid, method="pixel", role="teacher", depends_on=[], size=size, mask=mask,
                                 n_params=SIZES[size], steps=length, flops_run=t_flops, flops_teacher=0.0,
                                 eval_steps=sorted(spec.teacher_checkpoints),
                                 labels=dict(group="pixel", teacher_size=size, teacher_mask=mask,
                                             teacher_steps=length, seed=seed)))
                for step in spec.teacher_checkpoints:
                    runs.append(dict(run_id=f"salt-{size}-{mask}-t{step}-s{seed}", method="salt", role="student",
                                     depends_on=[tid], teacher=tid, teacher_steps=step, size=size, mask=mask,
                                     steps=spec.student_steps, flops_run=spec.student_steps * 2 * spec.step_flops,
                                     flops_teacher=t_flops * step / length,
                                     labels=dict(group="salt", teacher_size=size, teacher_mask=mask,
                                                 teacher_steps=step, student_size="tiny",
                                                 student_steps=spec.student_steps, teacher_run_id=tid, seed=seed)))
    return runs


def write_selection_study(out_dir, spec: SelectionSpec | None = None, seed: int = 0) -> Path:
    """Write a synthetic teacher-selection study folder (the layout studies/teacher_selection.py produces,
    with known laws: SelectionSpec). Returns the folder."""
    from salt.eval.record import write_record
    from salt.losslog import train_losses
    from salt.layout import read_metrics

    spec = spec or SelectionSpec()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    study = study_json(spec.study, spec.evaluation)
    for run in _selection_plan(spec):
        layout = add_run(out, study, run, spec.evaluation, {})
        if run["role"] == "teacher":
            for step in run["eval_steps"]:
                error = spec.teacher_error(run["size"], run["mask"], step)
                metrics = {"rankme": 30 + 5 * rng.standard_normal(), "lidar": 20 + 4 * rng.standard_normal(),
                           "alpha_req": 1.5 + 0.2 * rng.standard_normal()}
                losses = {"heldout": spec.loss_offset + spec.loss_slope * error + spec.loss_noise * rng.standard_normal()}
                write_record(layout.root, eval_record(spec.evaluation, run, step, 1 - float(noisy(error, rng, spec.noise)),
                                                       losses, metrics))
        else:
            teacher_error = spec.teacher_error(run["size"], run["mask"], run["teacher_steps"])
            final = spec.student_floor + spec.teacher_gain * teacher_error + spec.compat_sd * rng.standard_normal()
            with layout.metrics.open("w") as f:
                for step in range(0, run["steps"], spec.log_every):
                    loss = spec.loss_offset + spec.loss_slope * spec.student_error(final, (step + 1) / run["steps"])
                    f.write(json.dumps({"step": step, "loss": loss + spec.batch_noise * rng.standard_normal()}) + "\n")
            log = read_metrics(layout.metrics)
            for fraction in spec.student_checkpoints:
                step = max(1, round(fraction * run["steps"]))
                error = spec.student_error(final, step / run["steps"])
                losses = {"heldout": spec.loss_offset + spec.loss_slope * error + spec.loss_noise * rng.standard_normal(),
                          **train_losses(log, step, run["steps"])}
                write_record(layout.root, eval_record(spec.evaluation, run, step, 1 - float(noisy(error, rng, spec.noise)),
                                                       losses, {"rankme": 25 + 5 * rng.standard_normal()}))
        write_done(layout, run, spec.device)
    StudyLayout(out).plan.write_text(json.dumps(study, indent=1))
    return out


@dataclass
class CheckpointSpec:
    """Runs of one recipe (V-JEPA, one budget, `runs` seeds), every checkpoint of `checkpoints` evaluated. The
    truth: a run's error along training peaks in accuracy at a fraction drawn from `peak` (error = floor_run +
    curvature * (f - peak_run)^2; floor_run = floor + floor_sd * N(0, 1)), so the last checkpoint is not the best.
    `tracks`: the training and held-out losses are loss_offset + loss_slope * error (+ loss_noise): the loss finds
    the probe's best checkpoint and run. Else the loss falls along training whatever the accuracy does
    (loss_offset + 0.5 exp(-3 f)) and differs between runs at random (sd floor_sd * loss_slope): choosing by it
    takes the last checkpoint and a random run."""
    tracks: bool = True
    runs: int = 6
    steps: int = 1000
    checkpoints: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8, 1.0)
    peak: tuple[float, float] = (0.3, 0.7)
    floor: float = 0.3
    floor_sd: float = 0.04
    curvature: float = 0.8
    loss_offset: float = 0.1
    loss_slope: float = 0.8
    loss_noise: float = 0.002
    step_flops: float = 4.0e12
    evaluation: str = "fast"


def write_checkpoint_study(out_dir, spec: CheckpointSpec | None = None, seed: int = 0) -> Path:
    """A study folder of CheckpointSpec's runs (checkpoint choice with a known answer). Returns the folder."""
    from salt.eval.record import write_record

    spec = spec or CheckpointSpec()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    study = study_json("checkpoint_choice", spec.evaluation)
    for s in range(spec.runs):
        run = dict(run_id=f"vjepa-s{s}", method="vjepa", role="student", depends_on=[], steps=spec.steps,
                   flops_run=spec.steps * spec.step_flops, flops_teacher=0.0,
                   labels=dict(group="vjepa", total_steps=spec.steps, student_steps=spec.steps, seed=s))
        layout = add_run(out, study, run, spec.evaluation, {})
        floor, peak, level = spec.floor + spec.floor_sd * rng.standard_normal(), rng.uniform(*spec.peak), \
            spec.floor_sd * spec.loss_slope * rng.standard_normal()
        for fraction in spec.checkpoints:
            error = floor + spec.curvature * (fraction - peak) ** 2
            loss = (spec.loss_offset + spec.loss_slope * error if spec.tracks
                    else spec.loss_offset + 0.5 * np.exp(-3 * fraction) + level)
            losses = {k: float(loss + spec.loss_noise * rng.standard_normal()) for k in ("train", "heldout")}
            write_record(layout.root, eval_record(spec.evaluation, run, int(round(fraction * spec.steps)),
                                                   1 - error, losses, {"rankme": 20.0}))
        write_done(layout, run, "cpu")
    StudyLayout(out).plan.write_text(json.dumps(study, indent=1))
    return out
