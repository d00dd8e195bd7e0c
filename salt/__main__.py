"""Command line: `salt` (or `python -m salt`) `teacher|student|vjepa|<method command> --config CONFIG [--resume]
key=value ...` (one command per registered method, salt.objectives.registry; options and overrides in any order),
`eval RUN_DIR [--checkpoint STEP] [--protocol fast|systematic|smoke] [--benchmark NAME ...] [--selection strict|paper]
[--encoder default|online|ema] [key=value ...]` (key=value: benchmark settings), `import-encoder {videomae,vjepa2}
SOURCE OUT_DIR [key=value ...]` (a released encoder as a run folder, salt.importers), `prepare-videos LIST OUT_DIR
[--short-side 256 --gop 16 ...]` (a video list re-encoded once for training, salt.data.prepare; docs/data.md) and
`demo [--preset tiny|small]`. A failure the user can fix is one `error:` line (salt.errors); `--debug` or
SALT_DEBUG=1 shows its traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from salt.config import PACKAGED_CONFIGS, load_config, resolve_config
from salt.errors import DEBUG_FLAG, DEBUG_HELP, report_errors
from salt.objectives import methods

DESCRIPTION = "salt: video self-supervised learning with frozen teachers (SALT, arXiv 2509.24317)."
EPILOG = """examples:
  salt demo                                             # teacher -> SALT student, V-JEPA, probes, a table
  salt teacher --config tiny_teacher train.steps=600 name=my-teacher
  salt student --config tiny_student --teacher runs/my-teacher name=my-student
  salt eval runs/my-student --protocol fast
  salt <command> --help                                 # each command's options and examples

Errors you can fix print one 'error:' line (exit 2); --debug or SALT_DEBUG=1 shows the traceback.
Docs: README.md, docs/*.md"""
TRAIN_EPILOG = """examples:
  salt {command} --config {config}{teacher} train.steps=100 name=my-run
  salt {command} --config {config}{teacher} --print-config train.steps=7   # the resolved config; nothing runs
  salt {command} --config {config}{teacher} name=my-run --resume train.steps=200   # any order

--config takes a YAML file or a packaged name (salt/configs/: tiny_*, micro_*, paper_*); repeat it to layer.
Overrides are dotted key=value (an unknown key or a wrong type is an error naming it). The run folder is
out_dir/name: config.yaml, metrics.jsonl, checkpoints/, done.json (a finished run is never retrained)."""
EVAL_EPILOG = """examples:
  salt eval runs/my-run                                   # latest checkpoint, fast protocol, the run's own data
  salt eval runs/my-run --checkpoint 2000 --protocol systematic
  salt eval runs/my-run --benchmark k400 train_list=/data/k400/train.csv val_list=/data/k400/val.csv
  salt eval runs/my-run --benchmark my_bench.yaml --selection paper

Writes RUN_DIR/evals/step_XXXXXXXX_<protocol>[@<benchmark>].json (docs/records.md; docs/evaluation.md)."""
IMPORT_EPILOG = """examples:
  salt import-encoder videomae enc/videomae-base runs/videomae-b data.video.list_path=train.csv
  salt import-encoder vjepa2 enc/vitl.pt runs/vjepa2-l data.video.list_path=train.csv data.video.resolution=256
  salt student --config paper_vitl_student --teacher runs/vjepa2-l data.video.list_path=train.csv

No network is used: download the release first (docs/importers.md)."""
PREPARE_EPILOG = """examples:
  salt prepare-videos raw/train.csv prepared/                     # local cores
  salt prepare-videos raw/train.csv prepared/ --short-side 320 --chunk-seconds 0
  salt prepare-videos raw/train.csv prepared/ --profile slurm/profiles/example_gpu.yaml   # a SLURM job array

Then train on prepared/train.csv. Rerun the same command to finish what is left (docs/data.md)."""
DEMO_EPILOG = """examples:
  salt demo                       # the tiny preset into runs/demo (minutes on a CPU)
  salt demo --preset small --out runs/demo-small

Re-running skips finished runs and resumes interrupted ones."""


def _parser(name: str, sub, epilog: str, **kwargs) -> argparse.ArgumentParser:
    p = sub.add_parser(name, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    """The `salt` console script and `python -m salt`: the exit code (user errors: one line, salt.errors)."""
    return report_errors(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="salt", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    by_command = {m.command: m for m in methods() if m.trains}
    for command, method in by_command.items():
        config = f"tiny_{command}" if (PACKAGED_CONFIGS / f"tiny_{command}.yaml").is_file() else "my_config.yaml"
        teacher = " --teacher runs/my-teacher" if method.needs_teacher else ""   # a finished run folder
        p = _parser(command, sub, TRAIN_EPILOG.format(command=command, config=config, teacher=teacher),
                    help=f"{method.help or 'train'} (objective.method={method.name})")
        p.add_argument("--config", action="append", default=[],
                       help="YAML file or packaged config name (e.g. tiny_teacher); repeat to layer")
        p.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.set_defaults(teacher="")
        if method.needs_teacher:
            p.add_argument("--teacher", metavar="RUN_DIR", default="",
                           help="a finished run folder (import-encoder output or any earlier run) as the frozen "
                                "teacher: sets objective.teacher_checkpoint and objective.teacher.* from its "
                                "config.yaml; key=value overrides still win")
        p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    e = _parser("eval", sub, EVAL_EPILOG, help="evaluate a run's checkpoint and write its record to RUN_DIR/evals/")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", type=int, default=None, help="step of the checkpoint (default: the latest)")
    e.add_argument("--protocol", default="fast", help="fast | systematic | smoke")
    e.add_argument("--benchmark", action="append", default=[],
                   help="a benchmark YAML or packaged name (k400, ssv2), repeatable; default: the run's own data")
    e.add_argument("--selection", default="strict", choices=("strict", "paper"),
                   help="strict: chosen on a train holdout (default); paper: best of the grid on val (optimistic)")
    e.add_argument("--encoder", default="default", choices=("default", "online", "ema"),
                   help="V-JEPA runs: the EMA target encoder (default) or the online one")
    e.add_argument("overrides", nargs="*", help="benchmark settings, e.g. train_list=/data/train.csv (one benchmark)")
    d = _parser("demo", sub, DEMO_EPILOG, help="teacher -> student, V-JEPA baseline, probes, on the embedded data")
    d.add_argument("--preset", default="tiny")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("overrides", nargs="*", help="key=value overrides applied to all three runs")
    i = _parser("import-encoder", sub, IMPORT_EPILOG,
                help="a released VideoMAE / V-JEPA 2 encoder (local copy) as a run folder")
    i.add_argument("family", choices=("videomae", "vjepa2"))
    i.add_argument("source", help="Hugging Face folder (config.json + safetensors) or the release's .pth/.pt file")
    i.add_argument("out_dir", help="the run folder to write")
    i.add_argument("--entry", default="", help="entry of an original checkpoint (default: target_encoder/encoder "
                                               "for vjepa2, model/module for videomae)")
    i.add_argument("--num-heads", type=int, default=None, help="attention heads, for widths that are not a release's")
    i.add_argument("--config", action="append", default=[], help="YAML layers for the run's data (clip size, list)")
    i.add_argument("overrides", nargs="*", help="key=value, e.g. data.video.list_path=val.csv")
    v = _parser("prepare-videos", sub, PREPARE_EPILOG,
                help="re-encode a video list once for fast training (docs/data.md)")
    v.add_argument("list", help="video list ('path label' per line; .csv: comma-separated)")
    v.add_argument("out_dir", help="folder for videos/, the new list (same name), report.json")
    v.add_argument("--short-side", type=int, default=256, help="scale so the short side is this, never up (even)")
    v.add_argument("--gop", type=int, default=16, help="frames between keyframes (closed GOPs): a clip decodes at "
                                                      "most gop - 1 frames before its first")
    v.add_argument("--chunk-seconds", type=float, default=10.0,
                   help="cut longer videos into files of about this length (a tail under half a chunk joins the "
                        "chunk before); 0 = one file per video")
    v.add_argument("--max-fps", type=float, default=0.0, help="drop frames to at most this rate; 0 = keep the rate")
    v.add_argument("--crf", type=int, default=23,
                   help="x264 quality (default 23, x264's own: finer than a 224 px crop of a 256 px frame shows)")
    v.add_argument("--preset", default="veryfast",
                   help="x264 preset (default veryfast: several times faster than medium for ~10%% larger files; "
                        "the files are written once and decode as fast either way)")
    v.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="files encoded side by side (default: "
                                                                            "the cores)")
    v.add_argument("--retry-failed", action="store_true", help="also redo inputs recorded as failed")
    v.add_argument("--profile", type=Path, help="cluster profile YAML (slurm/profiles/): a job array of shards, "
                                                "cpus_per_task workers each")
    v.add_argument("--shards", type=int, default=1000, help="--profile: array tasks at most (default 1000)")
    args, extra = parser.parse_known_args(argv)
    if extra:   # key=value overrides after an option (`... train.steps=2 --resume out_dir=runs`), as Hydra allows
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra

    if args.command == "eval":
        return _evaluate(args)
    if args.command == "import-encoder":
        import shlex
        from salt.importers import import_encoder
        done = import_encoder(args.family, args.source, args.out_dir, configs=args.config,
                              overrides=args.overrides, entry=args.entry, num_heads=args.num_heads)
        print(json.dumps(done, indent=2))
        student = ["salt", "student", "--config", "CONFIG", "--teacher", args.out_dir]
        print(f"run folder: {args.out_dir}\nas a teacher: {shlex.join(student)}")
        return 0
    if args.command == "prepare-videos":
        return _prepare_videos(args)
    if args.command == "demo":
        from salt.demo import run_demo
        run_demo(args.preset, args.out, args.overrides)
        return 0
    from salt.schema import RunConfig
    files = [resolve_config(c) for c in args.config]
    teacher = []
    if args.teacher:
        from salt.importers import run_teacher_overrides
        teacher = run_teacher_overrides(args.teacher)
    cfg = load_config(RunConfig, files, [f"objective.method={by_command[args.command].name}", *teacher,
                                         *args.overrides])
    if args.print_config:
        import yaml
        from salt.config import to_dict
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from salt.eval.periodic import evaluation_hooks
    from salt.train.loop import run_dir_for, train
    summary = train(cfg, resume=args.resume, checkpoint_hooks=evaluation_hooks(cfg))
    print(json.dumps(summary, indent=2))
    print(f"run folder: {run_dir_for(cfg)}")
    return 0


def _evaluate(args) -> int:
    """eval: every benchmark is checked (loaded) before the first is evaluated; one record each."""
    from salt.eval.benchmark import load_benchmark
    from salt.eval.evaluate import eval_protocol, evaluate_run
    from salt.eval.record import record_path
    eval_protocol(args.protocol, args.selection)   # an unknown protocol fails before any work
    if args.overrides and len(args.benchmark) != 1:
        raise ValueError(f"key=value overrides ({' '.join(args.overrides)}) set a benchmark's keys: give "
                         "exactly one --benchmark with them")
    benchmarks = [load_benchmark(b, args.overrides) for b in args.benchmark] or [None]
    for bench in benchmarks:
        record = evaluate_run(args.run_dir, args.checkpoint, args.protocol, benchmark=bench,
                              selection=args.selection, encoder=args.encoder)
        print(json.dumps({"benchmark": record.benchmark, "encoder": record.encoder,
                          "selection": record.selection, "metrics": record.metrics, "losses": record.losses,
                          "probes": {p.column: round(p.test_accuracy, 4) for p in record.probes}}, indent=2))
        print(f"record: {record_path(args.run_dir, record.checkpoint_step, record.evaluation, record.benchmark)}")
    return 0


def _prepare_videos(args) -> int:
    """prepare-videos: locally with --workers processes, or as a job array with --profile. 0 when every input is
    finished (failures are in the report), 1 when some are left (rerun to finish them)."""
    from salt.data.prepare import PrepareOptions, prepare_collection, summary
    options = PrepareOptions(short_side=args.short_side, gop=args.gop, chunk_seconds=args.chunk_seconds,
                             max_fps=args.max_fps, crf=args.crf, preset=args.preset)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.profile:
        from salt.study.launch import LaunchOptions
        from salt.study.prepare import prepare_on_cluster
        launch = load_config(LaunchOptions, [args.profile])
        report = prepare_on_cluster(args.list, args.out_dir, options, launch, args.shards, args.retry_failed)
    else:
        report = prepare_collection(args.list, args.out_dir, options, workers=args.workers,
                                    retry_failed=args.retry_failed)
    print(summary(report))
    return 1 if report["unfinished"] else 0

if __name__ == "__main__":
    sys.exit(main())
