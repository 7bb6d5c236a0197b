"""``segdecay evaluate``: per-class IoU of a run on a split."""

from __future__ import annotations

import argparse

from segdecay.config import RUN_CHECKPOINTS, RUN_DECISIONS, RUN_TTAS, SPLITS


def add_parser(sub) -> None:
    """The ``evaluate`` subcommand."""
    p = sub.add_parser("evaluate", help="per-class IoU of a run on a split",
                       description="Evaluate a run at label resolution over a whole split.")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="dataset spec (default: the run's own)")
    p.add_argument("--split", default="val", choices=list(SPLITS),
                   help="split to score [default: val]")
    p.add_argument("--checkpoint", default="run", choices=list(RUN_CHECKPOINTS),
                   help="run: the weights the run answers with (its --checkpoint); best: "
                        "its best validation's; last: its final ones [default: run]")
    p.add_argument("--eval-size", metavar="HxW", help="input size (default: the run's)")
    p.add_argument("--decision", default="run", choices=list(RUN_DECISIONS),
                   help="run: decide pixels as the run chose (its --decision); argmax: by "
                        "the plain logits [default: run]")
    p.add_argument("--tta", default="run", choices=list(RUN_TTAS),
                   help="test-time augmentation, averaging probabilities: run (the run's "
                        "choice on val) | none | flip | d4 [default: run]")
    p.add_argument("--out", help="JSON file to write [default: RUN/eval_SPLIT.json]")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score and write RUN/eval_SPLIT.json."""
    from segdecay.runs import evaluate_run

    evaluate_run(args.run, data=args.data, split=args.split, checkpoint=args.checkpoint,
                 out=args.out, eval_size=args.eval_size, device=args.device, quiet=args.quiet,
                 decision=args.decision, tta=args.tta)
    return 0
