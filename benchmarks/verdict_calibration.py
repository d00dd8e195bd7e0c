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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.allocation import share_comparisons  # noqa: E402
from analysis.replicates import replicate_means  # noqa: E402

SHARES = (0.1, 0.2, 0.4, 0.6)


def study(seed: int, gap: float, seeds: int = 2, sd: float = 0.06) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    runs = [("salt", share, 0.6 + gap) for share in SHARES] + [("vjepa", np.nan, 0.6)]
    return pd.DataFrame([{"group": group, "budget": 5e13, "teacher_share": share, "flops_total": 5e13,
                          "run_key": f"{group}-{share}-{s}", "acc": mean + sd * rng.standard_normal()}
                         for group, share, mean in runs for s in range(seeds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.1, 0.25])
    args = parser.parse_args()
    print(f"{args.studies} simulated studies per gap: 4 shares + V-JEPA, 2 seeds, seed sd 0.06, 1000 resamples")
    for gap in args.gaps:
        alone = family = 0
        for seed in range(args.studies):
            table = share_comparisons(replicate_means(study(seed, gap), "acc", n_boot=1000, seed=seed))
            best = table[table["best"]].iloc[0]
            alone += best["vs_vjepa"] == "ahead"
            family += best["vs_vjepa_family"] == "ahead"
        print(f"gap {gap:+.2f}: best share called ahead, judged alone {alone / args.studies:.1%}, "
              f"with every share at once {family / args.studies:.1%}")


if __name__ == "__main__":
    main()
