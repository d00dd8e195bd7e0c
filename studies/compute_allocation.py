"""Compute allocation: for each total step budget, split the steps between a pixel teacher and its SALT
student over several teacher budgets; V-JEPA at the same total budgets; each teacher alone is the pixel
baseline. (The paper: ViT-L, 120k/160k/240k total steps, teachers of 20k/40k/80k steps.)

    python studies/compute_allocation.py                      # embedded default, local, < 15 min on 2 CPU cores
    python studies/compute_allocation.py --preset paper --dry-run
    python studies/compute_allocation.py status
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.study.cli import study_main
from salt.study.spec import PlanBuilder, StudyError, StudyPlan
from studies.reporting import study_hooks, summarize

STUDY = "compute_allocation"
METHODS = ("salt", "vjepa", "pixel")


@dataclass
class AllocationDials:
    total_steps: list[int]                  # total budgets, in steps (teacher + student)
    teacher_steps: list[int]                # teacher budgets; the student gets total - teacher
    teacher_size: str = "tiny"
    student_size: str = "tiny"
    teacher_config: str = "tiny_teacher"
    student_config: str = "tiny_student"
    vjepa_config: str = "tiny_vjepa"
    methods: tuple[str, ...] = METHODS
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)   # applied to every run
    evaluation: str = "smoke"
    baselines: bool = True                  # random-init encoder and raw pixels, evaluated once


def build(dials: AllocationDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    unknown = set(dials.methods) - set(METHODS)
    if unknown:
        raise StudyError(f"unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}")
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    sizes = {"teacher_size": dials.teacher_size, "student_size": dials.student_size}
    for seed in dials.seeds:
        for total in dials.total_steps:
            for t_steps in dials.teacher_steps:
                if t_steps >= total or not {"salt", "pixel"} & set(dials.methods):
                    continue
                teacher = b.run(dials.teacher_config, [f"model.size={dials.teacher_size}", f"train.steps={t_steps}",
                                                       f"train.seed={seed}"], role="teacher",
                                labels={"group": "pixel", "total_steps": t_steps, "teacher_steps": t_steps,
                                        "teacher_size": dials.teacher_size, "seed": seed})
                if "salt" in dials.methods:
                    b.student(dials.student_config, teacher,
                              [f"model.size={dials.student_size}", f"train.steps={total - t_steps}",
                               f"train.seed={seed}"],
                              labels={"group": "salt", "total_steps": total, "teacher_steps": t_steps,
                                      "student_steps": total - t_steps, "teacher_share": t_steps / total, **sizes,
                                      "teacher_run_id": teacher.run_id, "seed": seed})
            if "vjepa" in dials.methods:
                b.run(dials.vjepa_config, [f"model.size={dials.student_size}", f"train.steps={total}",
                                           f"train.seed={seed}"], role="student",
                      labels={"group": "vjepa", "total_steps": total, "student_steps": total,
                              "student_size": dials.student_size, "seed": seed})
    plan = b.plan()
    if dials.baselines:
        students = [s for s in plan.runs if s.role == "student"] or plan.runs
        for kind in ("random_init", "raw_pixels"):
            b.baseline(kind, like=students[0])
        plan = b.plan()
    return plan


# Tests: the packaged micro setting (salt/configs/micro.yaml), seconds per run.
PRESETS = {
    "smoke": AllocationDials(total_steps=[8, 12], teacher_steps=[2, 4], teacher_size="micro", student_size="micro",
                             teacher_config="micro_teacher", student_config="micro_student",
                             vjepa_config="micro_vjepa"),
    # The embedded default: the pipeline end to end on 2 CPU cores in minutes; too small to show the paper's effects.
    "default": AllocationDials(total_steps=[150, 300], teacher_steps=[25, 50, 100],
                               overrides=["train.batch_size=16", "optim.warmup_steps=20", "train.log_every=10"]),
    # Long enough for pretraining to show on moving digits (about an hour on 2 CPU cores, minutes on one GPU).
    "small": AllocationDials(total_steps=[3000], teacher_steps=[500, 1000], evaluation="fast"),
    # The paper's grid (ViT-L teacher and student, batch 3072); needs GPUs and --set data.video.list_path=...
    "paper": AllocationDials(total_steps=[120_000, 160_000, 240_000], teacher_steps=[20_000, 40_000, 80_000],
                             teacher_size="large", student_size="large", teacher_config="paper_vitl_teacher",
                             student_config="paper_vitl_student", vjepa_config="paper_vitl_vjepa2",
                             evaluation="systematic", baselines=False),
}


def main(argv: list[str] | None = None) -> int:
    return study_main(STUDY, PRESETS, build, argv, hooks=study_hooks(summarize))


if __name__ == "__main__":
    sys.exit(main())
