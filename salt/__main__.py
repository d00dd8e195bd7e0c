"""Command line: `python -m salt teacher|student|vjepa|<method command> --config CONFIG [--resume] key=value ...`
(one command per registered method, salt.objectives.registry),
`python -m salt eval RUN_DIR [--checkpoint STEP] [--protocol fast|systematic] [--benchmark NAME ...]
[--selection strict|paper] [--encoder default|online|ema] [key=value ...]` (key=value: benchmark settings),
`python -m salt import-encoder {videomae,vjepa2} SOURCE OUT_DIR [key=value ...]` (a released encoder as a run
folder, salt.importers) and `python -m salt demo [--preset tiny|small]`."""
from __future__ import annotations

import argparse
import json
import sys

from salt.config import ConfigError, load_config, resolve_config
from salt.objectives import methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    by_command = {m.command: m for m in methods()}
    for command, method in by_command.items():
        p = sub.add_parser(command, help=f"{method.help or 'train'} (objective.method={method.name})")
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
    e = sub.add_parser("eval", help="evaluate a run's checkpoint and write its record to RUN_DIR/evals/")
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
    d = sub.add_parser("demo", help="teacher -> student, V-JEPA baseline, probes, on the embedded data")
    d.add_argument("--preset", default="tiny")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("overrides", nargs="*", help="key=value overrides applied to all three runs")
    i = sub.add_parser("import-encoder", help="a released VideoMAE / V-JEPA 2 encoder (local copy) as a run folder")
    i.add_argument("family", choices=("videomae", "vjepa2"))
    i.add_argument("source", help="Hugging Face folder (config.json + safetensors) or the release's .pth/.pt file")
    i.add_argument("out_dir", help="the run folder to write")
    i.add_argument("--entry", default="", help="entry of an original checkpoint (default: target_encoder/encoder "
                                               "for vjepa2, model/module for videomae)")
    i.add_argument("--num-heads", type=int, default=None, help="attention heads, for widths that are not a release's")
    i.add_argument("--config", action="append", default=[], help="YAML layers for the run's data (clip size, list)")
    i.add_argument("overrides", nargs="*", help="key=value, e.g. data.video.list_path=val.csv")
    args = parser.parse_args(argv)

    try:
        if args.command == "eval":
            from salt.eval.benchmark import load_benchmark
            from salt.eval.evaluate import eval_protocol, evaluate_run
            from salt.eval.record import record_path
            eval_protocol(args.protocol, args.selection)   # an unknown protocol fails before any work
            if args.overrides and len(args.benchmark) != 1:
                raise ValueError(f"key=value overrides ({' '.join(args.overrides)}) set a benchmark's keys: give "
                                 "exactly one --benchmark with them")
            benchmarks = [load_benchmark(b, args.overrides) for b in args.benchmark] or [None]
            for bench in benchmarks:   # every benchmark is checked (loaded) before the first is evaluated
                record = evaluate_run(args.run_dir, args.checkpoint, args.protocol, benchmark=bench,
                                      selection=args.selection, encoder=args.encoder)
                print(json.dumps({"benchmark": record.benchmark, "encoder": record.encoder,
                                  "selection": record.selection, "metrics": record.metrics, "losses": record.losses,
                                  "probes": {p.column: round(p.test_accuracy, 4) for p in record.probes}}, indent=2))
                print(f"record: {record_path(args.run_dir, record.checkpoint_step, record.evaluation, record.benchmark)}")
            return 0
        if args.command == "import-encoder":
            import shlex
            from salt.importers import import_encoder
            done = import_encoder(args.family, args.source, args.out_dir, configs=args.config,
                                  overrides=args.overrides, entry=args.entry, num_heads=args.num_heads)
            print(json.dumps(done, indent=2))
            student = ["python", "-m", "salt", "student", "--config", "CONFIG", "--teacher", args.out_dir]
            print(f"run folder: {args.out_dir}\nas a teacher: {shlex.join(student)}")
            return 0
        if args.command == "demo":
            from salt.demo import run_demo
            run_demo(args.preset, args.out, args.overrides)
            return 0
        from salt.schema import RunConfig
        from salt.train.loop import run_dir_for, train
        files = [resolve_config(c) for c in args.config]
        teacher = []
        if args.teacher:
            from salt.importers import run_teacher_overrides
            teacher = run_teacher_overrides(args.teacher)
        cfg = load_config(RunConfig, files, [f"objective.method={by_command[args.command].name}", *teacher,
                                             *args.overrides])
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:   # a checkpoint whose tensors do not match (salt.checkpoint.load_matching)
        if args.command != "import-encoder":
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml
        from salt.config import to_dict
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from salt.eval.periodic import evaluation_hooks
    summary = train(cfg, resume=args.resume, checkpoint_hooks=evaluation_hooks(cfg))
    print(json.dumps(summary, indent=2))
    print(f"run folder: {run_dir_for(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
