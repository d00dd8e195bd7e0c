"""The command line every study script shares: `python studies/<study>.py [run|status] --preset ... --executor ...`.

A study script supplies its presets (dials), a pure `build(dials, preset, root, overrides) -> StudyPlan` and
`StudyHooks` (what to do with the records: results table, summary, report; they live in studies/, which may use
the analysis library that salt/ never imports); this module adds executors, profiles, `--dry-run` (everything
derived, nothing submitted) and `status`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from salt.config import load_config, to_dict
from salt.data import get_source
from salt.errors import DEBUG_FLAG, DEBUG_HELP, report_errors
from salt.study.estimate import (LoaderRate, fit_advice, loader_cores, read_loader_rate, step_flops,
                                 step_memory, tokens_per_clip)
from salt.study.launch import EXECUTORS, LaunchOptions, run_plan, run_states
from salt.study.spec import StudyError, StudyPlan, read_plan, with_benchmarks
from salt.study.state import RunState

# The dry run's CPU wall-time estimate, from the 2-core machine (benchmarks/README.md, idle): tiny steps at batch 32
# ran at 66-70 GFLOP/s in this code's accounting (pixel 231 ms, SALT 474 ms, V-JEPA 484 ms a step); one evaluation
# of a tiny checkpoint took ~8 s (smoke) and 47 s (fast; benchmarks/eval_fast.py); each run adds ~10 s of process
# start, data and model setup. Rough by design: it says whether a preset takes minutes or hours.
CPU_GFLOPS = 66.0
CPU_EVAL_S = {"smoke": 8.0, "fast": 47.0}
CPU_RUN_OVERHEAD_S = 10.0

# flag -> LaunchOptions key; a flag left unset keeps the profile's (or the default) value
LAUNCH_FLAGS = {"executor": "executor", "partition": "partition", "account": "account", "qos": "qos",
                "gpus_per_node": "gpus_per_node", "nodes": "nodes", "cpus_per_task": "cpus_per_task",
                "mem_gb": "mem_gb", "time": "time_min", "array_parallelism": "array_parallelism",
                "max_attempts": "max_attempts", "threads": "threads"}


STUDY_EPILOG = """examples:
  python studies/{study}.py --dry-run                  # runs, dependencies, FLOPs, CPU time; nothing runs
  python studies/{study}.py                            # the default preset on this machine, then a summary
  python studies/{study}.py status                     # pending / running / done / failed, with logs
  python studies/{study}.py --preset small --seeds 2   # replicates: seeds 0 and 1 of every run
  python studies/{study}.py --preset paper --dry-run --gpus-per-node 8 --gpu-mem-gb 80
  python studies/{study}.py --profile slurm/profiles/example_gpu.yaml   # on a SLURM cluster
  python -m analysis runs/studies/{study}-default      # report.md and figures

Rerunning skips finished runs and resubmits failed ones (docs/studies.md, docs/slurm.md). Errors you can fix
print one 'error:' line (exit 2); --debug or SALT_DEBUG=1 shows the traceback."""


def parser(study: str, presets: dict) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"studies/{study}.py", description=f"the {study} study",
                                epilog=STUDY_EPILOG.format(study=study),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="run", choices=("run", "status"),
                   help="run (default): train/evaluate what is not done; status: a table of the runs")
    p.add_argument("--preset", default="default", choices=sorted(presets))
    p.add_argument("--seeds", type=int, metavar="K",
                   help="replicates: seeds 0..K-1 of every run (train.seed: initialisation, data order and masks); "
                        "default: the preset's seeds. Seed 0 keeps the run ids it has without this flag, so "
                        "--seeds 2 on a finished study adds only the seed-1 runs")
    p.add_argument("--out", type=Path, help="study folder (default runs/studies/<study>-<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the runs, dependencies, FLOPs and GPU-hours")
    p.add_argument("--profile", type=Path, help="cluster profile YAML (slurm/profiles/): LaunchOptions keys")
    p.add_argument("--executor", choices=EXECUTORS)
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--gpus-per-node", type=int)
    p.add_argument("--nodes", type=int)
    p.add_argument("--cpus-per-task", type=int)
    p.add_argument("--mem-gb", type=float)
    p.add_argument("--time", type=int, help="minutes per job")
    p.add_argument("--array-parallelism", type=int)
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--threads", type=int, help="torch threads per job (0 = torch's default)")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return (then use `status`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override every run's config (salt config keys), e.g. --set data.video.list_path=k400.csv")
    p.add_argument("--benchmark", dest="benchmarks", action="append", default=[], metavar="NAME",
                   help="also evaluate every run on this benchmark (a YAML file or packaged name: k400, ssv2); "
                        "repeatable")
    p.add_argument("--gpu-tflops", type=float, default=400.0,
                   help="achieved TFLOP/s per GPU assumed for the dry run's GPU-hours (default 400, bf16 H100-class)")
    p.add_argument("--cpu-gflops", type=float, default=CPU_GFLOPS,
                   help=f"achieved GFLOP/s (this code's accounting) assumed for the dry run's CPU wall time "
                        f"(default {CPU_GFLOPS:g}: tiny steps on the 2-core machine, benchmarks/README.md)")
    p.add_argument("--gpu-mem-gb", type=float,
                   help="dry run: memory per GPU; runs whose step does not fit are named, with a setting that fits")
    p.add_argument("--loader-rate", metavar="FILE|NUMBER",
                   help="dry run: training clips/s one CPU core decodes from your video files (the JSON file of "
                        "`python benchmarks/video_loader.py --list LIST --out FILE`, or the number): each video run's "
                        "loader cores per GPU against --cpus-per-task, and the runs that would starve their GPUs")
    p.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return p


def parse_loader_rate(text: str) -> LoaderRate:
    """--loader-rate: a rate file (benchmarks/video_loader.py --list) when `text` names a file, else clips/s per
    core as a number; anything else is a StudyError that says which of the two was expected."""
    if Path(text).is_file():
        try:
            return read_loader_rate(text)
        except ValueError as error:
            raise StudyError(f"--loader-rate {error}") from None
    try:
        value = float(text)
    except ValueError:
        raise StudyError(f"--loader-rate {text}: no such file, and not a number (give the JSON file that `python "
                         "benchmarks/video_loader.py --list LIST --out FILE` writes, or clips/s per core)") from None
    if not (math.isfinite(value) and value > 0):
        raise StudyError(f"--loader-rate {text}: clips/s per core must be a finite number > 0")
    return LoaderRate(value, source="given as a number: clip settings unknown")


def launch_options(args) -> LaunchOptions:
    flags = [f"{key}={getattr(args, flag)}" for flag, key in LAUNCH_FLAGS.items() if getattr(args, flag) is not None]
    if args.no_wait:
        flags.append("wait=false")
    return load_config(LaunchOptions, [args.profile] if args.profile else [], flags)


def _used_fraction(student, teacher) -> float:
    """The part of the teacher's run a student is charged for: up to the checkpoint it starts from."""
    return student.teacher_step / teacher.config.train.steps if student.teacher_step > 0 else 1.0


def cpu_seconds(spec, cpu_gflops: float = CPU_GFLOPS) -> float:
    """Rough wall seconds of one run on a CPU (CPU_GFLOPS): training FLOPs at `cpu_gflops`, its evaluations
    (CPU_EVAL_S of its protocol; NaN for a protocol not measured there) and the per-run overhead."""
    evaluations = 1 + len([s for s in spec.eval_steps if s != spec.config.train.steps])
    train = 0.0 if spec.role == "baseline" else spec.estimated_flops / (cpu_gflops * 1e9)
    return train + evaluations * CPU_EVAL_S.get(spec.evaluation, float("nan")) + CPU_RUN_OVERHEAD_S


def data_budget(plan: StudyPlan, options: LaunchOptions, rate: LoaderRate, gpu_tflops: float) -> list[str]:
    """The dry run's data budget (--loader-rate): per trained run on video files, the clips/s one GPU trains and the
    loader cores that takes at the measured rate (`loader_cores`), against what the GPU's process has: each GPU is
    one task of cpus_per_task cores, one of which runs the training process. Then the runs that would starve their
    GPUs, what to do about it, and the runs whose clip settings differ from the measured ones."""
    lines = ["", f"data budget at {rate.clips_per_s_per_core:.3g} clips/s per core ({rate.source}) and {gpu_tflops:g} "
             f"TFLOP/s achieved per GPU. Each GPU is one task of {options.cpus_per_task} cores (--cpus-per-task), "
             f"one of them the training process itself: loader cores = data.num_workers, at most "
             f"{max(0, options.cpus_per_task - 1)}",
             f"{'run id':<38} {'clips/s/GPU':>11} {'cores needed':>12} {'loader cores':>12} {'GPU busy':>8}"]
    starving: dict[str, float] = {}       # run id -> cores needed
    other_clips: dict[str, list[str]] = {}   # how the clip settings differ -> run ids
    videos = 0                               # trained runs that decode video files
    for spec in plan.runs:
        cfg = spec.config
        if spec.role == "baseline" or spec.external:
            continue
        if not get_source(cfg.data.source).decodes_video:
            lines.append(f"{spec.run_id:<38} embedded data ({cfg.data.source}), no decoding")
            continue
        videos += 1
        budget = loader_cores(cfg, rate.clips_per_s_per_core, gpu_tflops, options.cpus_per_task)
        lines.append(f"{spec.run_id:<38} {budget.clips_per_s:>11,.0f} {budget.cores_needed:>12.1f} "
                     f"{budget.loader_cores:>12} {budget.gpu_busy:>8.0%}" + ("  starves" if budget.starves else ""))
        if budget.starves:
            starving[spec.run_id] = budget.cores_needed
        differences = rate.differences(cfg.data.video)
        if differences:
            other_clips.setdefault(", ".join(differences), []).append(spec.run_id)
    if not videos:
        return lines + ["no run decodes video files: nothing to budget"]
    lines += _starving_advice(starving, videos, options)
    for differences, run_ids in other_clips.items():
        lines.append(f"warning: the rate was measured with other clip settings (rate -> run: {differences}) than "
                     f"{len(run_ids)} runs ({', '.join(run_ids)}): it does not hold for them; measure with their "
                     "config (benchmarks/video_loader.py --list LIST --config CONFIG)")
    return lines


def _starving_advice(starving: dict[str, float], videos: int, options: LaunchOptions) -> list[str]:
    """The data budget's verdict: every video run keeps its GPUs fed, or the starving runs and what to do."""
    if not starving:
        return [f"every run on video files keeps its GPUs fed at --cpus-per-task {options.cpus_per_task}"]
    need = math.ceil(max(starving.values()))
    return [f"{len(starving)} of {videos} runs on video files would starve their GPUs (the GPU waits for clips): "
            f"{', '.join(starving)}",
            "what to do, any of:",
            "  prepare the files once: `python -m salt prepare-videos LIST OUT_DIR` (short side 256, a keyframe "
            "every 16 frames: cheaper decodes and seeks), point data.video.list_path at the list it writes and "
            "measure again (benchmarks/video_loader.py --list)",
            f"  more loader cores per GPU: --cpus-per-task {need + 1} --set data.num_workers={need} (one core is "
            "the training process)",
            f"  fewer GPUs per run or per node (--gpus-per-node, {options.gpus_per_node} now) with more "
            "--cpus-per-task each: a GPU needs as many loader cores however many GPUs share the batch, so a node's "
            "cores feed fewer GPUs"]


def describe(plan: StudyPlan, options: LaunchOptions, gpu_tflops: float, gpu_mem_gb: float | None = None,
             cpu_gflops: float = CPU_GFLOPS, loader_rate: LoaderRate | None = None) -> str:
    """The dry run: every run with what was derived for it, then totals. "paper" columns use the paper's
    accounting (predictor charged every token); "run" is what this code will compute and log. "mem GB" is the
    estimated memory of a step per GPU (bf16; salt.study.estimate.step_memory) on the profile's GPUs; "CPU min"
    the rough wall time of the run and its evaluations on a CPU (`cpu_seconds`). With `loader_rate`, the data
    budget (`data_budget`): whether each run's video files can feed its GPUs."""
    devices = max(1, options.gpus_per_node) * options.nodes
    lines = [f"study {plan.study}, preset {plan.preset}: {len(plan.runs)} runs in {len(plan.stages())} stages, "
             f"folder {plan.root}, executor {options.executor}", ""]
    header = (f"{'run id':<38} {'role':<8} {'size':<6} {'steps':>7} {'batch':>5} {'step run':>9} {'step paper':>10} "
              f"{'run paper':>9} {'+teachers':>9} {'GPU-h':>7} {'mem GB':>7} {'CPU min':>8}  stage: depends on | labels")
    lines += [header, "-" * len(header)]
    paper_total: dict[str, float] = {}   # run id -> paper-accounting FLOPs of the run and its teacher chain
    by_id = plan.by_id()
    total_run = total_paper = cpu_total = 0.0
    misfits = []
    for stage_index, stage in enumerate(plan.stages()):
        for spec in stage:
            cfg = spec.config
            wall = cpu_seconds(spec, cpu_gflops)
            cpu_total += wall
            if spec.role == "baseline":
                lines.append(f"{spec.run_id:<38} {'baseline':<8} {cfg.model.size:<6}  evaluated, not trained "
                             f"(~{wall / 60:.1f} CPU min)")
                continue
            if spec.external:   # an imported encoder (or an earlier run): finished elsewhere, no FLOPs here
                lines.append(f"{spec.run_id:<38} {spec.role:<8} {cfg.model.size:<6}  made outside the study, not "
                             f"trained here: {spec.run_dir}")
                continue
            per_step, paper = step_flops(cfg), step_flops(cfg, accounting="paper")
            own = paper * cfg.train.steps
            upstream = sum(paper_total.get(d, 0.0) * _used_fraction(spec, by_id[d]) for d in spec.depends_on)
            paper_total[spec.run_id] = own + upstream
            total_run += spec.estimated_flops
            total_paper += own
            labels = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.labels.items())
            memory = step_memory(cfg, devices=devices).total
            lines.append(f"{spec.run_id:<38} {spec.role:<8} {cfg.model.size:<6} {cfg.train.steps:>7} "
                         f"{cfg.train.batch_size:>5} {per_step:>9.3e} {paper:>10.3e} {own:>9.3e} "
                         f"{paper_total[spec.run_id]:>9.3e} {own / (gpu_tflops * 1e12) / 3600:>7.1f} {memory:>7.1f} "
                         f"{wall / 60:>8.3g}  "
                         f"{stage_index}: {','.join(spec.depends_on) or '-'} | {labels}")
            if gpu_mem_gb is not None and memory > gpu_mem_gb:
                misfits.append(f"  {spec.run_id}: {memory:.1f} GB; {fit_advice(cfg, devices, gpu_mem_gb)}")
    lines += _mask_lines(plan)
    lines += ["", f"total training FLOPs (each run once): {total_run:.3e} as this code counts, {total_paper:.3e} in "
              f"the paper's accounting; ~{total_paper / (gpu_tflops * 1e12) / 3600:,.0f} GPU-hours at "
              f"{gpu_tflops:g} TFLOP/s achieved per GPU"]
    lines.append(f"estimated wall time on a CPU, one run at a time (the local executor): ~{cpu_total / 3600:.2f} h "
                 f"at {cpu_gflops:g} GFLOP/s achieved + {', '.join(f'{k} {v:g} s' for k, v in CPU_EVAL_S.items())} "
                 f"per evaluation + {CPU_RUN_OVERHEAD_S:g} s per run (rates of the idle 2-core machine; shared "
                 "cores are several times slower)")
    if gpu_mem_gb is not None:
        lines += ([f"{len(misfits)} runs do not fit {gpu_mem_gb:g} GB per GPU ({devices} GPUs per run):", *misfits]
                  if misfits else [f"every run fits {gpu_mem_gb:g} GB per GPU ({devices} GPUs per run)"])
    if loader_rate is not None:
        lines += data_budget(plan, options, loader_rate, gpu_tflops)
    lines.append("nothing was submitted (--dry-run)")
    return "\n".join(lines)


def _mask_lines(plan: StudyPlan) -> list[str]:
    """Tokens per clip that the trained runs' masks keep (valid) and compute (row length, padding included), one
    line per distinct mask config and batch size: what mask.equalize / mask.cut_group cost in context."""
    seen, lines = set(), []
    for spec in plan.runs:
        cfg = spec.config
        key = (json.dumps(to_dict(cfg.mask), sort_keys=True), cfg.train.batch_size, cfg.data.source)
        if spec.role == "baseline" or key in seen:
            continue
        seen.add(key)
        how = (f"{cfg.mask.kind}, pad" if cfg.mask.equalize == "pad" else
               f"{cfg.mask.kind}, cut per {cfg.mask.cut_group} clips" if cfg.mask.cut_group else
               f"{cfg.mask.kind}, cut over the batch")
        pairs = "; ".join(f"pair {i + 1}: context {t['context_kept']:.0f} ({t['context_computed']:.0f}), target "
                          f"{t['target_kept']:.0f} ({t['target_computed']:.0f})"
                          for i, t in enumerate(tokens_per_clip(cfg)))
        lines.append(f"masks ({how}, batch {cfg.train.batch_size}, e.g. {spec.run_id}): tokens kept per clip "
                     f"(computed, padding included): {pairs}")
    return ["", *lines] if lines else []


def status_table(plan: StudyPlan, options: LaunchOptions, states: dict[str, dict] | None = None) -> str:
    """One line per run (state, attempts, job id, the last error or SLURM's reason or the log path), then counts."""
    states = run_states(plan.runs) if states is None else states
    counts: dict[str, int] = {}
    lines = [f"{'run id':<40} {'role':<8} {'state':<13} {'tries':>5} {'job':>10}  log / error"]
    for spec in plan.runs:
        s = states[spec.run_id]
        counts[s["state"].value] = counts.get(s["state"].value, 0) + 1
        detail = s["error"] or s["reason"] or s["stderr"]
        lines.append(f"{spec.run_id:<40} {spec.role:<8} {s['state']:<13} {s['attempts']:>5} {s['job_id']:>10}  {detail}")
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)


def with_seeds(dials, seeds: int | None):
    """The preset's dials with seeds 0..seeds-1 (`--seeds K`); None keeps the preset's own seeds."""
    if seeds is None:
        return dials
    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    if not dataclasses.is_dataclass(dials) or "seeds" not in {f.name for f in dataclasses.fields(dials)}:
        raise StudyError(f"--seeds: this study's dials ({type(dials).__name__}) have no seeds")
    return dataclasses.replace(dials, seeds=list(range(seeds)))


@dataclass(frozen=True)
class StudyHooks:
    """What a study does with its records (studies/reporting.py supplies these; each may be left out), and what it
    runs on top of its plan (studies/hpo_student.py: an optuna search over the teacher the plan trains)."""
    results: Callable[[StudyPlan], Path | str] | None = None   # after every invocation: the results table
    summarize: Callable[[Path], str] | None = None             # once every run is done: printed
    report: Callable[[Path], Path] | None = None               # once every run is done: report and figures
    arguments: Callable[[argparse.ArgumentParser], None] | None = None   # the study's own options (and epilog)
    # after the plan, for each action: "dry-run" (say what it would run), "status" (what it ran), "run" (run it,
    # once run_plan returned) -> an exit code; the larger of it and the plan's is the command's
    then: Callable[[str, StudyPlan, LaunchOptions, argparse.Namespace], int] | None = None


def study_main(study: str, presets: dict, build: Callable[..., StudyPlan], argv: list[str] | None = None,
               hooks: StudyHooks = StudyHooks()) -> int:
    """-> the exit code: 0 when every run is done or on its way (queued, running, requeued, completing,
    suspended: `RunState.is_healthy`), 1 when some run failed or cannot start, 2 on a study error (one `error:`
    line, salt.errors). `status` answers the same way, so a script can poll it."""
    return report_errors(lambda args: _study_main(study, presets, build, args, hooks), argv)


def _study_main(study: str, presets: dict, build: Callable[..., StudyPlan], argv: list[str],
                hooks: StudyHooks) -> int:
    p = parser(study, presets)
    if hooks.arguments:
        hooks.arguments(p)
    args = p.parse_args(argv)
    root = args.out or Path("runs") / "studies" / f"{study}-{args.preset}"
    rate = parse_loader_rate(args.loader_rate) if args.loader_rate is not None else None
    if rate is not None and not args.dry_run:
        raise StudyError("--loader-rate informs the dry run only: add --dry-run")
    options = launch_options(args)
    if args.action == "status":
        plan = read_plan(root)
        states = run_states(plan.runs)
        print(status_table(plan, options, states))
        if hooks.results:
            hooks.results(plan)
        code = 0 if all(s["state"].is_healthy for s in states.values()) else 1
        return max(code, hooks.then("status", plan, options, args)) if hooks.then else code
    plan = build(with_seeds(presets[args.preset], args.seeds), args.preset, root, args.overrides)
    plan = with_benchmarks(plan, args.benchmarks)
    if args.dry_run:
        print(describe(plan, options, args.gpu_tflops, args.gpu_mem_gb, args.cpu_gflops, rate))
        return hooks.then("dry-run", plan, options, args) if hooks.then else 0
    states = run_plan(plan, options)
    print(status_table(plan, options, states))
    if hooks.results:
        print(f"\nresults: {hooks.results(plan)}")
    code = 0 if all(s["state"].is_healthy for s in states.values()) else 1
    if all(s["state"] is RunState.DONE for s in states.values()):
        if hooks.summarize:
            print(hooks.summarize(plan.root))
        if hooks.report:
            print(f"report and figures: {hooks.report(plan.root)}")
    return max(code, hooks.then("run", plan, options, args)) if hooks.then else code
