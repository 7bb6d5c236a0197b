"""When a run has diverged: a non-finite loss or weight norm, or weights grown far too large.

A diverged run stops with ``"status": "diverged"`` and the reason in ``summary.json``, and
``train`` returns that summary instead of raising, so a tuner records the trial as failed
and goes on.
"""

from __future__ import annotations

import math

DIVERGENCE_NORM_FACTOR = 1e4
"""A run whose weight norm exceeds this multiple of its initial norm has diverged."""


def divergence_reason(epoch: int, loss: float, norm: float, initial_norm: float,
                      config) -> str | None:
    """Why the run diverged at the end of ``epoch`` (1-based), or None if it is healthy."""
    lr, lam = (("default" if v is None else f"{v:g}") for v in (config.lr, config.weight_decay))
    advice = f"(lr {lr}, lambda {lam}); lower --lr or --weight-decay"
    if not math.isfinite(loss):
        return f"train loss is {loss} at epoch {epoch} {advice}"
    if not math.isfinite(norm):
        return f"weight norm is {norm} at epoch {epoch} {advice}"
    if norm > DIVERGENCE_NORM_FACTOR * initial_norm:
        return (f"weight norm {norm:.4g} at epoch {epoch} exceeds {DIVERGENCE_NORM_FACTOR:g} x "
                f"its initial {initial_norm:.4g} {advice}")
    return None
