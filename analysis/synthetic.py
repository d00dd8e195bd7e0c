"""Synthetic study folders drawn from known laws, so the analysis can be checked against the truth.

The folder has the study layer's layout (study.json, runs/<id>/done.json, metrics.jsonl, evals/*.json
written by salt.eval.record.write_record). The truth:
- pixel teacher error = E + A/(N/1e6)^alpha + B/(D/1e3)^beta (N encoder parameters, D steps): L(N, D);
- V-JEPA error = E + k*(C/1e15)^-c (C total FLOPs);
- SALT student error = E + k*(C/1e15)^-c + kappa*(ln share - ln optimum_share)^2: a known optimal share;
- student held-out loss = loss_offset + loss_slope * error (+ noise): a known monotone metric -> accuracy
  relation; teacher RankMe / LiDAR / alpha-ReQ are unrelated noise.
`share_runs` and `power_law_runs` are no folders: one budget's final results (calibrating the allocation verdict)
and one curve's runs (forecasts) as frames. The studies where a loss chooses (teacher selection, checkpoint choice):
analysis.synthetic_choice, written with the helpers here (`eval_record`, `add_run`, `write_done`).
Noise is multiplicative on the error (log-normal, `noise`), as the log-space fits assume.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from salt.layout import RunLayout, StudyLayout

FLOP_UNIT = 1e15      # compute laws are stated in units of C / FLOP_UNIT
PARAM_UNIT = 1e6
STEP_UNIT = 1e3
TARGET = "probe.linear.time.motion.10"
SIZES = {"micro": 0.1e6, "tiny": 0.8e6, "mini": 2.7e6, "small": 5.4e6}


@dataclass(frozen=True)
class Saturating:
    """error = E + k * (C / unit)^-c."""
    E: float
    k: float
    c: float
    unit: float = FLOP_UNIT

    def __call__(self, C):
        return self.E + self.k * (np.asarray(C, dtype=float) / self.unit) ** -self.c

    @property
    def k_natural(self) -> float:
        """k for C in FLOPs (what the fit reports)."""
        return self.k * self.unit ** self.c


@dataclass(frozen=True)
class Chinchilla:
    """error = E + A / (N / PARAM_UNIT)^alpha + B / (D / STEP_UNIT)^beta."""
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def __call__(self, N, D):
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A * (N / PARAM_UNIT) ** -self.alpha + self.B * (D / STEP_UNIT) ** -self.beta

    @property
    def natural(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A * PARAM_UNIT ** self.alpha, "alpha": self.alpha,
                "B": self.B * STEP_UNIT ** self.beta, "beta": self.beta}


@dataclass
class SyntheticSpec:
    """The design (budgets x shares x seeds, teacher sizes) and the true laws of a synthetic study."""
    budgets: tuple[int, ...] = (1000, 2000, 4000, 8000)
    shares: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
    seeds: int = 2
    vjepa_seeds: int | None = None              # default: seeds
    teacher_sizes: tuple[str, ...] = ("tiny",)
    optimum_share: float = 0.2
    kappa: float = 0.02
    salt: Saturating = Saturating(0.20, 0.45, 0.40)
    vjepa: Saturating = Saturating(0.28, 0.40, 0.35)
    pixel: Chinchilla = Chinchilla(0.15, 0.15, 0.5, 0.12, 0.35)
    loss_offset: float = 0.1
    loss_slope: float = 0.8
    noise: float = 0.03                         # sd of log error
    loss_noise: float = 0.005
    teacher_step_flops: float = 2.0e12          # per step of a tiny teacher (scales with its parameters)
    student_step_flops: float = 4.0e12
    checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # evaluated fractions of each run
    evaluation: str = "fast"
    device: str = "cuda"
    study: str = "compute_allocation"
    extra_labels: dict = field(default_factory=dict)


def noisy(error, rng, sd):
    """error x exp(sd * N(0, 1)), kept inside (0, 1)."""
    return np.clip(np.asarray(error) * np.exp(sd * rng.standard_normal(np.shape(error))), 1e-4, 1 - 1e-4)


def _run_plan(spec: SyntheticSpec) -> list[dict]:
    """Every run of the design: teachers (pixel), students (salt) and V-JEPA baselines."""
    runs = []
    for budget in spec.budgets:
        for seed in range(spec.vjepa_seeds or spec.seeds):
            runs.append(dict(run_id=f"vjepa-b{budget}-s{seed}", method="vjepa", role="student", depends_on=[],
                             labels=dict(group="vjepa", total_steps=budget, student_steps=budget, teacher_steps=0,
                                         student_size="tiny", seed=seed),
                             steps=budget, flops_run=budget * spec.student_step_flops, flops_teacher=0.0))
        for size in spec.teacher_sizes:
            n_params = SIZES[size]
            for share in spec.shares:
                t_steps = max(1, int(round(share * budget)))
                s_steps = budget - t_steps
                t_flops = t_steps * spec.teacher_step_flops * n_params / SIZES["tiny"]
                for seed in range(spec.seeds):
                    tid = f"pixel-{size}-b{budget}-r{share:g}-s{seed}"
                    runs.append(dict(run_id=tid, method="pixel", role="teacher", depends_on=[], size=size,
                                     labels=dict(group="pixel", total_steps=t_steps, teacher_steps=t_steps,
                                                 teacher_size=size, seed=seed, allocation_budget=budget),
                                     steps=t_steps, flops_run=t_flops, flops_teacher=0.0, n_params=n_params))
                    runs.append(dict(run_id=f"salt-{size}-b{budget}-r{share:g}-s{seed}", method="salt",
                                     role="student", depends_on=[tid], teacher=tid, teacher_steps=t_steps,
                                     labels=dict(group="salt", total_steps=budget, teacher_steps=t_steps,
                                                 student_steps=s_steps, teacher_share=share, teacher_size=size,
                                                 student_size="tiny", teacher_run_id=tid, seed=seed),
                                     steps=s_steps, flops_run=s_steps * spec.student_step_flops,
                                     flops_teacher=t_flops, share=share, n_params=n_params))
    runs.append(dict(run_id="random_init-tiny", method="random_init", role="baseline", depends_on=[],
                     labels=dict(group="random_init"), steps=0, flops_run=0.0, flops_teacher=0.0))
    return runs


def _true_error(spec: SyntheticSpec, run: dict, fraction: float) -> float:
    if run["method"] == "random_init":
        return 0.7
    if run["method"] == "pixel":
        return float(spec.pixel(run["n_params"], fraction * run["steps"]))
    C = run["flops_teacher"] + fraction * run["flops_run"]
    if run["method"] == "vjepa":
        return float(spec.vjepa(C))
    return float(spec.salt(C) + spec.kappa * (np.log(run["share"]) - np.log(spec.optimum_share)) ** 2)


def _record(spec: SyntheticSpec, run: dict, step: int, rng: np.random.Generator, teacher_noise: np.ndarray):
    """The EvalRecord of `run` at `step`, drawn from the true laws."""
    steps = max(run["steps"], 1)
    error = _true_error(spec, run, step / steps)
    accuracy = 1 - float(noisy(error, rng, spec.noise))
    loss = spec.loss_offset + spec.loss_slope * error + spec.loss_noise * rng.standard_normal()
    t = teacher_noise
    trained = run["role"] != "baseline"
    metrics = ({"rankme": 30 + 5 * t[0], "lidar": 20 + 4 * t[1], "alpha_req": 1.5 + 0.2 * t[2]}
               if run["role"] == "teacher" else {"rankme": 25 + 5 * rng.standard_normal()})
    losses = {"heldout": loss, "train": loss + 0.01 * rng.standard_normal()} if trained else {}
    return eval_record(spec.evaluation, run, step, accuracy, losses, metrics), loss


def eval_record(evaluation: str, run: dict, step: int, accuracy: float, losses: dict, metrics: dict):
    """The EvalRecord of `run` at `step` with the given scores (FLOPs pro rata of the run's steps)."""
    from salt.eval.record import EvalRecord, ProbeScore

    steps = max(run["steps"], 1)
    flops_run = run["flops_run"] * step / steps
    teacher = run.get("teacher", "")
    return EvalRecord(
        run_id=run["run_id"], method=run["method"], stage=run["role"] if run["role"] != "baseline" else "baseline",
        checkpoint_step=step, steps_total=run["steps"], evaluation=evaluation,
        seed=run["labels"].get("seed", 0), model_size=run.get("size", "tiny"),
        params={"encoder": int(run.get("n_params", SIZES["tiny"])) if run["role"] == "teacher" else int(SIZES["tiny"])},
        teacher_run_id=teacher, teacher_step=run.get("teacher_steps", -1) if teacher else -1,
        flops_teacher_stage=run["flops_teacher"], flops_run=flops_run, flops_total=run["flops_teacher"] + flops_run,
        losses=losses, metrics=metrics,
        probes=[ProbeScore("linear", "time", "motion", 10, "lbfgs", accuracy, 0.01),
                ProbeScore("attentive", "tokens", "motion", 0, "fast", min(1.0, accuracy + 0.05))],
        wall_time_s=1.0, hardware="synthetic", created_at="2025-01-01T00:00:00+00:00")


def _write_log(path: Path, final_loss: float, steps: int, rng: np.random.Generator) -> None:
    """metrics.jsonl: a loss curve decaying to the final loss (its early part is the short-run proxy)."""
    start = final_loss + 0.5
    with path.open("w") as f:
        for s in np.unique(np.linspace(0, steps - 1, 20).astype(int)):
            value = final_loss + (start - final_loss) * np.exp(-5 * s / steps)
            f.write(json.dumps({"step": int(s), "loss": float(value + 0.002 * rng.standard_normal())}) + "\n")


def write_synthetic_study(out_dir, spec: SyntheticSpec | None = None, seed: int = 0, *,
                          skip_done: tuple[str, ...] = (), skip_records: tuple[str, ...] = ()) -> Path:
    """Write a synthetic study folder; runs named in skip_done / skip_records get no done.json / no records
    (to exercise the incompleteness errors). Returns the folder."""
    from salt.eval.record import write_record

    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    plan = _run_plan(spec)
    study = study_json(spec.study, spec.evaluation)
    for run in plan:
        layout = add_run(out, study, run, spec.evaluation, spec.extra_labels)
        folder = layout.root
        teacher_noise = rng.standard_normal(4)
        steps = sorted({max(1, int(round(f * run["steps"]))) for f in spec.checkpoints}) if run["steps"] else [0]
        for step in steps:
            record, final_loss = _record(spec, run, step, rng, teacher_noise)
            if run["run_id"] not in skip_records:
                write_record(folder, record)
        if run["role"] == "baseline":
            continue
        _write_log(layout.metrics, final_loss, run["steps"], rng)
        if run["run_id"] not in skip_done:
            write_done(layout, run, spec.device)
    StudyLayout(out).plan.write_text(json.dumps(study, indent=1))
    return out


def study_json(study: str, evaluation: str) -> dict:
    return {"schema_version": 1, "study": study, "preset": "synthetic", "runs": [], "evaluation": evaluation}


def add_run(out: Path, study: dict, run: dict, evaluation: str, extra_labels: dict) -> RunLayout:
    """List `run` in the plan (study.json) and make its folder; -> its layout."""
    from analysis.collect import run_layout

    layout = run_layout(out, run)
    layout.root.mkdir(parents=True, exist_ok=True)
    study["runs"].append({"run_id": run["run_id"], "method": run["method"], "role": run["role"],
                          "depends_on": run["depends_on"], "labels": {**run["labels"], **extra_labels},
                          "evaluation": evaluation, "estimated_flops": run["flops_run"],
                          "estimated_flops_total": run["flops_teacher"] + run["flops_run"]})
    return layout


def write_done(layout: RunLayout, run: dict, device: str) -> None:
    layout.write_done({"run_id": run["run_id"], "method": run["method"], "steps": run["steps"],
                       "wall_time_s": run["flops_run"] / 1e11, "device": device,
                       "flops": {"run": run["flops_run"], "teacher_stage": run["flops_teacher"],
                                 "total": run["flops_teacher"] + run["flops_run"]}})


# ---------------------------------------------------------------------------------------------------------
# Frames (no folder) with a known answer: the allocation verdict's calibration, forecasts.

SHARE_RUNS_TARGET = "acc"


def share_runs(seed: int, gap: float, shares=(0.1, 0.2, 0.4, 0.6), seeds: int = 2, sd: float = 0.06,
               reference: float = 0.6) -> pd.DataFrame:
    """One budget's final results, one row per run: SALT at each teacher share with true accuracy `reference` +
    `gap`, and V-JEPA at `reference`, `seeds` runs each with seed sd `sd` (column SHARE_RUNS_TARGET): the input
    `analysis.replicates.replicate_means` takes."""
    rng = np.random.default_rng(seed)
    runs = [("salt", share, reference + gap) for share in shares] + [("vjepa", np.nan, reference)]
    return pd.DataFrame([{"group": group, "budget": 5e13, "teacher_share": share, "flops_total": 5e13,
                          "run_key": f"{group}-{share}-{s}", SHARE_RUNS_TARGET: mean + sd * rng.standard_normal()}
                         for group, share, mean in runs for s in range(seeds)])


def power_law_runs(seed: int, *, budgets=(1000, 2000, 4000, 8000), seeds: int = 2,
                   law: Saturating = Saturating(0.20, 0.45, 0.40), noise: float = 0.03, loss_offset: float = 0.1,
                   loss_slope: float = 0.8, loss_noise: float = 0.005, step_flops: float = 4.0e12,
                   checkpoints=(0.5, 1.0)) -> pd.DataFrame:
    """Runs of one curve (group "salt") at each budget (steps; FLOPs = step_flops per step), `seeds` each, every
    checkpoint of `checkpoints` (fractions of the run) evaluated: one row per run x checkpoint with the columns a
    study frame has for forecasting (run_key, budget, flops_total, checkpoint_step, TARGET, losses.train). The
    truth: error = law(FLOPs) x exp(noise * z_run) (a run's seed effect, the same at all its checkpoints), its
    training loss = loss_offset + loss_slope * error + loss_noise * N(0, 1) at each checkpoint."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        for s in range(seeds):
            z = rng.standard_normal()
            for fraction in checkpoints:
                step = int(round(fraction * budget))
                error = float(np.clip(law(step * step_flops) * np.exp(noise * z), 1e-4, 1 - 1e-4))
                rows.append({"run_key": f"salt-b{budget}-s{s}", "run_id": f"salt-b{budget}-s{s}", "group": "salt",
                             "method": "salt", "evaluation": "fast", "budget": budget, "checkpoint_step": step,
                             "steps_total": budget, "flops_total": step * step_flops, TARGET: 1 - error,
                             "losses.train": loss_offset + loss_slope * error + loss_noise * rng.standard_normal()})
    return pd.DataFrame(rows)
