"""python -m analysis STUDY_DIR [STUDY_DIR ...] [--out DIR] [--target COLUMN] [--bootstrap N] [--evaluation NAME]
[--benchmark NAME|all]"""
from __future__ import annotations

import argparse
import sys
import time

from salt.errors import DEBUG_FLAG, DEBUG_HELP, report_errors

EPILOG = """examples:
  python -m analysis runs/studies/compute_allocation-default          # report.md + figures/ in STUDY_DIR/analysis
  python -m analysis runs/studies/teacher_selection-default --bootstrap 200 --no-figures
  python -m analysis STUDY_DIR --benchmark all                        # a report per benchmark and an index
  python -m analysis STUDY_A STUDY_B --out runs/analysis-ab           # several studies in one frame
  python -m analysis results/teacher_selection-default --summary       # the printed answer of published records

docs/analysis.md explains every table and figure. Errors you can fix print one 'error:' line (exit 2);
--debug or SALT_DEBUG=1 shows the traceback."""


def main(argv: list[str] | None = None) -> int:
    """-> the exit code (a study folder it cannot read: one `error:` line and 2, salt.errors)."""
    return report_errors(_main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=(
        "Analyse study folder(s): power-law fits with bootstrap intervals, compute-optimal teacher share, "
        "teacher-selection metrics. Writes report.md and figures/ (PNG + PDF)."), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR")
    parser.add_argument("--out", help="output folder (default: STUDY_DIR/analysis)")
    parser.add_argument("--target", help="accuracy column (default: probe.linear.time.motion.10, else the "
                                         "first probe.attentive.* column)")
    parser.add_argument("--bootstrap", type=int,
                        help="bootstrap resamples, also the permutations of the p-values (default 1000, 200 with "
                             "--predict; 0: none)")
    parser.add_argument("--evaluation", help="evaluation name (default: the one covering the most runs)")
    parser.add_argument("--benchmark", help="the records' benchmark to analyse (default: 'default', the runs' own "
                                            "data, when there; else the one covering the most runs); 'all': one "
                                            "report per benchmark in OUT/<benchmark>/ and OUT/report.md indexing "
                                            "their answers")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--allow-partial", action="store_true",
                        help="analyse what is there when runs lack done.json or records (default: refuse)")
    parser.add_argument("--no-figures", action="store_true", help="write report.md only")
    parser.add_argument("--predict", action="append", type=float, metavar="BUDGET",
                        help="print each curve's forecast of one new run's accuracy at BUDGET (the study's budget "
                             "units: steps, or FLOPs for a study budgeted in FLOPs) from both predictors (direct, "
                             "two-step through the student's loss) with 90%% prediction intervals, and the rollout "
                             "check; repeat it for several budgets; writes no report (--bootstrap default 200 "
                             "here)")
    parser.add_argument("--choose-by", metavar="LOSS",
                        help="print the checkpoint each run's LOSS picks (train_loss, heldout_loss or a losses.* "
                             "column) against the probe's, the run each recipe's loss picks, and the regret; "
                             "writes no report")
    parser.add_argument("--summary", action="store_true",
                        help="print each study's answer, as the study prints it when its runs are done (its kind's "
                             "verdict and table); writes no report")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if args.bootstrap is not None and args.bootstrap < 0:
        parser.error("--bootstrap must be >= 0")
    from analysis.report import run   # after argument errors: keep --help fast

    if args.predict or args.choose_by or args.summary:
        return _print_answers(args)

    t0 = time.perf_counter()
    path = run(args.study_dirs, args.out, target=args.target, evaluation=args.evaluation,
               n_boot=_resamples(args, 1000), seed=args.seed,
               allow_partial=args.allow_partial,
               figures=not args.no_figures, benchmark=args.benchmark)
    print(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _resamples(args, default: int) -> int:
    """--bootstrap, or the default of what is being computed (1000; the forecast's own, which refits per draw)."""
    return default if args.bootstrap is None else args.bootstrap


def _print_answers(args) -> int:
    """--summary, --predict and --choose-by: print the answer, the forecast and the checkpoint choice (no report
    written)."""
    from analysis.choice import criterion_column
    from analysis.forecast import N_BOOT
    from analysis.printed import choose_text, predict_text
    from analysis.report import summarize

    common = dict(target=args.target, evaluation=args.evaluation, benchmark=args.benchmark,
                  allow_partial=args.allow_partial, seed=args.seed)
    if args.summary:
        for study_dir in args.study_dirs:
            print(summarize(study_dir, n_boot=_resamples(args, 1000), **common))
    if args.choose_by:
        criterion_column(args.choose_by)   # a ValueError naming the choices
    if args.predict:
        print(predict_text(args.study_dirs, args.predict, n_boot=_resamples(args, N_BOOT), **common))
    if args.choose_by:
        print(choose_text(args.study_dirs, args.choose_by, n_boot=_resamples(args, 1000), **common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
