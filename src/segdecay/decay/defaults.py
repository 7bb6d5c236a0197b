"""The lr and lambda a run gets when the user gives none: per optimizer, one decay timescale.

SGD's lr 0.05 does not suit Adam (a synthetic AdamW run at 0.05 stalls at val mIoU 0.17), and
one raw lambda means decay strengths 100x apart under SGD and AdamW. So the default lr
follows the optimizer, and the default lambda keeps the per-step shrinkage of SGD's classic
default (lr 0.05, momentum 0.9, coupled 5e-4: lr·lambda/(1-momentum) = 2.5e-4 per step, a
timescale tau of 4,000 steps) under whatever optimizer, decay mode and lr the run uses.
Adam + L2 is the exception: its decay is divided by the adaptive denominator, so it has no
timescale to match and gets the conventional 1e-4.
"""

from __future__ import annotations

from dataclasses import replace

from segdecay.config import TrainConfig
from segdecay.decay.optimizers import default_decay_mode
from segdecay.decay.timescale import effective_lr

SGD_LR = 0.05
ADAM_LR = 1e-3
SHRINK_PER_STEP = 2.5e-4  # lr_eff·lambda of SGD 0.05, momentum 0.9, lambda 5e-4
ADAM_L2 = 1e-4


def default_lr(optimizer: str) -> float:
    """SGD-scale or Adam-scale."""
    return SGD_LR if optimizer.startswith("sgd") else ADAM_LR


def default_weight_decay(optimizer: str, decay_mode: str, lr: float, momentum: float) -> float:
    """The lambda whose per-step shrinkage is SHRINK_PER_STEP (Adam + L2: ADAM_L2)."""
    if optimizer.startswith("adam") and decay_mode != "decoupled":
        return ADAM_L2
    return float(f"{SHRINK_PER_STEP / effective_lr(optimizer, decay_mode, lr, momentum):.6g}")


def optimizer_defaults(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``config`` with lr and weight_decay filled in where unset, and one line per default."""
    notes = []
    lr = config.lr
    if lr is None:
        lr = default_lr(config.optimizer)
        scale = "SGD" if config.optimizer.startswith("sgd") else "Adam"
        notes.append(f"lr {lr:g}: the {scale}-scale default for {config.optimizer} (--lr)")
    lam = config.weight_decay
    if lam is None:
        mode = config.decay_mode or default_decay_mode(config.optimizer)
        lam = default_weight_decay(config.optimizer, mode, lr, config.momentum)
        why = ("Adam + L2 has no timescale to match" if lam == ADAM_L2 and
               config.optimizer.startswith("adam") else
               f"per-step shrinkage {SHRINK_PER_STEP:g}, SGD's 5e-4 timescale")
        notes.append(f"lambda {lam:g}: {why} (--weight-decay)")
    return replace(config, lr=lr, weight_decay=lam), notes
