"""Teacher selection: several teachers (sizes, checkpoints along their training, mask kinds), each distilled
into the same student recipe, so the analysis can test which label-free teacher metric (teacher loss, RankMe,
LiDAR, alpha-ReQ, the student's early loss, ...) predicts the student's accuracy. Every teacher checkpoint a
student starts from is also evaluated (its metrics are the candidate predictors).

    python studies/teacher_selection.py                       # embedded default (12 runs), then the answer
    python studies/teacher_selection.py --preset paper --dry-run
    python studies/teacher_selection.py --imported-teacher runs/vjepa2-l   # + a released encoder as a teacher
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.study.cli import study_main
from salt.study.spec import PlanBuilder, StudyError, StudyPlan
from studies.reporting import study_hooks, summarize

STUDY = "teacher_selection"


@dataclass
class TeacherSelectionDials:
    teacher_sizes: list[str]
    teacher_steps: int                      # each teacher's full run
    teacher_checkpoints: list[int]          # steps along it that become teachers (the last may equal teacher_steps)
    student_size: str
    student_steps: int
    teacher_masks: list[str] = field(default_factory=lambda: ["multiblock"])   # mask.kind of the teacher runs
    student_eval_points: int = 4            # student checkpoints evaluated (evenly spaced): loss-vs-accuracy within a teacher
    teacher_config: str = "tiny_teacher"
    student_config: str = "tiny_student"
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    evaluation: str = "smoke"
    # finished run folders made elsewhere (released encoders imported with `python -m salt import-encoder`, or
    # earlier runs) that teach the same student recipe beside the trained teachers; evaluate them yourself
    # (`python -m salt eval RUN_DIR`) for their metrics to enter the ranking. Command line: --imported-teacher DIR
    imported_teachers: list[str] = field(default_factory=list)


def build(dials: TeacherSelectionDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    bad = [c for c in dials.teacher_checkpoints if not 0 < c <= dials.teacher_steps]
    if bad:
        raise StudyError(f"teacher_checkpoints {bad} are outside 1..teacher_steps={dials.teacher_steps}")
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    points = max(1, min(dials.student_eval_points, dials.student_steps))
    student_checkpoints = sorted({round(dials.student_steps * (i + 1) / points) for i in range(points)})
    for seed in dials.seeds:
        for size in dials.teacher_sizes:
            for mask in dials.teacher_masks:
                teacher = b.run(dials.teacher_config, [f"model.size={size}", f"train.steps={dials.teacher_steps}",
                                                       f"mask.kind={mask}", f"train.seed={seed}"],
                                role="teacher", eval_steps=dials.teacher_checkpoints,
                                labels={"group": "pixel", "teacher_size": size, "teacher_mask": mask,
                                        "teacher_steps": dials.teacher_steps, "seed": seed})
                for step in dials.teacher_checkpoints:
                    b.student(dials.student_config, teacher,
                              [f"model.size={dials.student_size}", f"train.steps={dials.student_steps}",
                               f"train.seed={seed}"], teacher_step=step, eval_steps=student_checkpoints,
                              labels={"group": "salt", "teacher_size": size, "teacher_mask": mask,
                                      "teacher_steps": step, "student_size": dials.student_size,
                                      "student_steps": dials.student_steps, "teacher_run_id": teacher.run_id,
                                      "seed": seed})
    for path in dials.imported_teachers:
        teacher = b.imported(path, labels={"group": "imported"})
        size = teacher.config.model.size
        teacher.labels.update(teacher_size=size, teacher_mask="imported", teacher_steps=0)
        for seed in dials.seeds:
            b.student(dials.student_config, teacher, [f"model.size={dials.student_size}",
                                                      f"train.steps={dials.student_steps}", f"train.seed={seed}"],
                      eval_steps=student_checkpoints,
                      labels={"group": "salt", "teacher_size": size, "teacher_mask": "imported", "teacher_steps": 0,
                              "student_size": dials.student_size, "student_steps": dials.student_steps,
                              "teacher_run_id": teacher.run_id, "seed": seed})
    return b.plan()


PRESETS = {
    "smoke": TeacherSelectionDials(teacher_sizes=["micro"], teacher_steps=4, teacher_checkpoints=[2, 4],
                                   student_size="micro", student_steps=4, teacher_masks=["multiblock", "random"],
                                   teacher_config="micro_teacher", student_config="micro_student"),
    # The embedded default: 4 teacher runs (micro and tiny x multiblock and random masks) kept at 40 and 120 steps
    # -> 8 teacher checkpoints, each distilled into a tiny student (100 steps, evaluated at 4 points). 12 runs:
    # ~8 min on 2 idle CPU cores by extrapolation (idle here: a tiny teacher 15 s, a student 24 s, a smoke
    # evaluation 8 s, each a fresh process); measured 37 min 49 s with other jobs holding the cores (docs/results.md). The fewest that answer: leave-one-teacher-out needs 3+ teacher runs, a
    # within-teacher R^2 4+ points per student, an interval 4+ students. Logged every 2 steps, so the students'
    # smoothed training losses (losses.train, losses.train_early at step 10) rest on several logged batches.
    "default": TeacherSelectionDials(teacher_sizes=["micro", "tiny"], teacher_steps=120, teacher_checkpoints=[40, 120],
                                     student_size="tiny", student_steps=100, teacher_masks=["multiblock", "random"],
                                     overrides=["train.batch_size=16", "optim.warmup_steps=20", "train.log_every=2"]),
    # Long enough for pretraining to show (hours on 2 CPU cores, minutes on one GPU): 6 teacher runs x 4
    # checkpoints = 24 students. A correlation of 0.7 then gets a Spearman interval excluding zero (with p < 0.05)
    # 91% of the time, 8 students 33% (docs/results.md); tests/test_analysis_selection.py runs a synthetic study of this design.
    "small": TeacherSelectionDials(teacher_sizes=["micro", "tiny", "mini"], teacher_steps=2000,
                                   teacher_checkpoints=[250, 500, 1000, 2000], student_size="tiny", student_steps=1500,
                                   teacher_masks=["multiblock", "random"], evaluation="fast"),
    # The paper's teacher-size and teacher-budget axes (B/L/H/G teachers, 20k/40k/80k steps) into a ViT-L student.
    "paper": TeacherSelectionDials(teacher_sizes=["base", "large", "huge", "gigantic"], teacher_steps=80_000,
                                   teacher_checkpoints=[20_000, 40_000, 80_000], student_size="large",
                                   student_steps=160_000, teacher_config="paper_vitl_teacher",
                                   student_config="paper_vitl_student", evaluation="systematic"),
}


def main(argv: list[str] | None = None) -> int:
    """Plan, run what is not done, then print the answer (the metrics ranked, with intervals and LOTO skill)
    and write the report and figures (STUDY_DIR/analysis/). `--imported-teacher DIR` (repeatable) adds a finished
    run folder made elsewhere as one more teacher of every preset."""
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--imported-teacher", action="append", default=[])
    known, rest = extra.parse_known_args(sys.argv[1:] if argv is None else argv)
    presets = {name: dataclasses.replace(d, imported_teachers=[*d.imported_teachers, *known.imported_teacher])
               for name, d in PRESETS.items()}
    return study_main(STUDY, presets, build, rest, hooks=study_hooks(STUDY, summarize))


if __name__ == "__main__":
    sys.exit(main())
