"""Student scaling: student size x student budget at one fixed teacher (and V-JEPA at the same sizes and
budgets), for accuracy-vs-compute and L(N, D) fits.

    python studies/scaling.py --preset default
    python studies/scaling.py --preset paper --dry-run
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.study.cli import study_main
from salt.study.spec import PlanBuilder, StudyPlan
from studies.reporting import study_hooks

STUDY = "scaling"


@dataclass
class ScalingDials:
    teacher_size: str
    teacher_steps: int
    student_sizes: list[str]
    student_steps: list[int]
    with_vjepa: bool = True
    teacher_config: str = "tiny_teacher"
    student_config: str = "tiny_student"
    vjepa_config: str = "tiny_vjepa"
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    evaluation: str = "smoke"


def build(dials: ScalingDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    for seed in dials.seeds:
        teacher = b.run(dials.teacher_config, [f"model.size={dials.teacher_size}", f"train.steps={dials.teacher_steps}",
                                               f"train.seed={seed}"], role="teacher",
                        labels={"group": "pixel", "teacher_size": dials.teacher_size,
                                "teacher_steps": dials.teacher_steps, "seed": seed})
        for size in dials.student_sizes:
            for steps in dials.student_steps:
                common = [f"model.size={size}", f"train.steps={steps}", f"train.seed={seed}"]
                labels = {"student_size": size, "student_steps": steps, "seed": seed}
                b.student(dials.student_config, teacher, common,
                          labels={"group": "salt", "teacher_size": dials.teacher_size,
                                  "teacher_steps": dials.teacher_steps, "teacher_run_id": teacher.run_id, **labels})
                if dials.with_vjepa:
                    b.run(dials.vjepa_config, common, role="student", labels={"group": "vjepa", **labels})
    return b.plan()


PRESETS = {
    "smoke": ScalingDials(teacher_size="micro", teacher_steps=4, student_sizes=["micro"], student_steps=[4, 8],
                          teacher_config="micro_teacher", student_config="micro_student", vjepa_config="micro_vjepa"),
    "default": ScalingDials(teacher_size="micro", teacher_steps=100, student_sizes=["micro", "tiny"],
                            student_steps=[50, 150], overrides=["train.batch_size=16", "optim.warmup_steps=20"]),
    "small": ScalingDials(teacher_size="tiny", teacher_steps=1000, student_sizes=["micro", "tiny", "mini"],
                          student_steps=[500, 1000, 2000], evaluation="fast"),
    # ViT-L teacher (40k steps); students B/L/H at 40k-160k steps.
    "paper": ScalingDials(teacher_size="large", teacher_steps=40_000, student_sizes=["base", "large", "huge"],
                          student_steps=[40_000, 80_000, 160_000], teacher_config="paper_vitl_teacher",
                          student_config="paper_vitl_student", vjepa_config="paper_vitl_vjepa2",
                          evaluation="systematic"),
}


def main(argv: list[str] | None = None) -> int:
    return study_main(STUDY, PRESETS, build, argv, hooks=study_hooks(STUDY))


if __name__ == "__main__":
    sys.exit(main())
