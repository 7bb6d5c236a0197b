"""The lr and lambda a run gets when the user gives none: per optimizer, one decay timescale.

SGD's lr 0.05 does not suit Adam (a synthetic AdamW run at 0.05 stalls at val mIoU 0.17), so
the default lr follows the optimizer. lambda is set by what it does rather than by its raw
value, which means decay strengths 100x apart under SGD and AdamW: the weights shrink by
lr_eff·lambda per step (lr_eff = lr/(1-momentum) when SGD passes the decay through its
momentum), so tau = 1/(lr_eff·lambda) steps is the decay's timescale, and the default puts
it at TAU_FRACTION of the run's steps (Wang & Aitchison 2025: the best tau lies between
one epoch and the whole run), at the run's end of that range: the weakest decay the
literature recommends, so that the default stays near the undecayed plain recipes where
decay does not help. Measured at the peer protocols (``docs/results.md``): on CamVid the whole
run beat half the run by +0.2 and +0.5 test mIoU points (2 seeds); on CrackForest half the
run read 0.710 crack Dice against 0.705 (seed 0), within the seeds' spread. A short run keeps tau at
least one epoch (the literature's lower end) and MIN_TAU_STEPS steps, so that no single step
shrinks a weight by more than a tenth. Adam + L2 is the exception:
its decay is divided by the adaptive denominator, so it has no timescale and gets the
conventional 1e-4.
"""

from __future__ import annotations

from dataclasses import replace

from segdecay.config import TrainConfig
from segdecay.decay.modes import resolved_decay_mode
from segdecay.decay.timescale import effective_lr

SGD_LR = 0.05
ADAM_LR = 1e-3
TAU_FRACTION = 1.0  # tau = 1/(lr_eff·lambda) as a fraction of the run's optimizer steps
MIN_TAU_STEPS = 10  # and never under this many steps (nor under one epoch)
ADAM_L2 = 1e-4


def default_lr(optimizer: str) -> float:
    """SGD-scale or Adam-scale."""
    return SGD_LR if optimizer.startswith("sgd") else ADAM_LR


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run's optimizer steps: --steps, else epochs x steps per epoch."""
    return config.steps or config.epochs * max(1, steps_per_epoch)


def default_tau_steps(steps: int, steps_per_epoch: int) -> float:
    """The default timescale in steps: TAU_FRACTION of the run, at least one epoch and
    MIN_TAU_STEPS."""
    return max(TAU_FRACTION * steps, steps_per_epoch, MIN_TAU_STEPS)


def default_weight_decay(optimizer: str, decay_mode: str, lr: float, momentum: float,
                         steps: int, steps_per_epoch: int) -> float:
    """The lambda whose timescale is :func:`default_tau_steps` (Adam + L2: ADAM_L2), to 6
    significant digits."""
    if optimizer.startswith("adam") and decay_mode != "decoupled":
        return ADAM_L2
    tau = default_tau_steps(steps, steps_per_epoch)
    return float(f"{1.0 / (tau * effective_lr(optimizer, decay_mode, lr, momentum)):.6g}")


def optimizer_defaults(config: TrainConfig, steps_per_epoch: int,
                       notes: list[str] | None = None) -> TrainConfig:
    """``config`` with lr and weight_decay filled in where unset; one line per default is
    appended to ``notes``."""
    notes = notes if notes is not None else []
    lr = config.lr
    if lr is None:
        lr = default_lr(config.optimizer)
        scale = "SGD" if config.optimizer.startswith("sgd") else "Adam"
        notes.append(f"lr {lr:g}: the {scale}-scale default for {config.optimizer} (--lr)")
    lam = config.weight_decay
    if lam is None:
        mode = resolved_decay_mode(config.optimizer, config.decay_mode)
        steps = total_steps(config, steps_per_epoch)
        lam = default_weight_decay(config.optimizer, mode, lr, config.momentum, steps,
                                   steps_per_epoch)
        if config.optimizer.startswith("adam") and mode != "decoupled":
            why = "Adam + L2 has no timescale to match"
        else:
            tau = default_tau_steps(steps, steps_per_epoch)
            share = (f"{TAU_FRACTION:g} of the run's {steps} steps"
                     if tau == TAU_FRACTION * steps else
                     f"at least one epoch and {MIN_TAU_STEPS} steps: the run has {steps}")
            why = (f"decay timescale tau = 1/(lr_eff·lambda) = {tau:g} steps "
                   f"({tau / max(1, steps_per_epoch):.3g} epochs), {share}")
        notes.append(f"lambda {lam:g}: {why} (--weight-decay)")
    return replace(config, lr=lr, weight_decay=lam)
