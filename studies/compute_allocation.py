"""Compute allocation: for each total budget, split it between a pixel teacher and its SALT student over several
teacher budgets; V-JEPA at the same total budgets; each teacher alone is the pixel baseline. (The paper: ViT-L,
120k/160k/240k total steps, teachers of 20k/40k/80k steps.)

A budget is counted in steps (`total_steps` x `teacher_steps`: the student gets total - teacher steps, and V-JEPA
the total steps, which costs it more FLOPs than SALT spends when the teacher step is cheaper), or in FLOPs
(`total_flops` x `teacher_shares`: the teacher gets its share of the FLOPs, the student the rest, and V-JEPA the
whole budget; steps are each config's FLOPs per step divided into its part, so every curve gets the same compute).

    python studies/compute_allocation.py                      # embedded default, local, < 15 min on 2 CPU cores
    python studies/compute_allocation.py --preset small --dry-run    # the plan with its estimated wall time
    python studies/compute_allocation.py --preset paper --dry-run
    python studies/compute_allocation.py --seeds 3            # replicates: seeds 0, 1, 2 of every run
    python studies/compute_allocation.py status
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.study.cli import study_main
from salt.study.spec import PlanBuilder, StudyError, StudyPlan, read_plan
from studies.reporting import study_hooks, summarize

STUDY = "compute_allocation"
METHODS = ("salt", "vjepa", "pixel")


@dataclass
class AllocationDials:
    total_steps: list[int] = field(default_factory=list)     # total budgets, in steps (teacher + student)
    teacher_steps: list[int] = field(default_factory=list)   # teacher budgets; the student gets total - teacher
    # or budgets in FLOPs (this code's "run" accounting, salt.study.estimate.step_flops) and the teacher's share
    total_flops: list[float] = field(default_factory=list)
    teacher_shares: list[float] = field(default_factory=list)
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
    scope: str = ""                         # what the preset can and cannot show: printed above its summary


def _check(dials: AllocationDials) -> None:
    unknown = set(dials.methods) - set(METHODS)
    if unknown:
        raise StudyError(f"unknown methods {sorted(unknown)}; valid: {', '.join(METHODS)}")
    by_steps, by_flops = bool(dials.total_steps or dials.teacher_steps), bool(dials.total_flops or dials.teacher_shares)
    if by_steps == by_flops:
        raise StudyError("give the budgets in steps (total_steps, teacher_steps) or in FLOPs (total_flops, "
                         "teacher_shares), not both and not neither")
    bad = [s for s in dials.teacher_shares if not 0 < s < 1]
    if bad:
        raise StudyError(f"teacher_shares {bad} must lie strictly between 0 and 1")


def _by_flops(dials: AllocationDials, b: PlanBuilder) -> list[dict]:
    """Per total FLOPs budget and share: steps of the teacher, student and V-JEPA that spend it. Step FLOPs come
    from the configs without a seed override, so every seed of a configuration gets the same steps."""
    teacher_cfg = [f"model.size={dials.teacher_size}"]
    teacher_step = b.step_flops(dials.teacher_config, teacher_cfg)
    vjepa_step = b.step_flops(dials.vjepa_config, [f"model.size={dials.student_size}"])
    student_step = b.step_flops(dials.student_config, [f"model.size={dials.student_size}"],
                                teacher=b.config(dials.teacher_config, teacher_cfg))
    grid = []
    for total in dials.total_flops:
        shares = []
        for share in dials.teacher_shares:
            t_steps, s_steps = round(share * total / teacher_step), round((1 - share) * total / student_step)
            if min(t_steps, s_steps) < 1:
                raise StudyError(f"total_flops {total:.3g} with teacher share {share}: {t_steps} teacher and "
                                 f"{s_steps} student steps; raise the budget")
            shares.append((t_steps, s_steps, share))
        grid.append({"budget": {"total_flops": float(f"{total:.4g}")}, "shares": shares,
                     "vjepa_steps": max(1, round(total / vjepa_step)),
                     "teacher_budget": lambda t: {"total_flops": float(f"{t * teacher_step:.4g}")}})
    return grid


def _by_steps(dials: AllocationDials) -> list[dict]:
    return [{"budget": {"total_steps": total}, "vjepa_steps": total,
             "shares": [(t, total - t, t / total) for t in dials.teacher_steps if t < total],
             "teacher_budget": lambda t: {"total_steps": t}} for total in dials.total_steps]


def build(dials: AllocationDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    _check(dials)
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    sizes = {"teacher_size": dials.teacher_size, "student_size": dials.student_size}
    grid = _by_flops(dials, b) if dials.total_flops else _by_steps(dials)
    for seed in dials.seeds:
        for point in grid:
            for t_steps, s_steps, share in point["shares"]:
                if not {"salt", "pixel"} & set(dials.methods):
                    continue
                teacher = b.run(dials.teacher_config, [f"model.size={dials.teacher_size}", f"train.steps={t_steps}",
                                                       f"train.seed={seed}"], role="teacher",
                                labels={"group": "pixel", **point["teacher_budget"](t_steps), "teacher_steps": t_steps,
                                        "teacher_size": dials.teacher_size, "seed": seed})
                if "salt" in dials.methods:
                    b.student(dials.student_config, teacher,
                              [f"model.size={dials.student_size}", f"train.steps={s_steps}", f"train.seed={seed}"],
                              labels={"group": "salt", **point["budget"], "teacher_steps": t_steps,
                                      "student_steps": s_steps, "teacher_share": share, **sizes,
                                      "teacher_run_id": teacher.run_id, "seed": seed})
            if "vjepa" in dials.methods:
                steps = point["vjepa_steps"]
                b.run(dials.vjepa_config, [f"model.size={dials.student_size}", f"train.steps={steps}",
                                           f"train.seed={seed}"], role="student",
                      labels={"group": "vjepa", **point["budget"], "student_steps": steps,
                              "student_size": dials.student_size, "seed": seed})
    plan = b.plan()
    if dials.baselines:
        students = [s for s in plan.runs if s.role == "student"] or plan.runs
        for kind in ("random_init", "raw_pixels"):
            b.baseline(kind, like=students[0])
        plan = b.plan()
    return plan


DEFAULT_SCOPE = (
    "the embedded default (150 and 300 total steps of batch 16, teachers of 25-100 steps, one seed, smoke evaluation "
    "on 100 test clips: accuracies move in steps of 0.01) exercises the whole pipeline in minutes: planning, "
    "training, evaluation, results, analysis and report. It cannot show how to split compute: every teacher stops "
    "before the ~400 steps after which the tiny random-mask teacher leaves the mean-prediction plateau, so its "
    "students learn from barely trained teachers; one seed gives no intervals; two budgets give no "
    "accuracy-vs-compute fit. For a verdict: --preset small (hours on 2 CPU cores: its dry run says how many).")
SMALL_SCOPE = (
    "four budgets, 6.25e12 to 5e13 FLOPs (~190 to ~1,500 V-JEPA steps of batch 32), the teacher's share of each "
    "10-60% (teachers of ~40-1,970 steps: at 5e13 the 40% and 60% teachers are past the ~400-step plateau; at "
    "6.25e12 the 10% teacher's 41 steps end inside the 50-step warmup), V-JEPA at the same compute, 2 seeds, fast "
    "evaluation. At each budget it can say whether SALT's best share is ahead of, behind or not distinguishable "
    "from V-JEPA, and which shares cannot be told from the best; across budgets it fits accuracy against compute "
    "and checks a forecast of the largest budget from the three smaller ones (the rollout). Each share trains its "
    "own teacher: a kept checkpoint of one longer teacher would be mid-cosine (its learning rate not annealed), "
    "not the short teacher the share pays for.")

# Tests: the packaged micro setting (salt/configs/micro.yaml), seconds per run.
PRESETS = {
    "smoke": AllocationDials(total_steps=[8, 12], teacher_steps=[2, 4], teacher_size="micro", student_size="micro",
                             teacher_config="micro_teacher", student_config="micro_student",
                             vjepa_config="micro_vjepa"),
    # The embedded default: the pipeline end to end on 2 CPU cores in minutes; too small to show the paper's effects.
    "default": AllocationDials(total_steps=[150, 300], teacher_steps=[25, 50, 100],
                               overrides=["train.batch_size=16", "optim.warmup_steps=20", "train.log_every=10"],
                               scope=DEFAULT_SCOPE),
    # Verdicts at four budgets and a forecast of the largest on 2 CPU cores in hours (the dry run prints the
    # estimate): a benchmark, not a test.
    "small": AllocationDials(total_flops=[6.25e12, 1.25e13, 2.5e13, 5.0e13], teacher_shares=[0.1, 0.2, 0.4, 0.6],
                             seeds=[0, 1],
                             evaluation="fast", scope=SMALL_SCOPE),
    # The paper's grid (ViT-L teacher and student, batch 3072); needs GPUs and --set data.video.list_path=...
    "paper": AllocationDials(total_steps=[120_000, 160_000, 240_000], teacher_steps=[20_000, 40_000, 80_000],
                             teacher_size="large", student_size="large", teacher_config="paper_vitl_teacher",
                             student_config="paper_vitl_student", vjepa_config="paper_vitl_vjepa2",
                             evaluation="systematic", baselines=False),
}


def summary(root: Path) -> str:
    """What the preset can and cannot show (its `scope`), then the analysis' summary of the records."""
    dials = PRESETS.get(read_plan(root).preset)
    return (f"Scope: {dials.scope}\n\n" if dials is not None and dials.scope else "") + summarize(root)


def main(argv: list[str] | None = None) -> int:
    return study_main(STUDY, PRESETS, build, argv, hooks=study_hooks(STUDY, summary))


if __name__ == "__main__":
    sys.exit(main())
