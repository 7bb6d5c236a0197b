"""Weight decay as a visible part of training: which tensors decay (groups), the loss-side
terms (penalty), the optimizers that apply it (optimizers, with SGDW), the lr schedules it
integrates over (schedules), and what it amounts to per group (report: tau, shrinkage).

A new decay mode goes into ``config.DECAY_MODES``, ``optimizers.build_optimizer`` (or
``penalty`` for a loss-side term) and ``report.decay_report``. The names below are
imported on first use (:mod:`segdecay.lazy`).
"""

from typing import TYPE_CHECKING

from segdecay.lazy import lazy_exports

if TYPE_CHECKING:
    from segdecay.decay.groups import DecayRule, describe_split, param_groups
    from segdecay.decay.modes import default_decay_mode, resolved_decay_mode
    from segdecay.decay.optimizers import SGDW, algorithm_name, build_optimizer
    from segdecay.decay.penalty import regularization_term, weight_norm
    from segdecay.decay.report import decay_report
    from segdecay.decay.schedules import build_scheduler, lr_factor
    from segdecay.decay.timescale import effective_lr, lambda_for_tau, tau_for_lambda

__getattr__, __dir__ = lazy_exports(__name__, {
    "segdecay.decay.groups": ["DecayRule", "describe_split", "param_groups"],
    "segdecay.decay.modes": ["default_decay_mode", "resolved_decay_mode"],
    "segdecay.decay.optimizers": ["SGDW", "algorithm_name", "build_optimizer"],
    "segdecay.decay.penalty": ["regularization_term", "weight_norm"],
    "segdecay.decay.report": ["decay_report"],
    "segdecay.decay.schedules": ["build_scheduler", "lr_factor"],
    "segdecay.decay.timescale": ["effective_lr", "lambda_for_tau", "tau_for_lambda"],
})

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
