"""``segdecay tune``: choose lambda by k-fold cross-validation (Optuna)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segdecay.options import add_train_options, config_from_args
from segdecay.studies.tune.options import PRUNERS, REFIT_LAMBDAS, SEARCHES, SELECTIONS


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
    s = p.add_argument_group("search")
    s.add_argument("--grid", metavar="L1,L2,...", help="lambda grid, 0 allowed")
    s.add_argument("--tau-grid", metavar="T1,T2,...",
                   help="grid of decay timescales tau in epochs of the CV fits, converted per "
                   "optimizer to lambda = 1/(tau x steps per epoch x effective lr), so one "
                   "grid means one strength for SGD, SGDW, Adam+L2 and AdamW")
    s.add_argument("--range", metavar="LOW:HIGH", help="log-uniform lambda range (random/tpe)")
    s.add_argument("--search", choices=list(SEARCHES),
                   help="grid | random | tpe [default: grid with --grid, else tpe]")
    s.add_argument("--trials", type=int, help="number of trials for random / tpe")
    s.add_argument("--lr-grid", metavar="LR1,LR2", help="also search these learning rates")
    s.add_argument("--decay-modes", metavar="M1,M2", help="also search these decay modes")
    s.add_argument("--loss-grid", metavar="L1,L2",
                   help="also search these data losses (ce, dice, focal, ce+dice, lovasz): "
                   "the report says what each part of the chosen recipe bought, paired")
    s.add_argument("--class-weights-grid", metavar="W1,W2",
                   help="also search these class weights (none, inverse, median, enet); "
                   "weights apply to ce and ce+dice, other pairs are skipped")
    s.add_argument("--folds", type=int, help="k of k-fold CV [default: 3]")
    s.add_argument("--holdout", action="store_true",
                   help="no folds: train every fit on the whole training split and score it on "
                   "the dataset's val split, at the full budget; --repeats R trains R seeds "
                   "and the paired rule compares lambdas seed by seed")
    s.add_argument("--group-by", metavar="REGEX",
                   help="images whose names give the same match (group 1 if any) share a fold "
                   "[default: the dataset's groups: CamVid sequences]")
    s.add_argument("--repeats", type=int, default=1, help="repeated CV with new fold seeds")
    s.add_argument("--pruner", default="auto", choices=list(PRUNERS),
                   help="stop hopeless trials early, comparing like with like; screen: every "
                   "grid point first as complete short runs (tau kept as a fraction of the "
                   "run), the selection's lambdas then at the full budget under the race; "
                   "race: paired comparisons of whole-fold scores [default: auto = screen "
                   "for a grid, race for random/tpe]")
    s.add_argument("--screen-fraction", type=float, default=0.3, metavar="F",
                   help="--pruner screen: the short runs' share of each fit's epochs or "
                   "steps [default: 0.3]")
    s.add_argument("--select", default="1se", choices=list(SELECTIONS),
                   help="1se: paired lambda.1se (same folds, Nadeau-Bengio corrected SE); "
                   "1se-unpaired: glmnet's rule; min: lambda.min [default: 1se]")
    s.add_argument("--refit", action="store_true",
                   help="retrain on the whole training split with the chosen lambda, score test")
    s.add_argument("--refit-steps", type=int, metavar="N",
                   help="tune short, train long: refit for N optimizer steps (implies --refit)")
    s.add_argument("--refit-epochs", type=int, metavar="N",
                   help="refit for N epochs instead of the fold fits' (implies --refit)")
    s.add_argument("--refit-size", metavar="HxW",
                   help="refit (and score) at these inputs, e.g. after fits at a smaller --size "
                   "(implies --refit)")
    s.add_argument("--refit-lambda", default="transfer", choices=list(REFIT_LAMBDAS),
                   help="at a longer refit budget, transfer: scale lambda so tau stays the same "
                   "fraction of the run; same: keep the CV's lambda [default: transfer]")
    s.add_argument("--rule-point", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the lambda of segdecay's default rule (tau half the fits' "
                   "run) on the same fits, and say whether any searched lambda beat it beyond "
                   "the paired band, by how much, at what compute [default: on]")
    w = p.add_argument_group("study storage and workers")
    w.add_argument("--storage", metavar="URL",
                   help="sqlite:///FILE | journal:FILE | postgresql://USER:PASS@HOST/DB "
                   "[default: OUT/study.db, or OUT/study.journal with --workers > 1]")
    w.add_argument("--study", default="segdecay", help="study name shared by all workers")
    w.add_argument("--workers", type=int, default=1, help="local worker processes [default: 1]")
    w.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="a trial silent for 2x this long is failed and retried [default: 10]")
    add_train_options(p)
    p.set_defaults(func=run)


def _folds(args: argparse.Namespace) -> int:
    """k of the CV: --folds, 3 by default, 1 with --holdout (which refuses --folds)."""
    if args.holdout:
        return 1 if args.folds is None else args.folds  # validate() names a given --folds
    return 3 if args.folds is None else args.folds


def run(args: argparse.Namespace) -> int:
    """Run or resume the study, then write tune.json and the report."""
    from segdecay.config import parse_size
    from segdecay.studies.tune import TuneOptions, parse_grid, parse_range, run_tune
    from segdecay.studies.tune.options import parse_choices

    options = TuneOptions(
        grid=parse_grid(args.grid) if args.grid else None,
        range=parse_range(args.range) if args.range else None,
        tau_grid=parse_grid(args.tau_grid, "--tau-grid") if args.tau_grid else None,
        search=args.search or ("grid" if args.grid or args.tau_grid else "tpe"),
        trials=args.trials,
        lr_grid=parse_grid(args.lr_grid, "--lr-grid") if args.lr_grid else None,
        modes=parse_choices(args.decay_modes), losses=parse_choices(args.loss_grid),
        weightings=parse_choices(args.class_weights_grid),
        folds=_folds(args), holdout=args.holdout, group_by=args.group_by,
        repeats=args.repeats, pruner=args.pruner,
        screen_fraction=args.screen_fraction,
        storage=args.storage, study=args.study, workers=args.workers, select=args.select,
        refit=args.refit or bool(args.refit_steps or args.refit_epochs or args.refit_size),
        refit_steps=args.refit_steps, refit_epochs=args.refit_epochs,
        refit_size=list(parse_size(args.refit_size, "--refit-size") or []) or None,
        refit_lambda=args.refit_lambda, heartbeat=args.heartbeat,
        rule_point=args.rule_point,
    )
    config = config_from_args(args)
    options.seed = config.seed  # fold assignment follows --seed too
    run_tune(config, options, Path(args.out), quiet=args.quiet)
    return 0
