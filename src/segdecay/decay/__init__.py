"""Weight decay as a visible part of training: which tensors decay (groups), the loss-side
terms (penalty), the optimizers that apply it (optimizers, with SGDW), the lr schedules it
integrates over (schedules), and what it amounts to per group (report: tau, shrinkage).

A new decay mode goes into ``config.DECAY_MODES``, ``optimizers.build_optimizer`` (or
``penalty`` for a loss-side term) and ``report.decay_report``.
"""

from segdecay.decay.groups import DecayRule, describe_split, param_groups
from segdecay.decay.optimizers import (
    SGDW,
    algorithm_name,
    build_optimizer,
    default_decay_mode,
    resolved_decay_mode,
)
from segdecay.decay.penalty import regularization_term, weight_norm
from segdecay.decay.report import decay_report
from segdecay.decay.schedules import build_scheduler, lr_factor
from segdecay.decay.timescale import effective_lr, lambda_for_tau, tau_for_lambda

__all__ = [
    "SGDW",
    "DecayRule",
    "algorithm_name",
    "build_optimizer",
    "build_scheduler",
    "decay_report",
    "default_decay_mode",
    "describe_split",
    "effective_lr",
    "lambda_for_tau",
    "lr_factor",
    "param_groups",
    "regularization_term",
    "resolved_decay_mode",
    "tau_for_lambda",
    "weight_norm",
]
