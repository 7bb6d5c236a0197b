"""``--pruner screen``: a rung of complete short runs before the full budget.

The race (``--pruner race``) drops a lambda only after two trials finished every fold, so on
a 5-point grid it cannot use less than 9 of 15 fits, and where two or three lambdas sit in
the 1-SE band it uses nearly all of them. The screen spends less without comparing unlike
runs (successive halving over budgets, every rung a complete run):

1. every grid point is trained on every fold at ``--screen-fraction`` of the budget, as a
   complete short run (the whole lr schedule, compressed), with lambda moved to that
   budget by holding tau as a fraction of the run (Wang & Aitchison 2025): the short run's
   lambda is the grid's times full steps / short steps. Each score is a final-epoch score
   on a whole fold, comparable with its rivals' at the same budget;
2. the selection rule on those scores (paired by default) names lambda.min and its choice
   in the best setting; both go on to the full budget, and when they coincide so does the
   next larger lambda of the grid (where the choice moves when the full budget's band is
   wider; the next smaller at the grid's end);
3. the promoted lambdas run the full budget on every fold under the race, and the rule
   chooses among them as usual. The screen's curve stays in tune.json and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from segdecay.config import TrainConfig
from segdecay.studies.tune.choice import choose, chosen_lambda
from segdecay.studies.tune.options import TuneOptions
from segdecay.studies.tune.trials import SETTING, TrialRow, complete_rows, counted, setting_of


@dataclass(frozen=True)
class ScreenResult:
    """What the short rung leaves the summary: its trial rows (what each recipe part bought
    is read from them, every part having run there) and what tune.json keeps of it."""

    rows: list[TrialRow]
    payload: dict[str, Any]


def screen_budget(base: TrainConfig, fraction: float) -> tuple[TrainConfig, float]:
    """The fits' config at ``fraction`` of the budget, and the factor that moves a lambda
    there (full steps / short steps: tau shrinks with the run)."""
    if base.steps:
        short = max(1, round(base.steps * fraction))
        return replace(base, steps=short), base.steps / short
    short = max(1, round(base.epochs * fraction))
    return replace(base, epochs=short), base.epochs / short


def screen_options(options: TuneOptions) -> TuneOptions:
    """The screen's own study: every grid point, no pruning (each fit validates once, at its
    end), no refit; its fits train lambda x the scale of :func:`screen_budget`, which
    ``run_study`` passes to the workers beside these options."""
    return replace(options, study=f"{options.study}-screen", refit=False)


def grid_values(options: TuneOptions) -> list[float]:
    """The searched decay axis, in order: taus with ``--tau-grid``, else lambdas."""
    return sorted(options.tau_grid or options.grid)


def promoted(rows: list[TrialRow], options: TuneOptions,
             rule: float | None = None) -> dict[str, Any]:
    """Which grid points go on to the full budget, read from the screen's trial rows; the
    default rule's point (``rule``) always, so the search is checked against it there.

    Returns the best setting (lr, decay mode, loss, class weights), the promoted values of
    the decay axis (taus or lambdas, as searched) and the screen's selection."""
    n_fits = options.folds * options.repeats
    choice = choose(rows, n_fits, options.folds)
    if not choice:
        raise RuntimeError("the screen finished no grid point on every fold")
    axis = "tau_epochs" if options.tau_grid else "weight_decay"
    best = tuple(choice[k] for k in SETTING)
    value_of = {r.weight_decay: getattr(r, axis) for r in complete_rows(rows, n_fits)
                if setting_of(r) == best}  # the axis value of each lambda of the best setting
    picks = {value_of[choice["lambda_min"]], value_of[chosen_lambda(choice, options.select)]}
    if len(picks) == 1:
        picks |= _neighbour(next(iter(picks)), grid_values(options), axis)
    if rule is not None:
        picks.add(rule)
    return {"setting": dict(zip(SETTING, best, strict=True)), "axis": axis,
            "values": sorted(picks), "selection": choice}


def _neighbour(value: float, grid: list[float], axis: str) -> set[float]:
    """The grid's next stronger decay after ``value`` (a larger lambda, a shorter tau), or
    the next weaker one at the grid's strong end: the full budget then compares two."""
    i = grid.index(value)
    step = -1 if axis == "tau_epochs" else 1
    for j in (i + step, i - step):
        if 0 <= j < len(grid):
            return {grid[j]}
    return set()


def full_options(options: TuneOptions, promotion: dict[str, Any]) -> TuneOptions:
    """The full-budget study over the promoted points: one setting, the promoted values."""
    setting = promotion["setting"]
    values = promotion["values"]
    return replace(
        options, pruner="race",
        grid=None if options.tau_grid else values,
        tau_grid=values if options.tau_grid else None,
        lr_grid=[setting["lr"]] if options.lr_grid else None,
        modes=[setting["decay_mode"]] if options.modes else None,
        losses=[setting["loss"]] if options.losses else None,
        weightings=[setting["class_weights"]] if options.weightings else None,
    )


def screen_payload(rows: list[TrialRow], promotion: dict[str, Any], fraction: float,
                   short: TrainConfig, lambda_scale: float) -> dict[str, Any]:
    """What tune.json keeps of the screen: its budget, trials, selection and promotion."""
    kept = counted(rows)
    return {
        "fraction": fraction, "epochs": short.epochs, "steps": short.steps,
        "lambda_scale": lambda_scale,
        "rule": "lambda x full steps / short steps, so tau stays the same fraction of the run",
        "epochs_run": sum(r.epochs_run for r in kept),
        "grid_points": sum(1 for r in kept if not r.skipped),
        "trials": [r.as_dict() for r in kept], "selection": promotion["selection"],
        "promoted": {"setting": promotion["setting"], promotion["axis"]: promotion["values"]},
    }
