"""Paired comparisons of two variants: over seeds, or over the groups of images both scored.

Seeds (or groups) are the pairing unit, so the test asks whether the per-pair difference is
centred on zero. Both the paired t-test (with its confidence interval) and the Wilcoxon
signed-rank test are reported: with 3-5 seeds the t-test leans on normality and the
Wilcoxon test cannot reach p < 0.05 below 6 pairs, which a reader should see, not guess.
Across several variants against one baseline, Holm's step-down correction keeps the
family-wise error at the nominal level.

Per-image scores are not independent where images come in groups (the frames of one CamVid
video sequence): a test over frames would count one sequence's near-duplicates as many
pieces of evidence. :func:`paired_by_group` averages the images of each group first, so the
group is the unit; a split whose images each form their own group keeps the image as unit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

UNIT_NOTES = {
    "group": ("unit: the split's groups of images (CamVid: video sequences); per-image mIoU "
              "is averaged within each group first, so correlated frames count once. It asks "
              "whether these trained models differ consistently across groups, not whether "
              "retraining would reproduce the difference (the seed test asks that)."),
    "image": ("unit: the image (the split gives each image its own group). It asks whether "
              "these trained models differ consistently across these images, which holds "
              "only as far as the images are independent, not whether retraining would "
              "reproduce the difference (the seed test asks that)."),
}


def _constant_t(mean: float) -> tuple[float, float]:
    """t and p of a difference that is the same for every pair (zero variance).

    scipy gives t = +-inf, p = 0 for a constant non-zero difference and NaN for an all-zero
    one. Both are kept deliberately, the second as t = 0, p = 1: n >= 2 pairs that all
    differ by the same non-zero amount leave no doubt about its sign, and pairs that never
    differ give no evidence of a difference. Decided here, not left to the scipy version.
    """
    if mean == 0:
        return 0.0, 1.0
    return math.copysign(math.inf, mean), 0.0


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> dict[str, Any]:
    """Statistics of ``a - b`` per pair: mean, sd, t CI, t-test p and Wilcoxon p.

    The t-test and its interval are scipy's ``ttest_rel``; a zero-variance difference is
    decided by :func:`_constant_t` (zero-width interval at the mean). A NaN in either
    sample makes the t statistics NaN: callers leave out unscored pairs first.
    """
    import numpy as np
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    result: dict[str, Any] = {"n": n, "mean_diff": float(d.mean()) if n else math.nan,
                              "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                              "t": math.nan, "p_t": math.nan, "p_wilcoxon": math.nan}
    if n < 2:
        return result
    mean = result["mean_diff"]
    result["sd"] = float(d.std(ddof=1))
    if np.isfinite(d).all() and d.min() == d.max():
        t, p = _constant_t(mean)
        result.update(t=t, p_t=p, ci_low=mean, ci_high=mean)
    else:
        with warnings.catch_warnings():  # near-constant differences: scipy warns, we report
            warnings.simplefilter("ignore", RuntimeWarning)
            ref = stats.ttest_rel(a, b)
            ci = ref.confidence_interval(confidence_level=confidence)
        result.update(t=float(ref.statistic), p_t=float(ref.pvalue), ci_low=float(ci.low),
                      ci_high=float(ci.high))
    result["p_wilcoxon"] = _wilcoxon(d)
    return result


def _wilcoxon(d) -> float:
    """Wilcoxon signed-rank p of the differences (1 when none differs from zero)."""
    from scipy import stats

    if not (d != 0).any():
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def group_means(values: Sequence[float], keys: Sequence[str]) -> dict[str, float]:
    """Mean of the finite values of each group, in first-seen order (empty groups left out)."""
    sums: dict[str, list[float]] = {}
    for v, k in zip(values, keys, strict=True):
        if v is not None and math.isfinite(v):
            sums.setdefault(k, []).append(v)
    return {k: sum(vs) / len(vs) for k, vs in sums.items()}


def paired_by_group(a: Sequence[float], b: Sequence[float], keys: Sequence[str],
                    confidence: float = 0.95) -> dict[str, Any]:
    """:func:`paired_difference` of per-image scores with the group as the unit.

    Images unscored in either sample (NaN: every pixel ignored) are left out of both. The
    unit is ``"group"`` when some group keeps two or more images, else ``"image"``;
    ``n_units`` (= ``n``) counts the pairs tested, ``n_images`` the images behind them.
    """
    if not len(a) == len(b) == len(keys):
        raise ValueError(f"per-image scores and groups differ in length: {len(a)}, {len(b)} "
                         f"and {len(keys)}")
    kept = [i for i in range(len(a)) if _finite(a[i]) and _finite(b[i])]
    kept_keys = [keys[i] for i in kept]
    mean_a = group_means([a[i] for i in kept], kept_keys)
    mean_b = group_means([b[i] for i in kept], kept_keys)
    units = list(mean_a)
    result = paired_difference([mean_a[k] for k in units], [mean_b[k] for k in units],
                               confidence)
    unit = "group" if len(units) < len(kept) else "image"
    result.update(unit=unit, n_units=len(units), n_images=len(kept),
                  n_left_out=len(a) - len(kept), unit_note=UNIT_NOTES[unit])
    return result


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values over every test attempted.

    A NaN p (a test that could not be run: too few pairs, a variant without finished runs)
    still counts in the family size m, as p = 1: the family is every comparison asked for,
    so a failed run must not make the others look stronger. Its adjusted value stays NaN.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: 1.0 if math.isnan(pvalues[i]) else pvalues[i])
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = 1.0 if math.isnan(pvalues[i]) else pvalues[i]
        running = max(running, min(1.0, (m - rank) * p))
        if not math.isnan(pvalues[i]):
            adjusted[i] = running
    return adjusted


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the finite values (NaN where too few)."""
    vals = [v for v in values if _finite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
