"""What a tune searches and how: the options of ``segdecay tune``, parsed and checked up front."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from segdecay.config import (
    CLASS_WEIGHTS,
    DECAY_MODES,
    LOSSES,
    flag_of,
    internal,
    option,
    parse_size,
)
from segdecay.decay.modes import SIGN_FLIP, resolved_decay_mode
from segdecay.errors import UserError
from segdecay.options import parse_grid

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("auto", "screen", "race", "none", "median", "hyperband", "wilcoxon")
WILCOXON_P = 0.1  # the Wilcoxon pruner's one-sided p threshold
# The short-horizon bias, measured on the demo grid in docs/results.md ("Median, Hyperband
# and Wilcoxon on the SGD demo grid").
MID_SCHEDULE_BIAS = ("note: --pruner {pruner} compares runs mid-schedule, where lightly "
                     "decayed runs are ahead, so it tends to choose a smaller lambda than the "
                     "full grid would; --pruner race compares final scores of whole folds.")
SELECTIONS = ("1se", "1se-unpaired", "min")
REFIT_LAMBDAS = ("transfer", "same")


STORAGE = "study storage and workers"  # the help heading of where the study lives


def parse_range(text: str, flag: str = "--range") -> tuple[float, float]:
    """'1e-6:1e-1' -> (1e-6, 1e-1), a log-uniform range (so both ends must be > 0)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError as exc:
        raise UserError(f"{flag} '{text}': expected LOW:HIGH, e.g. 1e-6:1e-1") from exc
    if not 0 < lo < hi:
        raise UserError(f"{flag} '{text}': need 0 < LOW < HIGH (log-uniform; use --grid to "
                        "include lambda = 0)")
    return lo, hi


def parse_choices(text: str | None, flag: str = "") -> list[str] | None:
    """'ce,ce+dice' -> ['ce', 'ce+dice'] (order kept, duplicates dropped); None passes.
    Names are checked by :func:`validate`, which the Python API goes through too, so
    ``flag`` (the flag, for errors) goes unused here."""
    if not text:
        return None
    return list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))


def parse_refit_size(text: str, flag: str) -> list[int] | None:
    """'HxW' or 'S' -> [H, W]; 'native' -> None (the fits' own inputs)."""
    size = parse_size(text, flag)
    return list(size) if size else None


@dataclass
class TuneOptions:
    """What to search, how to score it, where the study lives. Each field is a flag of
    ``segdecay tune``, declared here with its help and default, except ``seed``;
    :func:`derived_options` lists the values the command works out from other options."""

    grid: list[float] | None = option(None, "lambda grid, 0 allowed", metavar="L1,L2,...",
                                      parse=parse_grid)
    tau_grid: list[float] | None = option(  # decay timescales instead of a lambda grid
        None, "grid of decay timescales tau in epochs of the CV fits, converted per optimizer "
        "to lambda = 1/(tau x steps per epoch x effective lr), so one grid means one "
        "strength for SGD, SGDW, Adam+L2 and AdamW", metavar="T1,T2,...", parse=parse_grid)
    range: tuple[float, float] | None = option(None, "log-uniform lambda range (random/tpe)",
                                               metavar="LOW:HIGH", parse=parse_range)
    search: str = option("grid", "grid | random | tpe", choices=SEARCHES,
                         default_text="grid with --grid, else tpe")
    trials: int | None = option(None, "number of trials for random / tpe")
    lr_grid: list[float] | None = option(None, "also search these learning rates",
                                         metavar="LR1,LR2", parse=parse_grid)
    modes: list[str] | None = option(None, "also search these decay modes",
                                     flag="--decay-modes", metavar="M1,M2",
                                     parse=parse_choices)
    losses: list[str] | None = option(  # data losses searched with lambda (the whole recipe)
        None, "also search these data losses (ce, dice, focal, ce+dice, lovasz): the report "
        "says what each part of the chosen recipe bought, paired", flag="--loss-grid",
        metavar="L1,L2", parse=parse_choices)
    weightings: list[str] | None = option(  # class-weight schemes searched with lambda
        None, "also search these class weights (none, inverse, median, enet); weights apply "
        "to ce and ce+dice, other pairs are skipped", flag="--class-weights-grid",
        metavar="W1,W2", parse=parse_choices)
    folds: int = option(3, "k of k-fold CV")
    holdout: bool = option(  # score every fit on the data's val split; folds = 1
        False, "no folds: train every fit on the whole training split and score it on the "
        "dataset's val split, at the full budget; --repeats R trains R seeds and the paired "
        "rule compares lambdas seed by seed", switch=True)
    group_by: str | None = option(
        None, "images whose names give the same match (group 1 if any) share a fold",
        metavar="REGEX", default_text="the dataset's groups: CamVid sequences")
    repeats: int = option(1, "repeated CV with new fold seeds")
    pruner: str = option(  # resolve_pruner decides auto
        "auto", "stop hopeless trials early, comparing like with like; screen: every grid "
        "point first as complete short runs (tau kept as a fraction of the run), the "
        "selection's lambdas then at the full budget under the race; race: paired "
        "comparisons of whole-fold scores", choices=PRUNERS,
        default_text="auto = screen for a grid, race for random/tpe")
    screen_fraction: float = option(0.3, "--pruner screen: the short runs' share of each "
                                    "fit's epochs or steps", metavar="F")
    select: str = option("1se", "1se: paired lambda.1se (same folds, Nadeau-Bengio corrected "
                         "SE); 1se-unpaired: glmnet's rule; min: lambda.min",
                         choices=SELECTIONS)
    refit: bool = option(False, "retrain on the whole training split with the chosen lambda, "
                         "score test", switch=True)
    refit_steps: int | None = option(None, "tune short, train long: refit for N optimizer "
                                     "steps (implies --refit)", metavar="N")
    refit_epochs: int | None = option(None, "refit for N epochs instead of the fold fits' "
                                      "(implies --refit)", metavar="N")
    refit_size: list[int] | None = option(None, "refit (and score) at these inputs, e.g. after "
                                          "fits at a smaller --size (implies --refit)",
                                          metavar="HxW", parse=parse_refit_size)
    refit_lambda: str = option("transfer", "at a longer refit budget, transfer: scale lambda "
                               "so tau stays the same fraction of the run; same: keep the "
                               "CV's lambda", choices=REFIT_LAMBDAS)
    rule_point: bool = option(True, "also score the lambda of segdecay's default rule (tau "
                              "the fits' whole run) on the same fits, and say whether any "
                              "searched lambda beat it beyond the paired band, by how much, "
                              "at what compute", default_text="on")
    storage: str | None = option(None, "sqlite:///FILE | journal:FILE | "
                                 "postgresql://USER:PASS@HOST/DB", metavar="URL", group=STORAGE,
                                 default_text="OUT/study.db, or OUT/study.journal with "
                                 "--workers > 1")
    study: str = option("segdecay", "study name shared by all workers", group=STORAGE)
    workers: int = option(1, "local worker processes", group=STORAGE)
    heartbeat: int = option(10, "a trial silent for 2x this long is failed and retried",
                            metavar="SECONDS", group=STORAGE)
    seed: int = internal(0, "the train config's --seed (cli.tune.study_inputs): fold "
                         "assignment follows it")


def derived_options(given: dict[str, Any]) -> dict[str, Any]:
    """The values ``segdecay tune`` works out from other options; ``given``: the options
    given on its command line, as argparse left them (texts, before parsing).

    - ``search``: --search, else grid with --grid or --tau-grid, else tpe;
    - ``folds``: --folds, else 1 with --holdout (which refuses a --folds), else 3;
    - ``refit``: --refit, or implied by --refit-steps, --refit-epochs or --refit-size.

    (``seed`` is the train config's --seed, set where the config is read.)
    """
    implied_refit = given.get("refit_steps") or given.get("refit_epochs") or given.get(
        "refit_size")
    derived = {"search": given.get("search") or (
                   "grid" if given.get("grid") or given.get("tau_grid") else "tpe"),
               "refit": bool(given.get("refit") or implied_refit)}
    if given.get("holdout") and "folds" not in given:
        derived["folds"] = 1
    return derived


def design_words(options: TuneOptions) -> str:
    """The scoring design in words: '3-fold CV x 1 repeat(s)' or the holdout's seeds."""
    if options.holdout:
        return f"holdout on the val split x {options.repeats} seed(s)"
    return f"{options.folds}-fold CV x {options.repeats} repeat(s)"


def resolve_pruner(options: TuneOptions, epochs: int, steps: int | None) -> TuneOptions:
    """``auto``: the screen for a grid of at least 3 decay values whose fits the screen can
    shorten (measured: the full grid's choice in 3 of 3 demo seeds at 0.70 of its
    fit-epochs; docs/results.md, "The screen against the full grid"), else the race (random
    and TPE searches have no grid to screen; a screen of 1-2 values or of 1-epoch fits
    would add work, not save it)."""
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
    _validate_search_space(options)
    if options.pruner == "wilcoxon" and options.folds * options.repeats < wilcoxon_min_fits():
        raise UserError(
            f"--pruner wilcoxon with {options.folds} folds x {options.repeats} repeat(s): its "
            f"one-sided test cannot reach p < {WILCOXON_P:g} before the last of "
            f"{options.folds * options.repeats} fits (the smallest p after n fits is 1/2^n), "
            f"so it would never prune a trial it has not finished; use at least "
            f"{wilcoxon_min_fits()} fits (--folds, --repeats) or --pruner race")
    _validate_screen(options)
    for name, choices in (("modes", DECAY_MODES), ("losses", LOSSES),
                          ("weightings", CLASS_WEIGHTS)):
        unknown = [v for v in getattr(options, name) or [] if v not in choices]
        if unknown:
            raise UserError(f"{_flag(name)} '{unknown[0]}': unknown choice; choose from "
                            f"{', '.join(choices)}")
    _validate_refit(options)
    _validate_holdout(options)
    for name in ("folds", "repeats", "workers"):
        if getattr(options, name) < 1:
            raise UserError(f"{_flag(name)} {getattr(options, name)}: must be at least 1")


def _validate_search_space(options: TuneOptions) -> None:
    """A lambda grid, a tau grid (a grid search of its own, taus > 0), or a random or TPE
    search over a range with a number of trials."""
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


def _flag(name: str) -> str:
    """The flag of a TuneOptions field, for errors."""
    return flag_of(next(f for f in fields(TuneOptions) if f.name == name))


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


def validate_against(options: TuneOptions, optimizer: str, decay_mode: str | None,
                     lr: float, lambda_scale: float = 1.0) -> None:
    """Refuse a lambda grid or range that would make a decoupled trial flip the weights' sign;
    ``lambda_scale``: the factor the fits train lambda with (the screen's short runs).

    Checked before the study starts, so no worker fails on its tenth trial; ``--tau-grid``
    needs no check (lr·lambda = 1/(tau·steps per epoch) < 1 for tau above one step).
    """
    modes = options.modes or [resolved_decay_mode(optimizer, decay_mode)]
    if "decoupled" not in modes:
        return
    lams = options.grid if options.tau_grid is None and options.grid else []
    if options.search != "grid" and options.range is not None:
        lams = [options.range[1]]
    flag = "--grid" if options.search == "grid" else "--range"
    where = "" if lambda_scale == 1 else f" (x{lambda_scale:g} in --pruner screen's short runs)"
    for rate in options.lr_grid or [lr]:
        bad = [lam for lam in lams if rate * lam * lambda_scale >= 1]
        if bad:
            raise UserError(f"{flag} lambda {max(bad):g}{where} with --lr {rate:g}: lr·lambda = "
                            f"{rate * max(bad) * lambda_scale:g} >= 1, so {SIGN_FLIP}; "
                            "lower the grid")


def wilcoxon_min_fits() -> int:
    """Fewest fits at which the Wilcoxon pruner can prune before a trial's last fit: the
    smallest one-sided exact p after n paired fits is 1/2^n, so it needs 1/2^n < p at some
    n below the number of fits."""
    n = 1
    while 0.5**n >= WILCOXON_P:
        n += 1
    return n + 1
