"""The summary of a finished study: tune.json's payload from its trial rows and the facts its
workers recorded, and the lines that say it.

It computes and nothing else: reading the study, the refit and writing the files are steps
of their own (:func:`segdecay.studies.tune.run.run_tune`), so the same rows always give
the same payload.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from segdecay.config import TrainConfig
from segdecay.studies.tune.choice import choose, chosen_lambda
from segdecay.studies.tune.evidence import (
    EVIDENCE_WORDS,
    assess,
    rules_sentence,
    underfit_sentence,
)
from segdecay.studies.tune.options import TuneOptions, design_words
from segdecay.studies.tune.recipe import part_gains, parts_lines, searched_parts
from segdecay.studies.tune.rule import rule_check, rule_setting
from segdecay.studies.tune.screen import ScreenResult
from segdecay.studies.tune.selection import PairedPoint
from segdecay.studies.tune.storage import redact
from segdecay.studies.tune.trials import SETTING, TrialRow, complete_rows, counted, setting_of

SE_CAVEAT = ("unpaired fold standard errors underestimate the variance of CV estimates "
             "(Bengio & Grandvalet 2004); the paired rule corrects its SE for the overlap of "
             "the training folds (Nadeau & Bengio 2003)")
SE_CAVEAT_HOLDOUT = ("the paired SE over seeds covers the training runs' randomness, not the "
                     "sampling of the val images: a fixed val split can favour a recipe that "
                     "the test split does not")


def summarize_study(rows: list[TrialRow], facts: dict[str, Any], base: TrainConfig,
                    options: TuneOptions, *, url: str, seconds: float,
                    screen: ScreenResult | None = None,
                    rule: float | None = None) -> dict[str, Any]:
    """tune.json's payload, the refit aside: the study, its trials and compute, and (once a
    trial finished every fit) the choice, its evidence, what each recipe part bought and the
    check on the default rule (``rule``: its point, None without one).

    After ``--pruner screen``, ``options`` are the full-budget study's and ``screen`` what
    the short rung did: its fit-epochs count in the compute, its grid points in the full
    grid's."""
    per_fit = facts.get("fit_epochs") or [base.epochs] * (options.folds * options.repeats)
    kept = counted(rows)
    payload: dict[str, Any] = {
        **_study_facts(options, facts, url, screen, per_fit),
        "base_config": redact_config(base),
        "trials": [r.as_dict() for r in kept],
        "compute": _compute(kept, sum(per_fit), screen),
        "wall_seconds": seconds,
        "holdout": options.holdout,
        "design": design_words(options),
        "se_caveat": SE_CAVEAT_HOLDOUT if options.holdout else SE_CAVEAT,
    }
    if screen is not None:
        payload["screen"] = screen.payload
    choice = choose(rows, options.folds * options.repeats, options.folds)
    if choice:
        _add_choice(payload, choice, rows, facts, base, options, screen, rule)
    return payload


def _study_facts(options: TuneOptions, facts: dict[str, Any], url: str,
                 screen: ScreenResult | None, per_fit: list[int]) -> dict[str, Any]:
    """The study and its design: where it lives, what it searched, how it scored."""
    return {
        "study": options.study,
        "storage": redact(url),
        "search": options.search,
        "tau_grid": options.tau_grid,
        "steps_per_epoch_of_fits": facts.get("steps_per_epoch"),
        "pruner": "screen" if screen is not None else options.pruner,
        "folds": options.folds,
        "repeats": options.repeats,
        "group_by": options.group_by,
        "groups": facts.get("groups"),
        "distinct_fold_assignments": facts.get("distinct_assignments"),
        "epochs_per_fit": max(per_fit),
        "fit_epochs_per_trial": sum(per_fit),  # --steps fits count as they run
    }


def _compute(kept: list[TrialRow], full: int, screen: ScreenResult | None) -> dict[str, Any]:
    """Fit-epochs run against the full grid's (``full`` per trial); after a screen, its
    fit-epochs count too and its grid points are the full grid's."""
    used = sum(r.epochs_run for r in kept)
    points = sum(1 for r in kept if not r.skipped)
    if screen is not None:
        used += screen.payload["epochs_run"]
        points = screen.payload["grid_points"]
    return {"epochs_run": used, "epochs_full_grid": full * points,
            "fraction": used / (full * points) if points else None}


def _add_choice(payload: dict[str, Any], choice: dict[str, Any], rows: list[TrialRow],
                facts: dict[str, Any], base: TrainConfig, options: TuneOptions,
                screen: ScreenResult | None, rule: float | None) -> None:
    """The choice and what backs it: the evidence, each searched part's gain (after a
    screen read at the screen's budget, where every part ran), the check on the rule."""
    chosen = chosen_lambda(choice, options.select)
    payload.update({"lambda_min": choice["lambda_min"], "lambda_1se": choice["lambda_1se"],
                    "lambda_1se_unpaired": choice["lambda_1se_unpaired"],
                    "select": options.select, "chosen": chosen, "selection": choice,
                    "evidence": _judge(choice, options, facts, rows)})
    if searched_parts(options):
        part_rows, part_choice = ((screen.rows, screen.payload["selection"]) if screen
                                  else (rows, choice))
        payload["recipe_parts"] = part_gains(
            complete_rows(part_rows, options.folds * options.repeats), part_choice, chosen,
            searched_parts(options), base, options.folds)
    if rule is not None:
        payload["rule_check"] = rule_check(
            choice, rows, rule, "tau_epochs" if options.tau_grid else "weight_decay",
            options.folds, payload["compute"], payload["epochs_per_fit"],
            rule_setting(base, options))


def _judge(choice: dict[str, Any], options: TuneOptions, facts: dict[str, Any],
           rows: list[TrialRow]) -> dict[str, Any]:
    """The evidence assessment, the rules' disagreement and an underfitting choice, in
    words."""
    points = [PairedPoint(**p) for p in choice["paired"]]
    evidence = assess(points, choice["lambda_min"], options.folds, options.repeats,
                      facts.get("groups"), facts.get("distinct_assignments"))
    evidence["rules"] = rules_sentence(choice["lambda_1se"], choice["lambda_1se_unpaired"],
                                       points, choice["best_se"])
    best = tuple(choice[k] for k in SETTING)
    train = {r.weight_decay: r.train_miou
             for r in complete_rows(rows, options.folds * options.repeats)
             if setting_of(r) == best and r.train_miou is not None}
    evidence["underfit"] = underfit_sentence(chosen_lambda(choice, options.select),
                                             choice["lambda_min"], points, train,
                                             evidence["sufficient"])
    return evidence


def summary_lines(payload: dict[str, Any]) -> list[str]:
    """What the summary says, in order: what each recipe part bought, the choice, the
    evidence, the check on the default rule; or that nothing could be chosen yet."""
    if "selection" not in payload:
        return ["no trial has completed every fold yet: no lambda chosen"]
    s, evidence = payload["selection"], payload["evidence"]
    lines = parts_lines(payload.get("recipe_parts") or [])
    lines.append(f"lambda.min = {s['lambda_min']:g} (CV mIoU {s['best_mean']:.4f} "
                 f"± {s['best_se']:.4f}), lambda.1se = {s['lambda_1se']:g} (paired), "
                 f"{s['lambda_1se_unpaired']:g} (unpaired); chosen ({payload['select']}): "
                 f"{payload['chosen']:g}")
    lines += [evidence[key] for key in EVIDENCE_WORDS if evidence.get(key)]
    if "rule_check" in payload:
        lines.append(f"check on the default rule: {payload['rule_check']['sentence']}")
    return lines


def redact_config(config: TrainConfig) -> dict[str, Any]:
    """The config as a dict, any URL-like string value redacted."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in asdict(config).items()}
