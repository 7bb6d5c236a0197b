"""The default's lambda as a point of every tune, and whether the search beat it.

segdecay's default lambda puts the decay timescale tau = 1/(lr_eff·lambda) at the run's
length (:mod:`segdecay.decay.defaults`). A tune scores that lambda beside the searched ones, on
the same fits, so its answer can be read as a check on the rule: did any searched lambda
beat the rule's beyond the paired band (one paired SE), by how much, and at what compute?
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from segdecay.config import TrainConfig
from segdecay.decay import resolved_decay_mode
from segdecay.decay.defaults import ADAM_L2, default_tau_steps
from segdecay.decay.timescale import lambda_for_tau
from segdecay.studies.tune.folds import fold_plan
from segdecay.studies.tune.options import TuneOptions
from segdecay.studies.tune.search import fit_steps_per_epoch
from segdecay.studies.tune.selection import paired_difference
from segdecay.studies.tune.trials import SETTING, TrialRow, counted


def rule_of_study(base: TrainConfig, options: TuneOptions, data) -> float | None:
    """The rule's point of this study (None with ``--no-rule-point``): its fits' steps per
    epoch come from the same fold plan the workers build."""
    if not options.rule_point:
        return None
    fits, _ = fold_plan(data, options)
    return rule_point(base, options, fit_steps_per_epoch(fits, base.batch_size))


def with_rule(options: TuneOptions, value: float | None) -> TuneOptions:
    """The study's options with the rule's point searched: a grid point of its own, or one
    more trial of a random or TPE search (enqueued first: :func:`rule_params`)."""
    if value is None:
        return options
    if options.search == "grid":
        return with_rule_point(options, value)
    return replace(options, trials=options.trials + 1)


def rule_point(base: TrainConfig, options: TuneOptions, steps_per_epoch: float) -> float:
    """The rule's value on the searched axis at the fits' budget: tau in epochs of the fits
    with ``--tau-grid``, else lambda (at the base lr; decay mode as searched first)."""
    total = base.steps or base.epochs * steps_per_epoch
    tau_epochs = default_tau_steps(total, steps_per_epoch) / steps_per_epoch
    if options.tau_grid:
        return float(f"{tau_epochs:.6g}")
    mode = rule_mode(base, options)
    if base.optimizer.startswith("adam") and mode != "decoupled":
        return ADAM_L2  # Adam + L2's default has no timescale
    lam = lambda_for_tau(tau_epochs, steps_per_epoch, base.optimizer, mode, base.lr,
                         base.momentum)
    return float(f"{lam:.6g}")


def rule_setting(base: TrainConfig, options: TuneOptions) -> dict[str, Any]:
    """Where the rule's point is comparable when lr or the decay mode are searched too: a
    lambda is the rule's only at the lr and mode it was computed for (a tau at any lr)."""
    setting: dict[str, Any] = {}
    if options.modes:
        setting["decay_mode"] = rule_mode(base, options)
    if options.lr_grid and not options.tau_grid:
        setting["lr"] = base.lr
    return setting


def rule_mode(base: TrainConfig, options: TuneOptions) -> str:
    """The decay mode the rule's lambda is computed for (the first searched one)."""
    first = options.modes[0] if options.modes else None
    return resolved_decay_mode(base.optimizer, first, base.decay_mode)


def with_rule_point(options: TuneOptions, value: float) -> TuneOptions:
    """A grid search's grid with the rule's point added (random and TPE searches get it as
    their first trial: :func:`rule_params`)."""
    if options.search != "grid":
        return options
    if options.tau_grid:
        return replace(options, tau_grid=sorted({*options.tau_grid, value}))
    return replace(options, grid=sorted({*options.grid, value}))


def rule_params(base: TrainConfig, options: TuneOptions, value: float) -> dict[str, Any]:
    """The parameters of the rule's trial, as a random or TPE search enqueues it: the
    rule's lambda at the rule's lr and decay mode where those are searched too."""
    setting = rule_setting(base, options)
    if setting.get("lr") not in (None, *(options.lr_grid or [])):
        del setting["lr"]  # not a searched choice: the trial draws its lr like the others
    return {"tau_epochs" if options.tau_grid else "weight_decay": value, **setting}


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-6)


def rule_check(choice: dict[str, Any], rows: list[TrialRow], value: float,
               axis: str, folds: int, compute: dict[str, Any],
               fit_epochs: int, rule_setting: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The best searched lambda against the rule's, paired fit by fit, in the chosen
    setting (loss, class weights) at the rule's lr and decay mode (``rule_setting``; the
    rule's lambda is theirs): the difference, its SE (Nadeau-Bengio corrected under CV,
    plain over holdout seeds), and one sentence with the search's compute in fits of the
    study's length (``fit_epochs`` each)."""
    same = _in_setting(rows, choice, rule_setting)
    head = {"axis": axis, "value": value, "search_fit_epochs": compute["epochs_run"]}
    if any(r.state == "PRUNED" and _same(getattr(r, axis), value) for r in same):
        return {**head, "beat": True, "sentence": "the rule's point was pruned: the pruner's "
                "evidence put it below the best searched point"}
    rule, searched = _rule_and_searched(same, axis, value)
    runs = compute["epochs_run"] / max(1, fit_epochs)
    result: dict[str, Any] = {**head, "search_fits": runs}
    if rule is None or not searched:
        result["sentence"] = ("the rule's point did not finish every fit in the chosen "
                              "setting: no comparison with the search")
        return result
    best = max(searched, key=lambda r: (math.fsum(r.fold_scores), -r.weight_decay))
    result.update(_paired_with_rule(best, rule, axis, folds))
    name = "tau" if axis == "tau_epochs" else "lambda"
    verdict = ("beat the rule's" if result["beat"] else "did not beat the rule's")
    result["sentence"] = (
        f"the best searched {name}, {result['best_searched']:g}, {verdict} {name} {value:g} "
        f"beyond the paired band: {result['difference']:+.4f} mIoU (paired SE "
        f"{result['se']:.4f} over {result['fits']} fits), for a search of "
        f"{compute['epochs_run']} fit-epochs, {runs:.1f} fits of the study's length")
    return result


def _in_setting(rows: list[TrialRow], choice: dict[str, Any],
                rule_setting: dict[str, Any] | None) -> list[TrialRow]:
    """The counted trials of the chosen setting, at the rule's lr and mode where given."""
    setting = {k: choice[k] for k in SETTING}
    setting.update(rule_setting or {})
    return [r for r in counted(rows) if all(getattr(r, k) == v for k, v in setting.items())]


def _rule_and_searched(same: list[TrialRow], axis: str, value: float
                       ) -> tuple[TrialRow | None, list[TrialRow]]:
    """The rule's trial and the searched ones, among those that finished the most fits."""
    complete = [r for r in same if r.state == "COMPLETE"]
    full = max((r.folds_done for r in complete), default=0)
    complete = [r for r in complete if r.folds_done == full and full > 0]
    rule = next((r for r in complete if _same(getattr(r, axis), value)), None)
    return rule, [r for r in complete if r is not rule]


def _paired_with_rule(best: TrialRow, rule: TrialRow, axis: str, folds: int
                      ) -> dict[str, Any]:
    """The best searched trial minus the rule's, fit by fit; beaten beyond one paired SE."""
    diff, _, se, _, _, _, n = paired_difference(best.fold_scores, rule.fold_scores, folds)
    return {"rule_weight_decay": rule.weight_decay, "rule_mean": rule.cv_mean,
            "best_searched": getattr(best, axis), "best_weight_decay": best.weight_decay,
            "difference": diff, "se": se, "fits": n, "beat": diff > se}
