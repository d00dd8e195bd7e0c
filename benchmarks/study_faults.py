"""Faults at study scale (issue 23, item 4): a micro study (pixel teacher -> SALT student, V-JEPA, the two
baselines, evaluations) runs on the local SLURM cluster while faults are injected at random moments (seeded, each
logged in OUT/faults.jsonl), and is re-invoked until every run is done. It is then compared with the same study run
without faults: final weights and evaluation records bit-identical, every training step logged once, no record or
checkpoint lost, one job at a time per run (each run's lock.jsonl, salt.runlock.overlaps), attempts per run.

    slurm/local_cluster.sh start && source /tmp/salt-slurm/env.sh
    python benchmarks/study_faults.py --faults 30 [--seed 0] [--out /tmp/study-faults] [--kinds scancel,requeue,...]

Fault kinds: scancel (a running job), requeue (`scontrol requeue` of a running job), sigkill (the Python process
holding a run's lock), reinvoke (a second invocation of the study while jobs run), truncate (a run's latest
checkpoint cut in half, not the final one), restart (slurmctld and slurmd stopped and started again, by
slurm/local_cluster.sh), full_disk (the study's folder is a tmpfs the harness mounts: filled for 2 s; root only).
Prints a JSON summary (--json FILE writes it too).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from salt.checkpoint import load_checkpoint  # noqa: E402
from salt.layout import read_metrics  # noqa: E402
from salt.runlock import held_by, overlaps, read_log  # noqa: E402
from salt.study import LaunchOptions, StudyError, run_plan, run_states  # noqa: E402
from studies.compute_allocation import PRESETS, AllocationDials, build  # noqa: E402

KINDS = ("scancel", "requeue", "sigkill", "reinvoke", "truncate", "restart", "full_disk")
# a record's fields that differ run to run; config_hash, which for a student includes its teacher's checkpoint
# path (the two studies live in different folders; its run id, which names the teacher by run id, is the same);
# code_version, the checkout's commit, which moves if someone commits while the harness runs
VOLATILE = {"created_at", "wall_time_s", "hardware", "config_hash", "code_version"}
TIMING = {"data_s", "step_s", "elapsed_s"}                            # a metrics line's


def micro_plan(root: Path, cache: Path, total_steps: int = 12, teacher_steps: int = 4):
    dials = AllocationDials(**{**PRESETS["smoke"].__dict__, "total_steps": [total_steps],
                               "teacher_steps": [teacher_steps],
                               "methods": ("salt", "vjepa"), "baselines": True})
    return build(dials, "smoke", root, [f"data.moving_digits.cache_dir={cache}", "train.checkpoint_every=2",
                                        "train.log_every=1"])


def cancel_jobs(plan) -> None:
    """scancel this study's jobs still queued or running (a harness that stops early leaves none behind)."""
    ids = [str(s["job_id"]) for s in run_states(plan.runs).values() if s["state"].is_active and s["job_id"]]
    if ids:
        _slurm("scancel", *ids)


def slurm_options(partition: str, wait: bool) -> LaunchOptions:
    return LaunchOptions(executor="slurm", partition=partition, cpus_per_task=1, threads=1, time_min=10, poll_s=0.5,
                         max_attempts=100, wait=wait)


def _retry(call, *args):
    """call(*args), retried for up to 60 s while the controller does not answer (a restart under way)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(*args)
        except StudyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _slurm(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)


class Injector:
    def __init__(self, plan, options, rng: random.Random, disk: Path | None, cluster_dir: Path):
        self.plan, self.options, self.rng, self.disk, self.cluster_dir = plan, options, rng, disk, cluster_dir

    def _running(self):
        states = _retry(run_states, self.plan.runs)
        return [(s, states[s.run_id]) for s in self.plan.runs if str(states[s.run_id]["state"]) == "running"]

    def inject(self, kind: str) -> str | None:
        """Apply one fault of `kind`; -> what was done, or None when nothing was there to hit."""
        if kind in ("scancel", "requeue"):
            running = [(s, st) for s, st in self._running() if st["job_id"]]
            if not running:
                return None
            spec, state = self.rng.choice(running)
            cmd = ["scancel", state["job_id"]] if kind == "scancel" else ["scontrol", "requeue", state["job_id"]]
            out = _slurm(*cmd)
            return f"{' '.join(cmd)} ({spec.run_id}) rc {out.returncode}"
        if kind == "sigkill":
            holders = [(s, h) for s in self.plan.runs if (h := held_by(s.run_dir))
                       and h.get("host") == socket.gethostname()]
            if not holders:
                return None
            spec, holder = self.rng.choice(holders)
            try:
                os.kill(int(holder["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                return None
            return f"SIGKILL pid {holder['pid']} (job {holder.get('slurm_job_id')}, {spec.run_id})"
        if kind == "reinvoke":
            _retry(run_plan, self.plan, self.options)
            return "a second invocation"
        if kind == "truncate":
            found = [(s, p) for s in self.plan.runs if s.role != "baseline" and not s.layout.is_done()
                     and (p := s.layout.latest_checkpoint()) is not None
                     and p != s.layout.checkpoint(s.config.train.steps)]
            if not found:
                return None
            spec, path = self.rng.choice(found)
            try:
                with open(path, "r+b") as f:
                    f.truncate(os.fstat(f.fileno()).st_size // 2)
            except FileNotFoundError:   # replaced or deleted meanwhile
                return None
            return f"truncated {path.relative_to(self.plan.root)}"
        if kind == "restart":
            for daemon in ("slurmctld", "slurmd"):
                pid_file = self.cluster_dir / f"{daemon}.pid"
                if pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                    except (ProcessLookupError, ValueError):
                        pass
            time.sleep(1)
            out = subprocess.run(["bash", str(REPO / "slurm" / "local_cluster.sh"), "start"], capture_output=True,
                                 text=True, timeout=600, env={**os.environ, "SLURM_DIR": str(self.cluster_dir)})
            return f"slurmctld and slurmd restarted (rc {out.returncode})"
        if kind == "full_disk":
            if self.disk is None:
                return None
            filler = self.disk / "filler"
            try:
                with open(filler, "wb") as f:   # most of it at once, then page by page until ENOSPC
                    os.posix_fallocate(f.fileno(), 0, max(shutil.disk_usage(self.disk).free - (1 << 20), 1))
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError:
                pass
            try:
                time.sleep(2)
            finally:
                filler.unlink(missing_ok=True)
            return "the study's disk full for 2 s"
        raise ValueError(f"unknown fault kind {kind!r}")


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _needs_invocation(states: dict) -> bool:
    """A failed run to resubmit, a student held on a dependency that can never be met (the invocation cancels
    and resubmits it), or nothing left queued or running."""
    return (any(s["state"].is_failed or "DependencyNeverSatisfied" in s["reason"] for s in states.values())
            or not any(s["state"].is_active for s in states.values()))


def run_faulty(plan, options, faults: int, kinds: list[str], seed: int, log: Path, disk: Path | None,
               cluster_dir: Path, timeout_s: float) -> dict:
    rng = random.Random(seed)
    injector = Injector(plan, options, rng, disk, cluster_dir)
    counts = dict.fromkeys(kinds, 0)
    t0, invocations = time.perf_counter(), 1
    _retry(run_plan, plan, options)
    with open(log, "a") as out:
        while True:
            states = _retry(run_states, plan.runs)
            if all(str(s["state"]) == "done" for s in states.values()):
                break
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"study not done after {timeout_s:.0f} s: "
                                   f"{ {r: str(s['state']) for r, s in states.items()} }")
            if sum(counts.values()) < faults:
                time.sleep(rng.uniform(0.5, 3.0))
                kind = rng.choice(kinds)
                what = injector.inject(kind)
                if what is not None:
                    counts[kind] += 1
                    out.write(json.dumps({"time": time.time(), "kind": kind, "what": what, "seed": seed}) + "\n")
                    out.flush()
                    invocations += kind == "reinvoke"
            else:
                time.sleep(1.0)
            if _needs_invocation(_retry(run_states, plan.runs)):
                _retry(run_plan, plan, options)   # what a user does: invoke the study again until it is done
                invocations += 1
    return {"faults": counts, "invocations": invocations, "wall_s": time.perf_counter() - t0}


def _record(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}


def compare(plan, reference) -> dict:
    """Per run against the fault-free study: weights, records, metrics lines, lock log, attempts."""
    ref = reference.by_id()
    rows, identical, duplicated, lost = {}, 0, 0, 0
    for spec in plan.runs:
        other, problems = ref[spec.run_id], []
        records = sorted(p.relative_to(other.run_dir) for p in other.run_dir.glob("evals/*.json"))
        for name in records:
            mine = spec.run_dir / name
            if not mine.exists():
                lost += 1
                problems.append(f"record {name} lost")
            elif (got := _record(mine)) != (want := _record(other.run_dir / name)):
                keys = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                problems.append(f"record {name} differs in {keys}: {[(got.get(k), want.get(k)) for k in keys][:3]}")
        if spec.role != "baseline":
            steps = spec.config.train.steps
            final, want = spec.layout.checkpoint(steps), other.layout.checkpoint(steps)
            if not final.exists():
                problems.append(f"final checkpoint {final.name} lost")
            else:
                got, expected = load_checkpoint(final)["models"], load_checkpoint(want)["models"]
                if any(not torch.equal(got[m][k], v) for m in expected for k, v in expected[m].items()):
                    problems.append("final weights differ")
            rows_got, rows_want = read_metrics(spec.layout.metrics), read_metrics(other.layout.metrics)
            logged = [r["step"] for r in rows_got]
            duplicated += len(logged) - len(set(logged))
            if logged != list(range(steps)):
                problems.append(f"metrics steps {logged}")
            elif [{k: v for k, v in r.items() if k not in TIMING} for r in rows_got] != \
                    [{k: v for k, v in r.items() if k not in TIMING} for r in rows_want]:
                problems.append("metrics values differ")
        problems += overlaps(read_log(spec.run_dir))
        attempts = len(spec.layout.attempts.read_text().splitlines()) if spec.layout.attempts.exists() else 0
        identical += not problems
        rows[spec.run_id] = {"attempts": attempts, "problems": problems}
    return {"runs": len(plan.runs), "bit_identical": identical, "steps_duplicated": duplicated,
            "records_lost": lost, "per_run": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    parser.add_argument("--out", type=Path, default=Path("/tmp/study-faults"))
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--reference", choices=("slurm", "debug"), default="slurm",
                        help="executor of the fault-free study (debug: in this process, faster; no wall time)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--total-steps", type=int, default=12, help="teacher + student steps (V-JEPA: the same)")
    parser.add_argument("--teacher-steps", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown fault kinds {unknown} (known: {', '.join(KINDS)})")
    if shutil.which("sbatch") is None:
        parser.error("sbatch not on PATH: start the local cluster (slurm/local_cluster.sh start; source its env.sh)")
    cluster_dir = Path(os.environ.get("SLURM_DIR", "/tmp/salt-slurm"))
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    cache = args.out / "cache"
    t0 = time.perf_counter()
    reference = micro_plan(args.out / "reference", cache, args.total_steps, args.teacher_steps)
    if args.reference == "slurm":
        run_plan(reference, slurm_options(args.partition, wait=True))
    else:
        run_plan(reference, LaunchOptions(executor="debug", threads=1))
    reference_s = time.perf_counter() - t0
    disk = None
    if "full_disk" in kinds:
        if _mount_tmpfs(args.out / "faulty"):
            disk = args.out / "faulty"
        else:
            print("full_disk: cannot mount a tmpfs (not root?): that kind is left out", file=sys.stderr)
            kinds.remove("full_disk")
    try:
        plan = micro_plan(args.out / "faulty", cache, args.total_steps, args.teacher_steps)
        outcome = run_faulty(plan, slurm_options(args.partition, wait=False), args.faults, kinds, args.seed,
                             args.out / "faults.jsonl", disk, cluster_dir, args.timeout)
        summary = {**outcome, **compare(plan, reference), "seed": args.seed,
                   "reference_wall_s": reference_s if args.reference == "slurm" else None}
    finally:
        cancel_jobs(micro_plan(args.out / "faulty", cache, args.total_steps, args.teacher_steps))
        if disk is not None:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if summary["bit_identical"] == summary["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
