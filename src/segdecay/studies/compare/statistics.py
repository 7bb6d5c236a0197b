"""Paired comparisons of two variants: over seeds, or over images scored by both.

Seeds (or images) are the pairing unit, so the test asks whether the per-pair difference is
centred on zero. Both the paired t-test (with its confidence interval) and the Wilcoxon
signed-rank test are reported: with 3-5 seeds the t-test leans on normality and the
Wilcoxon test cannot reach p < 0.05 below 6 pairs, which a reader should see, not guess.
Across several variants against one baseline, Holm's step-down correction keeps the
family-wise error at the nominal level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> dict[str, Any]:
    """Statistics of ``a - b`` per pair: mean, sd, t CI, t-test p and Wilcoxon p."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n if n else math.nan
    result: dict[str, Any] = {"n": n, "mean_diff": mean, "sd": math.nan, "ci_low": math.nan,
                              "ci_high": math.nan, "t": math.nan, "p_t": math.nan,
                              "p_wilcoxon": math.nan}
    if n < 2:
        return result
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    result.update(sd=sd, ci_low=mean - half, ci_high=mean + half)
    if se > 0:
        t = mean / se
        result.update(t=t, p_t=float(2 * stats.t.sf(abs(t), n - 1)))
    elif mean == 0:
        result.update(t=0.0, p_t=1.0)
    if any(x != 0 for x in d):
        result["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    else:
        result["p_wilcoxon"] = 1.0
    return result


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count as a test)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the finite values (NaN where too few)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
