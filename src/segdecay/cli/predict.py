"""``segdecay predict``: index masks and colour overlays for new images."""

from __future__ import annotations

import argparse

from segdecay.config import RUN_CHECKPOINTS, RUN_DECISIONS, RUN_TTAS


def add_parser(sub) -> None:
    """The ``predict`` subcommand."""
    p = sub.add_parser("predict", help="write index masks and colour overlays",
                       description="Predict masks for an image or a folder of images.")
    p.add_argument("run", help="run folder")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="folder for NAME_mask.png and NAME_overlay.png")
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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write NAME_mask.png and NAME_overlay.png per input image."""
    from segdecay.runs import predict_paths

    predict_paths(args.run, args.input, args.out, checkpoint=args.checkpoint,
                  eval_size=args.eval_size, device=args.device, quiet=args.quiet,
                  decision=args.decision, tta=args.tta)
    return 0
