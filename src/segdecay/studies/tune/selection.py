"""Choosing lambda from cross-validation: lambda.min, and lambda.1se by two rules.

The unpaired rule is glmnet's (below, :func:`select_lambda`); the paired rule
(:func:`select_paired`, the default) compares every lambda with the best on the same folds.

lambda.1se is the largest lambda whose mean CV score is within one standard error of the
best mean: the most regularized model the data cannot tell apart from the best. Fold scores
share training data, so this standard error underestimates the true variance (Bengio &
Grandvalet 2004); repeated CV (``--repeats``) makes it steadier, not unbiased.

Both rules leave out a lambda with a non-finite (NaN, inf) fold score, as the tune leaves
out a trial with a failed fit: a NaN neither wins nor blocks the comparison. Ties are
broken deterministically: means are exactly rounded sums (``math.fsum``), so the fold order
cannot split a tie; lambda.min is the smallest of the lambdas tied for the best mean, and a
mean exactly on the threshold (a paired difference exactly -SE, or 0 with SE 0) counts as
within, so lambda.1se is the largest of the tied ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CVPoint:
    """The CV result of one lambda."""

    lam: float
    mean: float
    se: float
    n: int


def summarize(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)); SE is 0 for a single score.

    The mean is an exactly rounded sum over n, so reordering the scores cannot change it
    (and cannot break a tie between lambdas)."""
    n = len(scores)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(scores) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((s - mean) ** 2 for s in scores) / (n - 1)
    return mean, math.sqrt(var / n)


def scored(results: Mapping[float, Sequence[float]]) -> dict[float, list[float]]:
    """The lambdas whose fold scores are all finite: a NaN or inf score is a failed fit, and
    the lambda is left out as the tune leaves out a trial with a failed fit."""
    return {lam: list(s) for lam, s in results.items() if all(math.isfinite(v) for v in s)}


def cv_points(results: Mapping[float, Sequence[float]]) -> list[CVPoint]:
    """One CVPoint per lambda with at least one score and none non-finite, sorted by
    lambda."""
    points = []
    for lam, scores in sorted(scored(results).items()):
        if scores:
            mean, se = summarize(list(scores))
            points.append(CVPoint(lam, mean, se, len(scores)))
    return points


def select_lambda(results: Mapping[float, Sequence[float]]) -> dict[str, float]:
    """``{'lambda_min', 'lambda_1se', 'best_mean', 'best_se', 'threshold'}`` (higher is better).

    lambda.min is the smallest lambda of the best mean; a mean equal to the threshold is
    within. Lambdas with a non-finite score are left out (see the module docstring)."""
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


# ------------------------------------------------------------------ paired selection

CI_LEVEL = 0.95


@dataclass(frozen=True)
class PairedPoint:
    """One lambda's scores minus the best lambda's, fit by fit (same folds, same repeats).

    ``se`` is the Nadeau-Bengio corrected standard error of the mean difference,
    sqrt((1/J + n_val/n_train) · s²) over the J = repeats x folds differences (Nadeau &
    Bengio 2003; Bouckaert & Frank 2004 for repeated k-fold), with n_val/n_train = 1/(k-1):
    the training sets of the folds overlap, so the J differences are not independent and
    the plain s/sqrt(J) (``se_naive``) is too small. The interval is t with J-1 degrees of
    freedom on the corrected SE.
    """

    lam: float
    mean_diff: float
    sd: float  # sample sd of the J differences
    se: float
    se_naive: float
    ci_low: float
    ci_high: float
    n: int


def corrected_se(sd: float, n: int, folds: int) -> float:
    """Nadeau-Bengio corrected SE of a mean of ``n`` fold differences with sample sd ``sd``.

    ``folds`` 1 is a holdout tune (``--holdout``): every fit trains on the same images, so
    there is no overlap to correct for and the SE is the plain sd / sqrt(n) over seeds."""
    overlap = 1.0 / (folds - 1) if folds > 1 else 0.0
    return math.sqrt((1.0 / n + overlap) * sd * sd)


def paired_points(results: Mapping[float, Sequence[float]], folds: int
                  ) -> tuple[float | None, list[PairedPoint]]:
    """(best lambda, every lambda against it): best is the highest mean, the smaller lambda
    on ties.

    ``results[lam]`` lists the fit scores in one order shared by every lambda (repeat by
    repeat, fold by fold); lambdas with fewer scores than the most complete, or with a
    non-finite score (a failed fit), are left out.
    """
    finite = scored(results)
    n = max((len(s) for s in finite.values()), default=0)
    full = {lam: s for lam, s in finite.items() if len(s) == n and n > 0}
    if not full:
        return None, []
    best = max(full, key=lambda lam: (math.fsum(full[lam]) / n, -lam))
    points = [PairedPoint(lam, *paired_difference(full[lam], full[best], folds))
              for lam in sorted(full)]
    return best, points


def paired_difference(scores: Sequence[float], reference: Sequence[float], folds: int
                      ) -> tuple[float, float, float, float, float, float, int]:
    """(mean, sd, corrected se, naive se, ci_low, ci_high, n) of ``scores - reference``, fit
    by fit; the corrected SE and the t interval as in :class:`PairedPoint`."""
    from scipy import stats

    diffs = [a - b for a, b in zip(scores, reference, strict=True)]
    n = len(diffs)
    mean, se_naive = summarize(diffs)
    sd = se_naive * math.sqrt(n)
    se = corrected_se(sd, n, folds) if n > 1 else 0.0
    half = stats.t.ppf(0.5 + CI_LEVEL / 2, n - 1) * se if n > 1 and se > 0 else 0.0
    return mean, sd, se, se_naive, mean - half, mean + half, n


def select_paired(results: Mapping[float, Sequence[float]], folds: int) -> dict[str, Any]:
    """lambda.1se under the paired rule: the largest lambda whose mean paired difference
    from the best is within one (corrected) paired SE, a difference of exactly -SE
    included; with the points it was chosen from."""
    best, points = paired_points(results, folds)
    if best is None:
        raise ValueError("no lambda has a finished cross-validation score")
    within = [p for p in points if p.mean_diff >= -p.se]
    return {"lambda_min": best, "lambda_1se": max(p.lam for p in within),
            "within": [p.lam for p in within], "points": points}


def design_for(diff: float, sd: float, max_folds: int, max_repeats: int = 10
               ) -> tuple[int, int] | None:
    """The cheapest (folds, repeats) whose 95% corrected interval would exclude 0 for a mean
    paired difference ``diff`` of spread ``sd`` (fewest fits, then fewest repeats), or None
    when no design up to ``max_folds`` x ``max_repeats`` would. ``max_folds`` 1 is a
    holdout tune: only the number of seeds (repeats) varies."""
    from scipy import stats

    options = []
    for k in range(2, max_folds + 1) if max_folds > 1 else [1]:  # 1: holdout, seeds only
        for r in range(1, max_repeats + 1):
            j = k * r
            if j < 2:
                continue
            if stats.t.ppf(0.5 + CI_LEVEL / 2, j - 1) * corrected_se(sd, j, k) < abs(diff):
                options.append((j, r, k))
    if not options:
        return None
    _, r, k = min(options)
    return k, r
