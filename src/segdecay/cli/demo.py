"""``segdecay demo``: choose lambda on the embedded synthetic data, on a laptop CPU.

A lambda grid with 3-fold cross-validation and median pruning, then a refit with the chosen
lambda scored on the test split: the whole product in about three minutes on two cores.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from segdecay.config import TrainConfig
from segdecay.studies.tune import TuneOptions, run_tune

# U-Net / ResNet-18 from scratch with the default optimizer (SGD, momentum 0.9, lr 0.05,
# coupled L2). The only changes are batch 2 and 40 epochs: a fold holds just 16 images of
# 64x64, and SGD from scratch needs the steps (320 per fit). The grid spans no decay to
# heavy decay (lr*lambda/(1-momentum) = 5% shrink per step at 1e-1); over three seeds the
# full grid's optimum is 1e-2 (benchmarks/tune_pruning.py).
DEMO_CONFIG = TrainConfig(data="synthetic", epochs=40, batch_size=2)
DEMO_TUNE = TuneOptions(grid=[0.0, 1e-4, 1e-3, 1e-2, 1e-1], folds=3, pruner="median",
                        select="1se", refit=True)


def add_parser(sub) -> None:
    """The ``demo`` subcommand."""
    p = sub.add_parser("demo", help="train on the embedded synthetic data and report",
                       description="A small end-to-end run on the synthetic dataset.")
    p.add_argument("--out", default="runs/demo", help="output folder [default: runs/demo]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Tune lambda on the synthetic data and print the curve."""
    run_demo(Path(args.out), quiet=args.quiet)
    return 0


def run_demo(out: Path, quiet: bool = False) -> dict:
    """Tune lambda into ``out`` (replacing an earlier demo there) and print the curve."""
    if (out / "tune.json").exists():
        shutil.rmtree(out)
    payload = run_tune(DEMO_CONFIG, DEMO_TUNE, out, quiet=quiet)
    if not quiet:
        print(f"\n{'lambda':>8} {'CV mIoU':>8} {'SE':>6} {'train mIoU':>10} {'fit-epochs':>10}")
        for t in sorted(payload["trials"], key=lambda t: t["weight_decay"]):
            cv = f"{t['cv_mean']:.3f}" if t["folds_done"] else "-"
            se = f"{t['cv_se']:.3f}" if t["folds_done"] > 1 else "-"
            tr = f"{t['train_miou']:.3f}" if t["train_miou"] is not None else "-"
            note = " (pruned)" if t["pruned"] else ""
            print(f"{t['weight_decay']:>8g} {cv:>8} {se:>6} {tr:>10} {t['epochs_run']:>10}{note}")
        if payload.get("refit"):
            r = payload["refit"]
            print(f"\nrefit with lambda = {r['weight_decay']:g}: {r['split']} mIoU "
                  f"{r['miou']:.3f}; open {out / 'report.html'}")
    return payload
