"""Same lambda grid with and without pruning: compute used and whether the choice moves.

    .venv/bin/python benchmarks/tune_pruning.py [--data synthetic] [--grid 0,1e-4,...]
        [--pruner median] [--seeds 0,1,2]

Prints, per seed, the fit-epochs each search used, the fraction pruning needed of the full
grid, both choices of lambda, and whether they agree within one grid step. The issue's
target: under 0.5 of the compute with the same choice. Also reports whether lambda.min of
the full grid is interior (neither the smallest nor the largest lambda).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from segdecay.config import TrainConfig
from segdecay.demo import DEMO_CONFIG
from segdecay.tune import TuneOptions, parse_grid, run_tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--grid", default="0,1e-5,1e-4,1e-3,1e-2,1e-1")
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--select", default="min", choices=["min", "1se"])
    parser.add_argument("--recipe", default="default", choices=["default", "demo"],
                        help="TrainConfig defaults, or the demo's AdamW recipe")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    print(f"{'seed':>4} {'full epochs':>11} {'pruned epochs':>13} {'fraction':>8} "
          f"{'lambda full':>11} {'lambda pruned':>13} {'same/adjacent':>13} {'interior':>8}")
    for seed in (int(s) for s in args.seeds.split(",")):
        base = replace(DEMO_CONFIG if args.recipe == "demo" else TrainConfig(),
                       data=args.data, seed=seed)
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for pruner in ("none", args.pruner):
                opts = TuneOptions(grid=grid, folds=args.folds, pruner=pruner,
                                   select=args.select, seed=seed)
                results[pruner] = run_tune(base, opts, Path(tmp) / pruner, quiet=True)
        full, pruned = results["none"], results[args.pruner]
        a, b = full["chosen"], pruned["chosen"]
        close = abs(grid.index(a) - grid.index(b)) <= 1
        interior = full["lambda_min"] not in (grid[0], grid[-1])
        print(f"{seed:>4} {full['compute']['epochs_run']:>11} "
              f"{pruned['compute']['epochs_run']:>13} "
              f"{pruned['compute']['epochs_run'] / full['compute']['epochs_run']:>8.2f} "
              f"{a:>11g} {b:>13g} {str(close):>13} {str(interior):>8}", flush=True)
        curve = ", ".join(f"{p['lam']:g}: {p['mean']:.3f}±{p['se']:.3f}"
                          for p in full["selection"]["curve"])
        print(f"     full-grid CV curve: {curve}", flush=True)


if __name__ == "__main__":
    main()
