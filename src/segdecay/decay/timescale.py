"""lambda <-> tau: the decay timescale tau = 1 / (lr_eff · lambda) steps, per optimizer.

One lambda means different decay strengths under different optimizers: SGD with momentum
beta passes coupled decay (and the penalty's gradient) through its momentum buffer, so the
weights shrink by lr·lambda/(1-beta) per step, while SGDW and AdamW shrink by lr·lambda
(Adam + L2 divides the decay by the adaptive denominator, so its tau is nominal). tau in
epochs is what transfers across optimizers, batch sizes and run lengths (Wang & Aitchison
2025); ``segdecay tune --tau-grid`` searches in it.
"""

from __future__ import annotations

import math


def effective_lr(optimizer: str, decay_mode: str, lr: float, momentum: float) -> float:
    """The lr that multiplies lambda in the per-step shrinkage of ``optimizer``/``decay_mode``."""
    through_momentum = (optimizer.startswith("sgd") and decay_mode in ("penalty", "coupled")
                        and momentum > 0)
    return lr / (1.0 - momentum) if through_momentum else lr


def lambda_for_tau(tau_epochs: float, steps_per_epoch: int, optimizer: str, decay_mode: str,
                   lr: float, momentum: float) -> float:
    """The lambda whose timescale is ``tau_epochs`` epochs (inf: no decay, lambda 0)."""
    if math.isinf(tau_epochs):
        return 0.0
    return 1.0 / (tau_epochs * steps_per_epoch
                  * effective_lr(optimizer, decay_mode, lr, momentum))


def tau_for_lambda(lam: float, steps_per_epoch: int, optimizer: str, decay_mode: str,
                   lr: float, momentum: float) -> float:
    """tau in epochs of ``lam`` (inf for lambda 0)."""
    rate = lam * effective_lr(optimizer, decay_mode, lr, momentum) * steps_per_epoch
    return 1.0 / rate if rate > 0 else math.inf
