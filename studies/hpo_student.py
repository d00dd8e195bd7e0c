"""Hyperparameter search for a student recipe with optuna: a teacher is trained once (as any study run), then
`--trials` student runs with sampled optim.lr and optim.weight_decay are spread over `--workers` jobs (SLURM
array tasks, or local processes) that share one optuna storage; trials whose smoothed training loss falls
behind the median are pruned. Re-running the command adds only the trials the study lacks; a trial whose worker
was killed is failed and its parameters are tried again (salt.study.hpo.fail_lost_trials).

    python studies/hpo_student.py --preset default --trials 8 --workers 2
    python studies/hpo_student.py --preset small --executor slurm --profile slurm/profiles/example_gpu.yaml --workers 8
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from salt.errors import report_errors
from salt.layout import StudyLayout
from salt.study.cli import describe, launch_options, parser, with_seeds
from salt.study.launch import make_executor, preflight_slurm, run_plan
from salt.study.spec import PlanBuilder, StudyError, StudyPlan
from salt.study.state import RunState

STUDY = "hpo_student"


@dataclass
class HpoDials:
    teacher_size: str
    teacher_steps: int
    student_size: str
    student_steps: int
    space: dict = field(default_factory=lambda: {"optim.lr": ("log_uniform", 1e-4, 3e-3),
                                                 "optim.weight_decay": ("log_uniform", 1e-3, 0.3)})
    teacher_config: str = "tiny_teacher"
    student_config: str = "tiny_student"
    overrides: list[str] = field(default_factory=list)
    evaluation: str = "smoke"


def teacher_plan(dials: HpoDials, preset: str, root: Path, overrides: list[str] = ()) -> StudyPlan:
    b = PlanBuilder(STUDY, preset, root, evaluation=dials.evaluation, overrides=[*dials.overrides, *overrides])
    b.run(dials.teacher_config, [f"model.size={dials.teacher_size}", f"train.steps={dials.teacher_steps}"],
          role="teacher", labels={"group": "pixel", "teacher_size": dials.teacher_size})
    return b.plan()


def student_recipe(dials: HpoDials, plan: StudyPlan, overrides: list[str] = ()):
    from salt.study.hpo import Recipe
    b = PlanBuilder(STUDY, plan.preset, plan.root, evaluation=dials.evaluation,
                    overrides=[*dials.overrides, *overrides])
    student = b.student(dials.student_config, plan.runs[0],
                        [f"model.size={dials.student_size}", f"train.steps={dials.student_steps}"])
    return Recipe(base=student.config, space=dials.space, study_dir=str(StudyLayout(plan.root).hpo))


PRESETS = {
    "smoke": HpoDials(teacher_size="micro", teacher_steps=4, student_size="micro", student_steps=8,
                      teacher_config="micro_teacher", student_config="micro_student"),
    "default": HpoDials(teacher_size="tiny", teacher_steps=100, student_size="tiny", student_steps=100,
                        overrides=["train.batch_size=16", "optim.warmup_steps=20"]),
    "small": HpoDials(teacher_size="tiny", teacher_steps=1000, student_size="tiny", student_steps=1000,
                      evaluation="fast"),
}


HPO_EPILOG = """examples:
  python studies/hpo_student.py --dry-run                        # the teacher run and the search space
  python studies/hpo_student.py --trials 8 --workers 2           # 8 trials over 2 workers; rerun: only the missing
  python studies/hpo_student.py status                           # the trials so far, best first
  python studies/hpo_student.py --trials 16 --workers 4 --profile slurm/profiles/example_gpu.yaml   # SLURM array

docs/studies.md, "Hyperparameter search". Errors you can fix print one 'error:' line (exit 2); --debug or
SALT_DEBUG=1 shows the traceback."""


def main(argv: list[str] | None = None) -> int:
    """-> the exit code (a study error: one `error:` line and 2, salt.errors)."""
    return report_errors(_main, argv)


def _main(argv: list[str]) -> int:
    import optuna
    from salt.study.hpo import best_trial_table, fail_lost_trials, launch, storage_path, wait_workers
    p = parser(STUDY, PRESETS)
    p.epilog = HPO_EPILOG
    p.add_argument("--trials", type=int, default=8,
                   help="trials in all (finished or running); a re-invocation runs only the missing ones")
    p.add_argument("--workers", type=int, default=1, help="jobs sharing the optuna storage (array tasks)")
    args = p.parse_args(argv)
    root = args.out or Path("runs") / "studies" / f"{STUDY}-{args.preset}"
    dials = with_seeds(PRESETS[args.preset], args.seeds)   # HpoDials have no seeds: --seeds is refused by name
    options = launch_options(args)
    plan = teacher_plan(dials, args.preset, root, args.overrides)
    recipe = student_recipe(dials, plan, args.overrides)
    if args.action == "status":   # the trials so far; nothing is submitted
        storage = Path(storage_path(recipe.study_dir))
        if not storage.is_file():
            raise StudyError(f"{storage} does not exist: no trial of this search has started")
        print(best_trial_table(storage).to_string(index=False))
        return 0
    if args.dry_run:
        print(describe(plan, options, args.gpu_tflops, args.gpu_mem_gb, args.cpu_gflops))
        print(f"then {args.trials} student trials over {args.workers} workers: {recipe.space}")
        return 0
    states = run_plan(plan, options)
    if states[plan.runs[0].run_id]["state"] is not RunState.DONE:
        raise StudyError(f"the teacher {plan.runs[0].run_id} did not finish: {states[plan.runs[0].run_id]}")
    executor = make_executor(options, StudyLayout(plan.root).logs)
    if options.executor == "slurm":
        preflight_slurm(options)
    jobs = launch(executor, args.workers, args.trials, recipe,
                  pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    errors = wait_workers(jobs, options.poll_s)
    lost = fail_lost_trials(storage_path(recipe.study_dir))   # a killed worker's trial: failed and enqueued again
    print(best_trial_table(storage_path(recipe.study_dir)).to_string(index=False))
    if errors or lost:
        print("\n".join(errors + [f"trial {n}: its worker is gone; its parameters are enqueued again" for n in lost]
                        + ["run the same command again to finish the trials that were lost"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
