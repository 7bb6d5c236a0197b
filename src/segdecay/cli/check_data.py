"""``segdecay check-data``: validate a dataset and list every problem."""

from __future__ import annotations

import argparse
import sys

from segdecay.config import MASK_ENCODINGS, TrainConfig


def add_parser(sub) -> None:
    """The ``check-data`` subcommand."""
    p = sub.add_parser("check-data", help="validate a dataset and list every problem",
                       description="Check a dataset the way train loads it, but report every "
                       "problem (missing or orphan masks, sizes, labels, corrupt files) with its "
                       "file, plus counts, sizes and class frequencies. Exit 0 when clean, 2 "
                       "otherwise.")
    p.add_argument("spec", help="dataset spec: synthetic | camvid:PATH | folder:PATH")
    p.add_argument("--num-classes", type=int, help="classes of a folder: dataset")
    p.add_argument("--class-names", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                   metavar="A,B,...", help="class names of a folder: dataset")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="hold-out fraction when there is no val split [default: 0.2]")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out split [default: 0]")
    p.add_argument("--mask-encoding", default="auto", choices=list(MASK_ENCODINGS),
                   help=TrainConfig.fields()["mask_encoding"].metadata["help"]
                   + " [default: auto]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the check; exit 2 when it found problems."""
    from segdecay.data.check import check_data, format_check

    result = check_data(args.spec, num_classes=args.num_classes, class_names=args.class_names,
                        val_fraction=args.val_fraction, seed=args.seed,
                        mask_encoding=args.mask_encoding)
    print(format_check(result), flush=True)
    if result.ok:
        return 0
    print(f"segdecay check-data: error: {len(result.problems)} problem(s) in {args.spec}",
          file=sys.stderr)
    return 2
