"""``segdecay tune``: choose lambda by k-fold cross-validation (Optuna)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from segdecay.config import TrainConfig
from segdecay.options import (
    add_options,
    add_train_options,
    config_from_args,
    given_options,
    options_from_args,
)
from segdecay.studies.tune.options import TuneOptions, derived_options


def add_parser(sub) -> None:
    """The ``tune`` subcommand."""
    p = sub.add_parser("tune", help="choose lambda by k-fold cross-validation (Optuna)",
                       description="Search lambda (and optionally lr, decay mode, loss, class "
                       "weights) by k-fold CV on the training split, or on the val split with "
                       "--holdout; writes tune.json, trials.csv, report.html. "
                       "Rerunning the same command resumes the study.")
    p.add_argument("--out", required=True, help="tune folder to create (or resume)")
    p.add_argument("--config", help="YAML file of training options for every fit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_options(p, TuneOptions, "search")
    add_train_options(p)
    p.set_defaults(func=run)


def study_inputs(args: argparse.Namespace) -> tuple[TrainConfig, TuneOptions]:
    """The train config and the study's options from the parsed command line. The options
    are read first, so a bad one is reported before a bad train option, as it always was;
    the study's seed is the config's --seed (fold assignment follows it)."""
    derived = derived_options(given_options(args, TuneOptions))
    options = options_from_args(TuneOptions, args, derived)
    config = config_from_args(args)
    return config, replace(options, seed=config.seed)


def run(args: argparse.Namespace) -> int:
    """Run or resume the study, then write tune.json and the report."""
    from segdecay.studies.tune import run_tune

    config, options = study_inputs(args)
    run_tune(config, options, Path(args.out), quiet=args.quiet)
    return 0
