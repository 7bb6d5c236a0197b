"""Turn a finished study into tune.json, trials.csv, report.html and an optional refit."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.decay import tau_for_lambda
from segdecay.fileio import atomic_write_text, write_json
from segdecay.studies.tune.evidence import (
    EVIDENCE_WORDS,
    assess,
    rules_sentence,
    underfit_sentence,
)
from segdecay.studies.tune.options import design_words
from segdecay.studies.tune.recipe import part_gains, parts_lines, searched_parts
from segdecay.studies.tune.refit import refit
from segdecay.studies.tune.report import write_tune_report
from segdecay.studies.tune.rule import rule_check, rule_setting
from segdecay.studies.tune.search import trial_decay
from segdecay.studies.tune.selection import (
    PairedPoint,
    cv_points,
    select_lambda,
    select_paired,
    summarize,
)
from segdecay.studies.tune.storage import open_storage, redact

TRIAL_COLUMNS = ["number", "state", "weight_decay", "tau_epochs", "lr", "decay_mode", "loss",
                 "class_weights", "cv_mean", "cv_se", "folds_done", "fold_scores", "train_miou",
                 "weight_norm", "epochs_run", "pruned", "duplicate_of", "skipped", "failure"]


def trial_rows(study: optuna.Study, base: TrainConfig) -> list[dict[str, Any]]:
    """One plain dict per trial (what trials.csv and tune.json list)."""
    trials = study.get_trials(deepcopy=False)
    spe = study.user_attrs.get("steps_per_epoch")
    retry_reasons = {t.user_attrs["retry_of"]: t.user_attrs.get("retry_reason")
                     for t in trials if t.user_attrs.get("retry_of") is not None}
    rows = []
    for t in trials:
        scores = list(t.user_attrs.get("fold_scores", []))
        mean, se = summarize(scores)
        trains = t.user_attrs.get("train_scores", [])
        norms = t.user_attrs.get("weight_norms", [])
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "weight_decay": t.params.get("weight_decay", t.user_attrs.get("weight_decay")),
            "tau_epochs": _tau(t, base, spe),
            "lr": t.params.get("lr", base.lr),
            "decay_mode": t.params.get("decay_mode", base.decay_mode),
            "loss": t.params.get("loss", base.loss),
            "class_weights": t.params.get("class_weights", base.class_weights),
            "cv_mean": mean, "cv_se": se, "folds_done": len(scores),
            "fold_scores": scores,
            "train_miou": sum(trains) / len(trains) if trains else None,
            "weight_norm": sum(norms) / len(norms) if norms else None,
            "epochs_run": t.user_attrs.get("epochs_run", 0),
            "pruned": t.state == optuna.trial.TrialState.PRUNED,
            "duplicate_of": t.user_attrs.get("duplicate_of"),
            "skipped": t.user_attrs.get("skipped"),
            "failure": t.user_attrs.get("failure") or retry_reasons.get(t.number),
        })
    return rows


def _tau(t: optuna.trial.FrozenTrial, base: TrainConfig, spe: float | None) -> float | None:
    """A trial's decay timescale in epochs of the CV fits (searched, or from its lambda)."""
    if "tau_epochs" in t.params:
        return t.params["tau_epochs"]
    lam = t.params.get("weight_decay")
    if lam is None or not spe:
        return None
    mode, lr = trial_decay(t.params, base)
    tau = tau_for_lambda(lam, spe, base.optimizer, mode, lr, base.momentum)
    return tau if math.isfinite(tau) else None


def _write_trials_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (";".join(f"{v:.6g}" for v in r[k]) if k == "fold_scores"
                             else ("" if r[k] is None else r[k])) for k in TRIAL_COLUMNS})
    atomic_write_text(path, buf.getvalue())


SETTING = ("lr", "decay_mode", "loss", "class_weights")  # a recipe, lambda aside


def setting_of(row: dict[str, Any]) -> tuple:
    """The recipe of a trial row, lambda aside."""
    return tuple(row[k] for k in SETTING)


def complete_rows(rows: list[dict], n_fits: int) -> list[dict]:
    """Trials with a score on every fit (not duplicates, not skipped)."""
    return [r for r in rows if r["state"] == "COMPLETE" and r["duplicate_of"] is None
            and r["folds_done"] == n_fits]


def choose(rows: list[dict], n_fits: int, folds: int) -> dict[str, Any]:
    """lambda.min, the paired and the unpaired lambda.1se, among complete trials of the best
    setting (lr, decay mode, loss, class weights); with the paired differences behind them."""
    complete = complete_rows(rows, n_fits)
    if not complete:
        return {}
    by_setting: dict[tuple, dict[float, list[float]]] = defaultdict(dict)
    for r in complete:
        by_setting[setting_of(r)][r["weight_decay"]] = r["fold_scores"]
    curves = {k: cv_points(v) for k, v in by_setting.items()}
    curves = {k: c for k, c in curves.items() if c}  # every lambda had a non-finite score
    if not curves:
        return {}
    best_setting = max(curves, key=lambda k: max(p.mean for p in curves[k]))
    results = by_setting[best_setting]
    unpaired = select_lambda(results)
    paired = select_paired(results, folds)
    return {
        "lambda_min": paired["lambda_min"], "lambda_1se": paired["lambda_1se"],
        "lambda_1se_unpaired": unpaired["lambda_1se"],
        "best_mean": unpaired["best_mean"], "best_se": unpaired["best_se"],
        "threshold": unpaired["threshold"],
        "paired_rule": PAIRED_RULE_HOLDOUT if folds == 1 else PAIRED_RULE,
        "within_paired": paired["within"],
        "paired": [asdict(p) for p in paired["points"]],
        **dict(zip(SETTING, best_setting, strict=True)),
        "curve": [asdict(p) for p in cv_points(results)],
    }


PAIRED_RULE = ("lambda.1se (paired): the largest lambda whose mean paired difference from "
               "lambda.min, fit by fit on the same folds, is within one Nadeau-Bengio "
               "corrected SE, sqrt((1/J + 1/(k-1)) s^2) over J = folds x repeats differences")
PAIRED_RULE_HOLDOUT = ("lambda.1se (paired): the largest lambda whose mean paired difference "
                       "from lambda.min, seed by seed on the val split, is within one paired "
                       "SE, s / sqrt(J) over J seeds (every fit trains on the same images, so "
                       "there is no fold overlap to correct for)")
SE_CAVEAT = ("unpaired fold standard errors underestimate the variance of CV estimates "
             "(Bengio & Grandvalet 2004); the paired rule corrects its SE for the overlap of "
             "the training folds (Nadeau & Bengio 2003)")
SE_CAVEAT_HOLDOUT = ("the paired SE over seeds covers the training runs' randomness, not the "
                     "sampling of the val images: a fixed val split can favour a recipe that "
                     "the test split does not")
SELECT_KEYS = {"1se": "lambda_1se", "1se-unpaired": "lambda_1se_unpaired", "min": "lambda_min"}


def _judge(choice: dict[str, Any], options, facts: dict[str, Any],
           rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The evidence assessment, the rules' disagreement and an underfitting choice, in
    words."""
    points = [PairedPoint(**p) for p in choice["paired"]]
    evidence = assess(points, choice["lambda_min"], options.folds, options.repeats,
                      facts.get("groups"), facts.get("distinct_assignments"))
    evidence["rules"] = rules_sentence(choice["lambda_1se"], choice["lambda_1se_unpaired"],
                                       points, choice["best_se"])
    best = tuple(choice[k] for k in SETTING)
    train = {r["weight_decay"]: r["train_miou"]
             for r in complete_rows(rows, options.folds * options.repeats)
             if setting_of(r) == best and r["train_miou"] is not None}
    evidence["underfit"] = underfit_sentence(choice[SELECT_KEYS[options.select]],
                                             choice["lambda_min"], points, train,
                                             evidence["sufficient"])
    return evidence


def summarize_study(base: TrainConfig, options, run_dir: Path, url: str, seconds: float,
                    say, screen: dict[str, Any] | None = None,
                    rule: float | None = None) -> dict[str, Any]:
    """Write tune.json, trials.csv, report.html (and refit when asked); return tune.json.

    After ``--pruner screen``, ``options`` are the full-budget study's and ``screen`` what
    the short rung did: its fit-epochs count in the compute, its grid points in the full
    grid's."""
    study = optuna.load_study(study_name=options.study, storage=open_storage(url))
    rows = trial_rows(study, base)
    n_fits = options.folds * options.repeats
    choice = choose(rows, n_fits, options.folds)
    per_fit = study.user_attrs.get("fit_epochs") or [base.epochs] * n_fits
    full = sum(per_fit)  # fit-epochs of one whole trial (--steps fits count as they run)
    counted = [r for r in rows if r["duplicate_of"] is None]
    trained = [r for r in counted if not r["skipped"]]
    used = sum(r["epochs_run"] for r in counted)
    points = len(trained)
    if screen is not None:
        used += screen["epochs_run"]
        points = screen["grid_points"]
    payload: dict[str, Any] = {
        "study": options.study,
        "storage": redact(url),
        "search": options.search,
        "tau_grid": options.tau_grid,
        "steps_per_epoch_of_fits": study.user_attrs.get("steps_per_epoch"),
        "pruner": "screen" if screen is not None else options.pruner,
        "folds": options.folds,
        "repeats": options.repeats,
        "group_by": options.group_by,
        "groups": study.user_attrs.get("groups"),
        "distinct_fold_assignments": study.user_attrs.get("distinct_assignments"),
        "epochs_per_fit": max(per_fit),
        "fit_epochs_per_trial": full,
        "base_config": redact_config(base),
        "trials": counted,
        "compute": {"epochs_run": used, "epochs_full_grid": full * points,
                    "fraction": used / (full * points) if points else None},
        "wall_seconds": seconds,
        "holdout": options.holdout,
        "design": design_words(options),
        "se_caveat": SE_CAVEAT_HOLDOUT if options.holdout else SE_CAVEAT,
    }
    if screen is not None:
        payload["screen"] = screen
    if choice:
        chosen = choice[SELECT_KEYS[options.select]]
        payload.update({"lambda_min": choice["lambda_min"], "lambda_1se": choice["lambda_1se"],
                        "lambda_1se_unpaired": choice["lambda_1se_unpaired"],
                        "select": options.select, "chosen": chosen, "selection": choice,
                        "evidence": _judge(choice, options, study.user_attrs, rows)})
        # after a screen, what each part bought is read at the screen's budget (every part)
        part_rows, part_choice = ((screen["trials"], screen["selection"]) if screen
                                  else (rows, choice))
        if searched_parts(options):
            payload["recipe_parts"] = part_gains(complete_rows(part_rows, n_fits), part_choice,
                                                 chosen, searched_parts(options), base,
                                                 options.folds)
            for line in parts_lines(payload["recipe_parts"]):
                say(line)
        say(f"lambda.min = {choice['lambda_min']:g} (CV mIoU {choice['best_mean']:.4f} "
            f"± {choice['best_se']:.4f}), lambda.1se = {choice['lambda_1se']:g} (paired), "
            f"{choice['lambda_1se_unpaired']:g} (unpaired); chosen ({options.select}): "
            f"{chosen:g}")
        for key in EVIDENCE_WORDS:
            if payload["evidence"].get(key):
                say(payload["evidence"][key])
        if rule is not None:
            payload["rule_check"] = rule_check(
                choice, rows, rule, "tau_epochs" if options.tau_grid else "weight_decay",
                options.folds, payload["compute"], max(per_fit), rule_setting(base, options))
            say(f"check on the default rule: {payload['rule_check']['sentence']}")
        if options.refit:
            payload["refit"] = refit(base, choice, chosen, options, run_dir, say,
                                     study.user_attrs.get("steps_per_epoch"))
            refitted = payload["refit"]
            decided = refitted.get("decision", "argmax")
            say(f"refit {refitted['split']} mIoU {refitted['miou']:.4f}"
                + ("" if decided == "argmax" else f" (decision {decided})"))
    else:
        say("no trial has completed every fold yet: no lambda chosen")
    _write_trials_csv(run_dir / "trials.csv", counted)
    write_json(run_dir / "tune.json", payload)
    write_tune_report(run_dir, payload)
    say(f"used {used} of {full * points} fit-epochs "
        f"({payload['compute']['fraction'] or 0:.0%}); wrote {run_dir / 'tune.json'}, "
        f"{run_dir / 'report.html'}")
    return payload


def redact_config(config: TrainConfig) -> dict[str, Any]:
    """The config as a dict, any URL-like string value redacted."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in asdict(config).items()}
