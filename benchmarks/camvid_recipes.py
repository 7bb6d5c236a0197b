"""CamVid on CPU at reduced resolution: segdecay's recipe next to two reference recipes.

Trains at 192x256 (bf16 autocast), evaluates at the labels' 360x480 on the test split, and
prints train minutes and test mIoU per recipe, all at the same budget:

- ``segdecay``: the defaults (SGD momentum 0.9, lr 0.05, coupled lambda 5e-4, norm/bias
  excluded, bf16 autocast where native)
- ``torchvision``: SGD 0.01 momentum 0.9, coupled wd 1e-4 on all parameters, poly, plain CE
- ``smp``: Adam 2e-4, no decay, Dice loss, cosine (smp's example)

    .venv/bin/python benchmarks/camvid_recipes.py --recipes segdecay --epochs 30 \
        --camvid ../shared/data/camvid --out runs/camvid_recipes

About 10 CPU-minutes per recipe on two cores for 30 epochs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from segdecay.config import TrainConfig
from segdecay.runs import evaluate_run
from segdecay.training import Log, train

RECIPES = {
    "segdecay": {},
    "torchvision": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4,
                    "decay_mode": "coupled", "no_decay": "none", "schedule": "poly"},
    "smp": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 0.0, "loss": "dice",
            "schedule": "cosine"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", default="../shared/data/camvid")
    parser.add_argument("--out", default="runs/camvid_recipes")
    parser.add_argument("--recipes", default="segdecay,torchvision,smp")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                        help="lambda of the segdecay recipe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = TrainConfig(data=f"camvid:{args.camvid}", size=[192, 256], augment="light",
                       epochs=args.epochs, batch_size=8, amp=True, eval_every=5,
                       seed=args.seed, weight_decay=args.weight_decay)
    rows = []
    for name in args.recipes.split(","):
        out = Path(args.out) / name
        summary = train(replace(base, **RECIPES[name]), out, log=Log())
        test = evaluate_run(out, split="test", checkpoint="last", quiet=True)
        rows.append((name, summary["algorithm"], summary["train_seconds"] / 60,
                     summary["final_val_miou"], test["miou"]))
        (out / "recipe.json").write_text(json.dumps(
            {"recipe": name, "val_miou": summary["final_val_miou"], "test_miou": test["miou"],
             "test_iou": test["iou"], "train_minutes": summary["train_seconds"] / 60}, indent=2))
    print(f"{'recipe':<12} {'algorithm':<48} {'minutes':>7} {'val mIoU':>8} {'test mIoU':>9}")
    for name, algo, minutes, val, test in rows:
        print(f"{name:<12} {algo:<48} {minutes:>7.1f} {val:>8.3f} {test:>9.3f}")


if __name__ == "__main__":
    main()
