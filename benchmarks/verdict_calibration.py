"""How often the allocation verdict calls SALT's best teacher share ahead of V-JEPA, judged alone and judged with
every share at once (analysis.replicates.Replicates.against), on simulated studies with a known answer.

    .venv/bin/python benchmarks/verdict_calibration.py [--studies 1000] [--gaps 0 0.1 0.25]

Each simulated study has one budget: SALT at four teacher shares whose true accuracy is V-JEPA's plus `gap`, and
V-JEPA; 2 seeds per setting, seed sd 0.06 (the small study measured 0.061); 1,000 bootstrap resamples. At gap 0 the
"ahead" calls are false (a one-sided call of a 95% interval: 2.5% nominal); at a positive gap they are the power.
No timing: a statistical calibration, numpy only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.allocation import share_comparisons  # noqa: E402
from analysis.replicates import replicate_means  # noqa: E402
from analysis.synthetic import SHARE_RUNS_TARGET, share_runs  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.1, 0.25])
    args = parser.parse_args()
    print(f"{args.studies} simulated studies per gap: 4 shares + V-JEPA, 2 seeds, seed sd 0.06, 1000 resamples")
    for gap in args.gaps:
        alone = family = 0
        for seed in range(args.studies):
            table = share_comparisons(replicate_means(share_runs(seed, gap), SHARE_RUNS_TARGET, n_boot=1000, seed=seed))
            best = table[table["best"]].iloc[0]
            alone += best["vs_vjepa"] == "ahead"
            family += best["vs_vjepa_family"] == "ahead"
        print(f"gap {gap:+.2f}: best share called ahead, judged alone {alone / args.studies:.1%}, "
              f"with every share at once {family / args.studies:.1%}")


if __name__ == "__main__":
    main()
