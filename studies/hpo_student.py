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

from salt.layout import StudyLayout
from salt.study.cli import StudyHooks, study_main
from salt.study.launch import run_states
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
    return Recipe(base=student.config, space=dials.space, study_dir=str(StudyLayout(plan.root).hpo),
                  teacher_id=plan.runs[0].run_id)


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
  python studies/hpo_student.py status                           # the teacher, then the trials so far, best first
  python studies/hpo_student.py --trials 16 --workers 4 --profile slurm/profiles/example_gpu.yaml   # SLURM array

docs/studies.md, "Hyperparameter search". Errors you can fix print one 'error:' line (exit 2); --debug or
SALT_DEBUG=1 shows the traceback."""


def arguments(p) -> None:
    p.epilog = HPO_EPILOG
    p.add_argument("--trials", type=int, default=8,
                   help="trials in all (finished or running); a re-invocation runs only the missing ones")
    p.add_argument("--workers", type=int, default=1, help="jobs sharing the optuna storage (array tasks)")


def search(action: str, plan: StudyPlan, options, args) -> int:
    """The trials on top of the teacher's plan (StudyHooks.then): what they would be (dry-run), the table so far
    (status), or, once the teacher is done, the missing ones run by `--workers` jobs (salt.study.hpo.launch) and
    waited for (salt.study.launch.wait_jobs). -> 1 when a worker failed or was lost (run again to finish)."""
    import optuna
    from salt.study.hpo import best_trial_table, fail_lost_trials, launch, storage_path
    from salt.study.launch import error_line, make_executor, wait_jobs
    storage = storage_path(StudyLayout(plan.root).hpo)
    if action == "dry-run":
        recipe = student_recipe(PRESETS[args.preset], plan, args.overrides)
        print(f"then {args.trials} student trials over {args.workers} workers: {recipe.space}")
        return 0
    if action == "status":
        if not Path(storage).is_file():
            raise StudyError(f"{storage} does not exist: no trial of this search has started")
        print(best_trial_table(storage).to_string(index=False))
        return 0
    teacher = plan.runs[0]
    state = run_states([teacher])[teacher.run_id]
    if state["state"] is not RunState.DONE:
        raise StudyError(f"the teacher {teacher.run_id} did not finish: {state}")
    jobs = launch(make_executor(options, StudyLayout(plan.root).logs), args.workers, args.trials,
                  student_recipe(PRESETS[args.preset], plan, args.overrides),
                  pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    errors = [f"worker {job_id}: {error_line(error)}" for job_id, error in wait_jobs(jobs, options.poll_s).items()]
    lost = fail_lost_trials(storage)   # a killed worker's trial: failed and enqueued again
    print(best_trial_table(storage).to_string(index=False))
    if errors or lost:
        print("\n".join(errors + [f"trial {n}: its worker is gone; its parameters are enqueued again" for n in lost]
                        + ["run the same command again to finish the trials that were lost"]), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """-> the exit code (salt.study.cli.study_main: a study error is one `error:` line and 2)."""
    return study_main(STUDY, PRESETS, teacher_plan, argv, StudyHooks(arguments=arguments, then=search))


if __name__ == "__main__":
    sys.exit(main())
