"""The choice among a study's trials: lambda.min and lambda.1se (paired and unpaired) in the
best setting, as tune.json's ``selection`` holds it. The screen chooses its promotions with
it, the summary the tune's lambda.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from segdecay.studies.tune.selection import cv_points, select_lambda, select_paired
from segdecay.studies.tune.trials import SETTING, TrialRow, complete_rows, setting_of

SELECT_KEYS = {"1se": "lambda_1se", "1se-unpaired": "lambda_1se_unpaired", "min": "lambda_min"}
PAIRED_RULE = ("lambda.1se (paired): the largest lambda whose mean paired difference from "
               "lambda.min, fit by fit on the same folds, is within one Nadeau-Bengio "
               "corrected SE, sqrt((1/J + 1/(k-1)) s^2) over J = folds x repeats differences")
PAIRED_RULE_HOLDOUT = ("lambda.1se (paired): the largest lambda whose mean paired difference "
                       "from lambda.min, seed by seed on the val split, is within one paired "
                       "SE, s / sqrt(J) over J seeds (every fit trains on the same images, so "
                       "there is no fold overlap to correct for)")


def choose(rows: list[TrialRow], n_fits: int, folds: int) -> dict[str, Any]:
    """lambda.min, the paired and the unpaired lambda.1se, among complete trials of the best
    setting (lr, decay mode, loss, class weights); with the paired differences behind them.
    Empty when no trial has a finite score on every fit."""
    complete = complete_rows(rows, n_fits)
    if not complete:
        return {}
    by_setting: dict[tuple, dict[float, list[float]]] = defaultdict(dict)
    for r in complete:
        by_setting[setting_of(r)][r.weight_decay] = r.fold_scores
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


def chosen_lambda(choice: dict[str, Any], select: str) -> float:
    """The lambda ``--select`` takes from a choice."""
    return choice[SELECT_KEYS[select]]
