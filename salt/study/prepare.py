"""`python -m salt prepare-videos ... --profile slurm/profiles/X.yaml`: the inputs left to prepare, sharded into a
submitit job array with a study's cluster profile (LaunchOptions, make_executor). Each array task prepares its
shard with `cpus_per_task` local workers (salt.data.prepare.prepare_inputs); the submitting process waits for the
array, then writes the list and report from the per-input records, as a local preparation does. A task that dies
(time limit, node failure) leaves its unfinished inputs without a record: the report names them and the same
command finishes them."""
from __future__ import annotations

from pathlib import Path

import submitit

from salt.data.prepare import Preparation, PrepareOptions, prepare_collection, prepare_inputs
from salt.study.launch import LaunchOptions, make_executor, preflight_slurm


class PrepareShard(submitit.helpers.Checkpointable):
    """One array task: its inputs, prepared in the task. Checkpointable: a task stopped at its time limit is
    requeued with the same inputs, and those with a record are skipped."""

    def __init__(self, paths: list[str], out_dir: str, options: PrepareOptions, workers: int) -> None:
        self.paths, self.out_dir, self.options, self.workers = paths, out_dir, options, workers

    def __call__(self) -> int:
        prepare_inputs(self.paths, self.out_dir, self.options, self.workers)
        return len(self.paths)


def shard(paths: list[str], shards: int) -> list[list[str]]:
    """`shards` interleaved shares (input i to shard i % shards): long and short videos listed together spread."""
    count = max(1, min(shards, len(paths)))
    return [paths[i::count] for i in range(count)]


def array_runner(launch: LaunchOptions, shards: int):
    """`run` for salt.data.prepare.prepare_collection: submit the pending inputs as one job array, wait, and return
    why the inputs of a failed task are unfinished."""

    def run(preparation: Preparation, pending: list[str]) -> dict[str, str]:
        executor = make_executor(launch, preparation.layout.logs)
        if launch.executor == "slurm":
            preflight_slurm(launch)
        parts = shard(pending, shards)
        with executor.batch():
            jobs = [executor.submit(PrepareShard(part, str(preparation.layout.root), preparation.options,
                                                 launch.cpus_per_task)) for part in parts]
        reasons = {}
        for part, job in zip(parts, jobs):
            try:
                job.result()
            except Exception as error:   # the task's own error (or SLURM's end of it): named in the report
                text = str(error).strip().splitlines()
                why = f"array task {job.job_id} failed: {type(error).__name__}: {text[-1] if text else ''}"
                reasons.update({path: f"{why} (log: {job.paths.stderr})" for path in part})
        return reasons

    return run


def prepare_on_cluster(list_path: str | Path, out_dir: str | Path, options: PrepareOptions, launch: LaunchOptions,
                       shards: int = 1000, retry_failed: bool = False) -> dict:
    """prepare_collection with the work done by a job array of at most `shards` tasks (1000: SLURM's default
    MaxArraySize is 1001)."""
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    return prepare_collection(list_path, out_dir, options, run=array_runner(launch, shards),
                              retry_failed=retry_failed)
