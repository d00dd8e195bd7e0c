"""Run a study plan through submitit: locally (default), in-process (debug) or on SLURM.

Idempotent: a run whose folder has done.json and its evaluation records is skipped; a run whose job is active
(`RunState.is_active`: pending, running, requeued, completing, suspended) is left alone (never submitted twice);
a failed run (failed, timeout, cancelled, node_fail, out_of_memory, preempted) is resubmitted up to
`max_attempts` times and resumes from its last checkpoint. A run whose folder's lock (salt.runlock) is held is
running, whatever its job record says (a job of another invocation or host, an earlier incarnation of a requeued
job, a user's own `python -m salt` on it). Invocations take turns to decide and submit (the study's submit lock),
so a second invocation sees the first one's jobs and submits none of them again. Students wait for their teacher: on SLURM through
`--dependency=afterok:<teacher job>`, locally by running stage after stage. Each run's submissions are kept in
RUN_DIR/job.json; the plan in STUDY_DIR/study.json; submitit's logs in STUDY_DIR/logs/.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit

from salt.io import atomic_write_json
from salt.layout import DEFAULT_BENCHMARK, StudyLayout
from salt.runlock import describe, held_by, hold_study
from salt.study.job import RunJob
from salt.study.spec import RunSpec, StudyError, StudyPlan, write_plan
from salt.study.state import RunState, process_alive, slurm_outcome, slurm_queue

EXECUTORS = ("local", "debug", "slurm")


@dataclass
class LaunchOptions:
    """Where and how a study's jobs run. A YAML profile (slurm/profiles/) sets these; CLI flags override."""
    executor: str = "local"                 # local | debug | slurm
    partition: str = ""
    account: str = ""
    qos: str = ""
    gpus_per_node: int = 0
    nodes: int = 1
    cpus_per_task: int = 2
    mem_gb: float = 0.0                     # 0: the cluster's default
    time_min: int = 60
    array_parallelism: int = 16
    additional_parameters: dict[str, str | bool] = field(default_factory=dict)   # extra sbatch options
    # e.g. {constraint: a100, requeue: true}; true = a flag without a value
    setup: list[str] = field(default_factory=list)              # shell lines run before each job (module load ...)
    max_attempts: int = 3                   # submissions per run before it is left failed
    threads: int = 0                        # torch threads per job; 0 = torch's default
    wait: bool = True                       # slurm: wait for the jobs and print the final status
    poll_s: float = 5.0

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise StudyError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.max_attempts < 1 or self.nodes < 1 or self.array_parallelism < 1:
            raise StudyError("max_attempts, nodes and array_parallelism must be >= 1")


# -- run state ---------------------------------------------------------------------------------------------------

def job_file(spec: RunSpec) -> Path:
    return spec.layout.job


def read_job(spec: RunSpec) -> dict:
    path = job_file(spec)
    return json.loads(path.read_text()) if path.exists() else {"attempts": 0, "jobs": []}


def is_done(spec: RunSpec) -> bool:
    """Trained (done.json) and evaluated (its records exist); baselines only need their record."""
    benchmarks = [DEFAULT_BENCHMARK, *spec.benchmark_names()]   # every benchmark the run is evaluated on
    if spec.role == "baseline":
        return all(spec.layout.record(0, spec.evaluation, b).exists() for b in benchmarks)
    if spec.external:   # made outside the study: finished is all it can be (its evaluation is the user's)
        return spec.layout.is_done()
    steps = set(spec.eval_steps) | {spec.config.train.steps}
    return spec.layout.is_done() and all(spec.layout.record(step, spec.evaluation, b).exists()
                                         for step in steps for b in benchmarks)


def _local_job_alive(job: dict) -> bool:
    """A local job's id is its process id: alive on this host means another invocation is running it."""
    return job.get("executor") == "local" and process_alive(job.get("host", ""), job.get("job_id", ""))


def run_states(specs: list[RunSpec]) -> dict[str, dict]:
    """Per run: state (a RunState: done from the run folder; while its SLURM job is queued or running, SLURM's
    state from squeue; after the job left the queue, how it ended from sacct when the cluster keeps accounting,
    else failed; running while a local job's process is alive or any process holds the run folder's lock),
    attempts, last job id, SLURM's reason (or who holds the lock), log paths and the last recorded error."""
    jobs = {spec.run_id: read_job(spec) for spec in specs}
    last = {run_id: j["jobs"][-1] if j["jobs"] else {} for run_id, j in jobs.items()}
    slurm_ids = [job["job_id"] for job in last.values() if job.get("executor") == "slurm"]
    queued = slurm_queue(slurm_ids)
    done = {spec.run_id for spec in specs if is_done(spec)}
    ended = slurm_outcome([job["job_id"] for run_id, job in last.items() if job.get("executor") == "slurm"
                           and job["job_id"] not in queued and run_id not in done])   # how they ended
    table = {}
    for spec in specs:
        job, latest = jobs[spec.run_id], last[spec.run_id]
        job_id = latest.get("job_id", "")
        holder = None if spec.run_id in done else held_by(spec.run_dir)
        reason = queued.get(job_id, (None, ""))[1] or (f"locked: {describe(holder)}" if holder is not None else "")
        if spec.run_id in done:
            state = RunState.DONE
        elif job_id in queued:
            state = queued[job_id][0]
            if state is RunState.DONE:   # SLURM says COMPLETED, the folder says not done: no result
                state = RunState.FAILED
        elif _local_job_alive(latest) or holder is not None:
            state = RunState.RUNNING
        elif job["attempts"]:
            state = ended.get(job_id, RunState.FAILED)
        else:
            state = RunState.NOT_STARTED
        table[spec.run_id] = {"state": state, "attempts": job["attempts"], "job_id": job_id,
                              "reason": reason, "stdout": latest.get("stdout", ""),
                              "stderr": latest.get("stderr", ""), "error": job.get("error", "")}
    return table


def _record_submission(spec: RunSpec, job, executor: str) -> None:
    info = read_job(spec)
    info["attempts"] += 1
    info["jobs"].append({"job_id": str(job.job_id), "executor": executor, "host": socket.gethostname(),
                         "submitted_at": time.time(),
                         "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
    info.pop("error", None)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_file(spec), info)


def _record_failure(spec: RunSpec, error: BaseException | str) -> None:
    info = read_job(spec)
    info["error"] = error_line(error)
    atomic_write_json(job_file(spec), info)


# -- executors ---------------------------------------------------------------------------------------------------

def executor_parameters(options: LaunchOptions) -> dict:
    """submitit's AutoExecutor parameters for `options` (one task per GPU: DDP runs one process per GPU)."""
    params = {"timeout_min": options.time_min, "nodes": options.nodes,
              "tasks_per_node": max(1, options.gpus_per_node), "cpus_per_task": options.cpus_per_task}
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.executor == "slurm":
        params |= {"slurm_array_parallelism": options.array_parallelism, "slurm_setup": options.setup,
                   "slurm_additional_parameters": dict(options.additional_parameters)}
        for key in ("partition", "account", "qos"):
            if getattr(options, key):
                params[f"slurm_{key}"] = getattr(options, key)
    return params


def make_executor(options: LaunchOptions, folder: Path) -> submitit.Executor:
    """submitit executor for `options`; an unavailable executor is an error before anything is submitted."""
    if options.executor == "slurm" and shutil.which("sbatch") is None:
        raise StudyError("executor 'slurm' needs sbatch on PATH, and none was found (on a laptop use "
                         "--executor local; to try SLURM here: slurm/local_cluster.sh start)")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.executor)
    executor.update_parameters(**executor_parameters(options))
    return executor


def preflight_slurm(options: LaunchOptions) -> None:
    """`sbatch --test-only` with the study's resources: a partition, account or GPU request the cluster rejects
    fails here, with SLURM's message, before any job is submitted."""
    cmd = ["sbatch", "--test-only", f"--time={options.time_min}", f"--nodes={options.nodes}",
           f"--cpus-per-task={options.cpus_per_task}"]
    for flag, value in (("--partition", options.partition), ("--account", options.account), ("--qos", options.qos)):
        if value:
            cmd.append(f"{flag}={value}")
    if options.gpus_per_node:
        cmd.append(f"--gpus-per-node={options.gpus_per_node}")
    if options.mem_gb:
        cmd.append(f"--mem={int(options.mem_gb * 1024)}M")
    for key, value in options.additional_parameters.items():
        if key != "dependency" and value is not False:
            cmd.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    out = subprocess.run([*cmd, "--wrap", "true"], capture_output=True, text=True)
    if out.returncode != 0:
        raise StudyError(f"SLURM rejects the study's resource request ({' '.join(cmd[2:])}): "
                         f"{out.stderr.strip() or out.stdout.strip()}")


# -- running a plan ----------------------------------------------------------------------------------------------

def run_plan(plan: StudyPlan, options: LaunchOptions) -> dict[str, dict]:
    """Train and evaluate every run of the plan that is not done; returns the final state table."""
    missing = [spec.run_dir for spec in plan.runs if spec.external and not is_done(spec)]
    if missing:   # a study never trains a run it did not make (nor writes into its folder)
        raise StudyError(f"imported runs are not finished run folders any more: {', '.join(map(str, missing))}")
    executor = make_executor(options, StudyLayout(plan.root).logs)
    if options.executor == "slurm":
        preflight_slurm(options)
    write_plan(plan)
    if options.executor == "slurm":
        _submit_slurm(plan, options, executor)
    else:
        _run_in_order(plan, options, executor)
    return run_states(plan.runs)


def _blocked_by(spec: RunSpec, states: dict[str, dict], active: set[str]) -> list[str]:
    return [d for d in spec.depends_on if states[d]["state"] is not RunState.DONE and d not in active]


def _run_in_order(plan: StudyPlan, options: LaunchOptions, executor) -> None:
    """local/debug: one run at a time in dependency order (concurrent CPU jobs slow each other 10-20x here). Each
    run's state is read again just before it would be submitted, under the study's submit lock: another
    invocation may have started it meanwhile."""
    states = run_states(plan.runs)
    for spec in plan.runs:
        with hold_study(plan.root):
            states[spec.run_id] = state = run_states([spec])[spec.run_id]
            if (state["state"] is RunState.DONE or state["state"].is_active
                    or state["attempts"] >= options.max_attempts):
                continue   # active: another invocation of this study has it
            if _blocked_by(spec, states, set()):
                continue
            job = executor.submit(RunJob(spec.to_json(), options.threads))
            _record_submission(spec, job, options.executor)
        try:
            job.result()
        except Exception as error:   # recorded and shown in the status table; other runs go on
            _record_failure(spec, error)
        states[spec.run_id] = run_states([spec])[spec.run_id]


def _submit_slurm(plan: StudyPlan, options: LaunchOptions, executor) -> None:
    """One job array per (stage, set of teacher jobs): independent runs share an array; a student waits for its
    teacher's job with afterok. Jobs stuck on a dependency that can never be met are cancelled and resubmitted.
    The states are read, the jobs submitted and recorded under the study's submit lock (not the wait)."""
    with hold_study(plan.root):
        submitted = _submit_slurm_stages(plan, options, executor)
    if options.wait:
        wait_for(plan, [job for _, job in submitted], options)


def _submit_slurm_stages(plan: StudyPlan, options: LaunchOptions, executor) -> list:
    states = run_states(plan.runs)
    active: dict[str, str] = {}   # run id -> job id of a job queued or running now
    for run_id in _cancel_unsatisfiable(plan, states):
        states[run_id]["state"] = RunState.CANCELLED
    for run_id, state in states.items():
        if state["state"].is_active:   # queued, running or requeued: never submitted twice
            active[run_id] = state["job_id"]
    submitted = []
    for stage in plan.stages():
        groups: dict[tuple[str, ...], list[RunSpec]] = defaultdict(list)
        for spec in stage:
            state = states[spec.run_id]
            if state["state"] is RunState.DONE or spec.run_id in active or state["attempts"] >= options.max_attempts:
                continue
            if _blocked_by(spec, states, set(active)):
                continue
            groups[tuple(active[d] for d in spec.depends_on if d in active)].append(spec)
        for dependencies, specs in groups.items():
            extra = dict(options.additional_parameters)
            if dependencies:
                extra["dependency"] = "afterok:" + ":".join(dependencies)
            executor.update_parameters(slurm_additional_parameters=extra)
            with executor.batch():
                jobs = [executor.submit(RunJob(spec.to_json(), options.threads)) for spec in specs]
            for spec, job in zip(specs, jobs):
                _record_submission(spec, job, "slurm")
                active[spec.run_id] = str(job.job_id)
                submitted.append((spec, job))
    return submitted


def _cancel_unsatisfiable(plan: StudyPlan, states: dict[str, dict]) -> list[str]:
    """Cancel the jobs SLURM holds on a dependency that can never be met (a student whose teacher failed would
    wait forever); each is recorded as failed, so the next invocation resubmits it. -> their run ids."""
    specs, cancelled = plan.by_id(), []
    for run_id, state in states.items():
        if "DependencyNeverSatisfied" in state["reason"]:
            subprocess.run(["scancel", state["job_id"]], check=False)
            _record_failure(specs[run_id], "cancelled: its teacher's job failed")
            cancelled.append(run_id)
    return cancelled


def wait_for(plan: StudyPlan, jobs: list, options: LaunchOptions) -> None:
    """Until no job of this plan is queued or running (its run states: a requeued job or a held lock counts);
    records the error of each failed one."""
    specs, states = plan.by_id(), {}

    def active() -> bool:
        states.update(run_states(plan.runs))
        _cancel_unsatisfiable(plan, states)
        return any(s["state"].is_active for s in states.values())

    errors = wait_jobs(jobs, options.poll_s, active)
    for run_id, state in states.items():
        if state["state"].is_failed and state["job_id"] in errors:
            _record_failure(specs[run_id], errors[state["job_id"]])


def wait_jobs(jobs: list, poll_s: float, active: Callable[[], bool] | None = None) -> dict[str, BaseException | str]:
    """The one wait loop of the study stack (a plan's jobs, an HPO search's workers): poll every `poll_s` seconds
    while `active()` (default: while squeue lists one of the SLURM jobs as queued or running, a requeued one
    included; not submitit's job.done(), which cannot tell that a job SLURM killed has ended on a cluster without
    accounting). -> {job id: its error} for each job that failed: the exception it raised, or a line saying it
    ended without a result (killed by SLURM: how it ended, and its log). A local job is waited for by its result."""
    slurm_ids = [str(job.job_id) for job in jobs if isinstance(job, submitit.SlurmJob)]
    if active is None:
        def active() -> bool:
            return any(state.is_active for state, _ in slurm_queue(slurm_ids).values())
    while active():
        time.sleep(poll_s)
    ended = slurm_outcome(slurm_ids)
    errors: dict[str, BaseException | str] = {}
    for job in jobs:
        job_id = str(job.job_id)
        if job_id in slurm_ids and not job.paths.result_pickle.exists():
            errors[job_id] = f"ended without a result ({ended.get(job_id, 'failed')}; log {job.paths.stderr})"
            continue
        try:
            job.result()
        except Exception as error:   # the job's exception, as submitit reports it: returned, not raised
            errors[job_id] = error
    return errors


def error_line(error: BaseException | str) -> str:
    """A job's error in one line: the exception's type and the last line of its message (submitit's report ends
    with the job's own exception)."""
    if isinstance(error, str):
        return error
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"
