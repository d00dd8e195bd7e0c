"""Teacher masks: which mask kind should the pixel teacher train with? Multiblock (the paper's, V-JEPA's
short- and long-range blocks) against random-token masks (the embedded default, `tiny_teacher.yaml`), each at
two learning rates, every teacher given the same compute (its steps = the teacher budget in FLOPs divided by its
own step's FLOPs: the masks keep different numbers of context tokens), and each distilled into the same SALT
student recipe: a mask kind is judged by the student its best teacher produces, at equal total compute.

    python studies/teacher_masks.py --preset default --dry-run   # the plan and its estimated wall time
    python studies/teacher_masks.py --preset default             # ~2 h on 2 idle CPU cores (a benchmark)
    python studies/teacher_masks.py --preset smoke --executor debug

When every run is done it prints, per mask kind, the better of its learning rates (by its students' mean
accuracy over seeds) and whether the two best teachers' students can be told apart (analysis.replicates).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.study.cli import study_main
from salt.study.spec import PlanBuilder, StudyError, StudyPlan
from studies.reporting import study_hooks, summarize

STUDY = "teacher_masks"


@dataclass
class TeacherMaskDials:
    teacher_flops: float                    # each teacher's training FLOPs ("run" accounting)
    student_steps: int                      # every student's steps (the same recipe, so the same FLOPs)
    teacher_masks: list[str] = field(default_factory=lambda: ["multiblock", "random"])   # mask.kind
    teacher_lrs: list[float] = field(default_factory=lambda: [1.0e-3, 3.0e-3])          # optim.lr of the teacher
    teacher_size: str = "tiny"
    student_size: str = "tiny"
    teacher_config: str = "tiny_teacher"
    student_config: str = "tiny_student"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    overrides: list[str] = field(default_factory=list)
    evaluation: str = "fast"
    baselines: bool = True


def build(dials: TeacherMaskDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    if not dials.teacher_masks or not dials.teacher_lrs:
        raise StudyError("teacher_masks and teacher_lrs must each name at least one value")
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    size = [f"model.size={dials.teacher_size}"]
    # steps from each mask's step FLOPs without a seed override: every seed of a teacher gets the same steps
    steps = {mask: round(dials.teacher_flops / b.step_flops(dials.teacher_config, [*size, f"mask.kind={mask}"]))
             for mask in dials.teacher_masks}
    short = [mask for mask, n in steps.items() if n < 1]
    if short:
        raise StudyError(f"teacher_flops {dials.teacher_flops:.3g} buys no step of a {short[0]}-mask teacher")
    for seed in dials.seeds:
        for mask in dials.teacher_masks:
            for lr in dials.teacher_lrs:
                common = {"teacher_mask": mask, "teacher_lr": lr, "teacher_steps": steps[mask],
                          "teacher_size": dials.teacher_size, "total_flops": dials.teacher_flops, "seed": seed}
                teacher = b.run(dials.teacher_config, [*size, f"mask.kind={mask}", f"optim.lr={lr}",
                                                       f"train.steps={steps[mask]}", f"train.seed={seed}"],
                                role="teacher", labels={"group": "pixel", **common})
                b.student(dials.student_config, teacher, [f"model.size={dials.student_size}",
                                                          f"train.steps={dials.student_steps}", f"train.seed={seed}"],
                          labels={"group": "salt", **common, "student_steps": dials.student_steps,
                                  "student_size": dials.student_size, "teacher_run_id": teacher.run_id})
    plan = b.plan()
    if dials.baselines:
        student = next(s for s in plan.runs if s.role == "student")
        for kind in ("random_init", "raw_pixels"):
            b.baseline(kind, like=student)
        plan = b.plan()
    return plan


PRESETS = {
    "smoke": TeacherMaskDials(teacher_flops=4e9, student_steps=4, teacher_size="micro", student_size="micro",
                              teacher_config="micro_teacher", student_config="micro_student", seeds=[0],
                              evaluation="smoke"),
    # The measurement on the embedded data: every teacher gets 1.5e13 FLOPs (~990 steps of a random-mask tiny
    # teacher at batch 32: past the ~400 steps after which it leaves the mean-prediction plateau), every student
    # 1,000 steps; 2 masks x 2 learning rates x 2 seeds = 8 teachers and 8 students, `fast` evaluation.
    "default": TeacherMaskDials(teacher_flops=1.5e13, student_steps=1000),
}


def main(argv: list[str] | None = None) -> int:
    return study_main(STUDY, PRESETS, build, argv, hooks=study_hooks(STUDY, summarize))


if __name__ == "__main__":
    sys.exit(main())
