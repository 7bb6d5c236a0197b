"""Choosing lambda from cross-validation: lambda.min and lambda.1se (glmnet's rules).

lambda.1se is the largest lambda whose mean CV score is within one standard error of the
best mean: the most regularized model the data cannot tell apart from the best. Fold scores
share training data, so this standard error underestimates the true variance (Bengio &
Grandvalet 2004); repeated CV (``--repeats``) makes it steadier, not unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CVPoint:
    """The CV result of one lambda."""

    lam: float
    mean: float
    se: float
    n: int


def summarize(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)); SE is 0 for a single score."""
    n = len(scores)
    if n == 0:
        return math.nan, math.nan
    mean = sum(scores) / n
    if n == 1:
        return mean, 0.0
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    return mean, math.sqrt(var / n)


def cv_points(results: Mapping[float, Sequence[float]]) -> list[CVPoint]:
    """One CVPoint per lambda with at least one score, sorted by lambda."""
    points = []
    for lam, scores in sorted(results.items()):
        if scores:
            mean, se = summarize(list(scores))
            points.append(CVPoint(lam, mean, se, len(scores)))
    return points


def select_lambda(results: Mapping[float, Sequence[float]]) -> dict[str, float]:
    """``{'lambda_min', 'lambda_1se', 'best_mean', 'best_se', 'threshold'}`` (higher is better)."""
    points = cv_points(results)
    if not points:
        raise ValueError("no lambda has a finished cross-validation score")
    best = max(points, key=lambda p: (p.mean, -p.lam))
    threshold = best.mean - best.se
    within = [p for p in points if p.mean >= threshold]
    return {
        "lambda_min": best.lam,
        "lambda_1se": max(p.lam for p in within),
        "best_mean": best.mean,
        "best_se": best.se,
        "threshold": threshold,
    }
