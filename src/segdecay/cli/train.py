"""``segdecay train``: one model into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segdecay.config import load_config
from segdecay.errors import UserError
from segdecay.options import add_train_options, config_from_args, given_options, option_name

EXIT_DIVERGED = 3  # the run stopped on a NaN/inf loss or exploding weights


def add_parser(sub) -> None:
    """The ``train`` subcommand."""
    p = sub.add_parser("train", help="train one model into a run folder",
                       description="Train one model; the run folder gets config.yaml, "
                       "metrics.csv, summary.json, decay.json, last.pt, best.pt, report.html.")
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    p.add_argument("--config", help="YAML file of training options (e.g. RUN/config.yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last.pt")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume); exit 3 when the run diverged."""
    from segdecay.training import Log, train

    out = Path(args.out)
    if args.resume:
        if not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out / 'config.yaml'} does not exist; nothing to resume")
        config = load_config(out / "config.yaml")
        ignored = [option_name(k) for k in given_options(args)]
        if ignored and not args.quiet:
            print(f"note: --resume continues {out / 'config.yaml'}; ignoring "
                  f"{' '.join(ignored)}", file=sys.stderr)
    else:
        config = config_from_args(args)
    summary = train(config, out, resume=args.resume, log=Log(quiet=args.quiet))
    if summary.get("status") == "diverged":
        print(f"segdecay train: diverged: {summary['reason']}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0
