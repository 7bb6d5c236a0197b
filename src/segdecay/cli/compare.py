"""``segdecay compare``: regularizers or imbalance treatments over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdecay.errors import UserError
from segdecay.options import add_options, add_train_options, config_from_args, options_from_args
from segdecay.studies.compare.options import PRESETS, CompareOptions


def add_parser(sub) -> None:
    """The ``compare`` subcommand."""
    p = sub.add_parser("compare", help="compare regularizers or imbalance treatments over seeds",
                       description="Train every variant with every seed on the same data, then "
                       "write compare.json, compare.csv and report.html with mean/sd tables "
                       "and paired tests against the baseline. Rerun to resume.")
    p.add_argument("--out", required=True, help="comparison folder (runs/NAME/seedS inside)")
    p.add_argument("--variant", action="append", metavar="'NAME: --option value ...'",
                   help="a variant: train options merged over the base (repeatable)")
    p.add_argument("--variants", metavar="FILE.yaml",
                   help="variants from YAML: 'variants: {NAME: {option: value}}'")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="built-in variants: none/L2/decoupled/L1/dropout/decoupled+dropout, "
                   "or class weights and losses at the same decay")
    p.add_argument("--from-tune", metavar="RUN",
                   help="use the lambda a finished segdecay tune chose as the preset strength")
    add_options(p, CompareOptions)
    p.add_argument("--config", help="YAML file of base train options")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the variants, train every (variant, seed), write the comparison."""
    from segdecay.data import load_dataset_for
    from segdecay.studies.compare import parse_variant, run_compare
    from segdecay.studies.compare.variants import lambda_from_tune, load_variants, preset_variants
    from segdecay.training.defaults import resolve_defaults

    config = config_from_args(args)
    variants = [parse_variant(v) for v in args.variant or []]
    if args.variants:
        variants += load_variants(args.variants)
    data = None
    if args.preset:
        data = load_dataset_for(config)
        lam = (lambda_from_tune(args.from_tune) if args.from_tune
               else resolve_defaults(config, data)[0].weight_decay)
        variants += preset_variants(args.preset, config, lam, data.info.num_classes)
    elif args.from_tune:
        raise UserError("--from-tune sets the strength of a --preset; give --preset too")
    options = options_from_args(CompareOptions, args, {"variants": variants})
    run_compare(config, options, Path(args.out), quiet=args.quiet, data=data)
    return 0
