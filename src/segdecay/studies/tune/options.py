"""What a tune searches and how: the options of ``segdecay tune``, parsed and checked up front."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from segdecay.config import CLASS_WEIGHTS, DECAY_MODES, LOSSES
from segdecay.decay import default_decay_mode
from segdecay.decay.optimizers import SIGN_FLIP
from segdecay.errors import UserError

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("auto", "screen", "race", "none", "median", "hyperband", "wilcoxon")
WILCOXON_P = 0.1  # the Wilcoxon pruner's one-sided p threshold
# Measured on the demo grid (benchmarks/tune_pruning.py, 3 seeds, README "Measured results").
MID_SCHEDULE_BIAS = ("note: --pruner {pruner} compares runs mid-schedule, where lightly "
                     "decayed runs are ahead; on the demo grid the median pruner chose one "
                     "grid step smaller lambda than the full grid in 3 of 3 seeds, Hyperband "
                     "in 2. --pruner race compares final scores of whole folds.")
SELECTIONS = ("1se", "1se-unpaired", "min")
REFIT_LAMBDAS = ("transfer", "same")


@dataclass
class TuneOptions:
    """What to search, how to score it, where the study lives."""

    grid: list[float] | None = None
    tau_grid: list[float] | None = None  # decay timescales in epochs, instead of a lambda grid
    range: tuple[float, float] | None = None
    search: str = "grid"
    trials: int | None = None
    lr_grid: list[float] | None = None
    modes: list[str] | None = None
    losses: list[str] | None = None  # data losses searched with lambda (the whole recipe)
    weightings: list[str] | None = None  # class-weight schemes searched with lambda
    folds: int = 3
    group_by: str | None = None
    repeats: int = 1
    holdout: bool = False  # score every fit on the data's val split; folds = 1, repeats = seeds
    pruner: str = "auto"  # screen for a grid, race for random/tpe (resolve_pruner)
    screen_fraction: float = 0.3  # --pruner screen: the short rung's share of the budget
    lambda_scale: float = 1.0  # set by the screen: its fits train lambda x this (tau moved)
    storage: str | None = None
    study: str = "segdecay"
    workers: int = 1
    select: str = "1se"
    refit: bool = False
    refit_steps: int | None = None  # tune short, train long: the refit's budget
    refit_epochs: int | None = None
    refit_size: list[int] | None = None  # tune at small inputs, refit at these (HxW)
    refit_lambda: str = "transfer"  # transfer: hold tau / run length; same: the CV's lambda
    seed: int = 0
    heartbeat: int = 10
    rule_point: bool = True  # score the default rule's lambda (or tau) beside the searched


def design_words(options: TuneOptions) -> str:
    """The scoring design in words: '3-fold CV x 1 repeat(s)' or the holdout's seeds."""
    if options.holdout:
        return f"holdout on the val split x {options.repeats} seed(s)"
    return f"{options.folds}-fold CV x {options.repeats} repeat(s)"


def parse_grid(text: str, option: str = "--grid") -> list[float]:
    """'0,1e-5,1e-4' -> sorted unique floats >= 0."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise UserError(f"{option} '{text}': expected comma-separated numbers") from exc
    if not values or min(values) < 0 or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} '{text}': need finite values >= 0")
    return values


def parse_range(text: str) -> tuple[float, float]:
    """'1e-6:1e-1' -> (1e-6, 1e-1), a log-uniform range (so both ends must be > 0)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError as exc:
        raise UserError(f"--range '{text}': expected LOW:HIGH, e.g. 1e-6:1e-1") from exc
    if not 0 < lo < hi:
        raise UserError(f"--range '{text}': need 0 < LOW < HIGH (log-uniform; use --grid to "
                        "include lambda = 0)")
    return lo, hi


def resolve_pruner(options: TuneOptions, epochs: int, steps: int | None) -> TuneOptions:
    """``auto``: the screen for a grid of at least 3 decay values whose fits the screen can
    shorten (measured: the full grid's choice in 3 of 3 demo seeds at 0.70 of its
    fit-epochs; README "Measured results"), else the race (random and TPE searches have no
    grid to screen; a screen of 1-2 values or of 1-epoch fits would add work, not save it)."""
    if options.pruner != "auto":
        return options
    values = options.tau_grid or options.grid or []
    budget = steps or epochs
    shortens = max(1, round(budget * options.screen_fraction)) < budget
    screen = options.search == "grid" and len(values) >= 3 and shortens
    return replace(options, pruner="screen" if screen else "race")


def validate(options: TuneOptions) -> None:
    """Refuse inconsistent options before any work starts."""
    if options.search not in SEARCHES:
        raise UserError(f"--search '{options.search}': choose one of {', '.join(SEARCHES)}")
    if options.pruner not in PRUNERS:
        raise UserError(f"--pruner '{options.pruner}': choose one of {', '.join(PRUNERS)}")
    if options.select not in SELECTIONS:
        raise UserError(f"--select '{options.select}': choose one of {', '.join(SELECTIONS)}")
    if options.tau_grid is not None:
        if options.grid or options.search != "grid":
            raise UserError("--tau-grid is a grid search of its own: give it without --grid, "
                            "--range or --search random/tpe")
        if min(options.tau_grid) <= 0:
            raise UserError("--tau-grid: timescales must be > 0 epochs (use --grid 0,... for "
                            "no decay)")
    elif options.search == "grid" and not options.grid:
        raise UserError("--search grid needs --grid L1,L2,... (e.g. 0,1e-5,1e-4,1e-3,1e-2)")
    if options.search != "grid" and options.range is None:
        raise UserError(f"--search {options.search} needs --range LOW:HIGH")
    if options.search != "grid" and not options.trials:
        raise UserError(f"--search {options.search} needs --trials N")
    if options.pruner == "wilcoxon" and options.folds * options.repeats < wilcoxon_min_fits():
        raise UserError(
            f"--pruner wilcoxon with {options.folds} folds x {options.repeats} repeat(s): its "
            f"one-sided test cannot reach p < {WILCOXON_P:g} before the last of "
            f"{options.folds * options.repeats} fits (the smallest p after n fits is 1/2^n), "
            f"so it would never prune a trial it has not finished; use at least "
            f"{wilcoxon_min_fits()} fits (--folds, --repeats) or --pruner race")
    _validate_screen(options)
    for flag, values, choices in (("--decay-modes", options.modes, DECAY_MODES),
                                  ("--loss-grid", options.losses, LOSSES),
                                  ("--class-weights-grid", options.weightings, CLASS_WEIGHTS)):
        unknown = [v for v in values or [] if v not in choices]
        if unknown:
            raise UserError(f"{flag} '{unknown[0]}': unknown choice; choose from "
                            f"{', '.join(choices)}")
    _validate_refit(options)
    _validate_holdout(options)
    for name in ("folds", "repeats", "workers"):
        if getattr(options, name) < 1:
            raise UserError(f"--{name} {getattr(options, name)}: must be at least 1")


def _validate_screen(options: TuneOptions) -> None:
    """The screen trains every grid point at a fraction of the budget: a grid, 0 < f < 1."""
    if options.pruner != "screen":
        return
    if options.search != "grid":
        raise UserError(f"--pruner screen trains every grid point at a short budget first: "
                        f"use --grid or --tau-grid, not --search {options.search}")
    if not 0 < options.screen_fraction < 1:
        raise UserError(f"--screen-fraction {options.screen_fraction:g}: must lie between 0 "
                        "and 1 (the short rung's share of each fit's budget)")


def _validate_holdout(options: TuneOptions) -> None:
    """A holdout tune has one fit per seed on the val split: no folds, no groups."""
    if not options.holdout:
        return
    if options.folds != 1:
        raise UserError(f"--holdout scores every fit on the val split, so there are no folds: "
                        f"drop --folds {options.folds} (use --repeats R for R training seeds)")
    if options.group_by is not None:
        raise UserError("--holdout keeps the dataset's own val split: drop --group-by")


def _validate_refit(options: TuneOptions) -> None:
    """A longer refit budget: one of steps or epochs, positive, with a known lambda rule."""
    if options.refit_steps and options.refit_epochs:
        raise UserError("--refit-steps and --refit-epochs: give one budget for the refit")
    for flag, value in (("--refit-steps", options.refit_steps),
                        ("--refit-epochs", options.refit_epochs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if options.refit_lambda not in REFIT_LAMBDAS:
        raise UserError(f"--refit-lambda '{options.refit_lambda}': choose one of "
                        f"{', '.join(REFIT_LAMBDAS)}")


def parse_choices(text: str | None) -> list[str] | None:
    """'ce,ce+dice' -> ['ce', 'ce+dice'] (order kept, duplicates dropped); None passes."""
    if not text:
        return None
    return list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))


def validate_against(options: TuneOptions, optimizer: str, decay_mode: str | None,
                     lr: float) -> None:
    """Refuse a lambda grid or range that would make a decoupled trial flip the weights' sign.

    Checked before the study starts, so no worker fails on its tenth trial; ``--tau-grid``
    needs no check (lr·lambda = 1/(tau·steps per epoch) < 1 for tau above one step).
    """
    modes = options.modes or [decay_mode or default_decay_mode(optimizer)]
    if "decoupled" not in modes:
        return
    lams = options.grid if options.tau_grid is None and options.grid else []
    if options.search != "grid" and options.range is not None:
        lams = [options.range[1]]
    option = "--grid" if options.search == "grid" else "--range"
    scale = options.lambda_scale  # the screen's short runs train lambda x this
    where = "" if scale == 1 else f" (x{scale:g} in --pruner screen's short runs)"
    for rate in options.lr_grid or [lr]:
        bad = [lam for lam in lams if rate * lam * scale >= 1]
        if bad:
            raise UserError(f"{option} lambda {max(bad):g}{where} with --lr {rate:g}: "
                            f"lr·lambda = {rate * max(bad) * scale:g} >= 1, so {SIGN_FLIP}; "
                            "lower the grid")


def wilcoxon_min_fits() -> int:
    """Fewest fits at which the Wilcoxon pruner can prune before a trial's last fit: the
    smallest one-sided exact p after n paired fits is 1/2^n, so it needs 1/2^n < p at some
    n below the number of fits."""
    n = 1
    while 0.5**n >= WILCOXON_P:
        n += 1
    return n + 1
