"""Studies: grids of runs (teacher size x budget x student size x budget) planned as pure functions of a few
dials, run through submitit (local, debug, SLURM) idempotently, with results gathered from the run folders."""
from salt.study.launch import LaunchOptions, run_plan, run_states
from salt.study.spec import PlanBuilder, RunSpec, StudyError, StudyPlan, read_plan, write_plan

__all__ = ["LaunchOptions", "PlanBuilder", "RunSpec", "StudyError", "StudyPlan", "read_plan", "run_plan",
           "run_states", "write_plan"]
