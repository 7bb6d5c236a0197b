"""Optimizers: ``build_optimizer`` is where a decay mode becomes an algorithm, and it says
which one ran:

============  ===========  ===========================================================
optimizer     decay mode   algorithm
============  ===========  ===========================================================
sgd(-nesterov) penalty     SGD, no optimizer decay; loss gets (lambda/2)·||w||^2
sgd(-nesterov) coupled     torch SGD ``weight_decay`` (identical to penalty)
sgd(-nesterov) decoupled   SGDW: w *= 1 - lr·lambda before the momentum step
adam / adamw  penalty      Adam, no optimizer decay; loss gets (lambda/2)·||w||^2
adam / adamw  coupled      Adam + L2 (torch Adam ``weight_decay``)
adam / adamw  decoupled    AdamW (torch AdamW)
============  ===========  ===========================================================

``adam`` defaults to coupled and ``adamw`` to decoupled; an explicit ``decay_mode`` wins.
"""

from __future__ import annotations

import torch

from segdecay.config import DECAY_MODES, OPTIMIZERS
from segdecay.decay.modes import SIGN_FLIP, resolved_decay_mode
from segdecay.errors import UserError


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter 2019).

    Each group's ``decoupled_weight_decay`` shrinks w by lr·lambda·w outside the momentum
    buffer, before the usual SGD step; the inner SGD ``weight_decay`` stays 0.
    """

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - same contract as torch.optim.SGD.step
        for group in self.param_groups:
            lam = group.get("decoupled_weight_decay", 0.0)
            if lam:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, 1.0 - group["lr"] * lam)
        return super().step(closure)


# Adam's constants (torch's defaults); a group that sets its own overrides them.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

def check_decoupled_step(lr: float, lam: float, group: str = "decay") -> None:
    """SGDW and AdamW multiply w by 1 - lr·lambda: at lr·lambda >= 1 that flips or zeroes
    every decayed weight.

    ``lr`` is the peak rate (every schedule stays at or below it); ``lam`` includes a rule's
    multiplier, so the message names the group it came from.
    """
    if lr * lam >= 1:
        what = ("--weight-decay" if group in ("decay", "params") else
                f"lambda of group {group} (--weight-decay x its multiplier)")
        raise UserError(f"--lr {lr:g} x {what} {lam:g} = {lr * lam:g} >= 1: {SIGN_FLIP}; "
                        "lower one of them")


def algorithm_name(optimizer: str, decay_mode: str) -> str:
    """Plain name of what actually runs, written into every run folder."""
    base = "SGD (Nesterov)" if optimizer == "sgd-nesterov" else (
        "SGD" if optimizer == "sgd" else "Adam")
    if decay_mode == "penalty":
        return f"{base} + L2 penalty in the loss"
    if decay_mode == "coupled":
        return f"{base} + coupled L2 (weight_decay in the gradient)"
    return "AdamW (decoupled)" if base == "Adam" else f"{base}W (decoupled)"


def build_optimizer(
    groups: list[dict],
    name: str,
    lr: float,
    decay_mode: str | None = None,
    *,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """A torch optimizer over ``groups`` whose lambda acts by the chosen decay mode.

    ``groups`` are :func:`~segdecay.decay.groups.param_groups`' resolved split (or groups
    shaped like it: ``params`` and ``weight_decay``, the group's lambda); they are updated in
    place and become the optimizer's groups. Every group keeps ``lambda`` (its configured
    strength), ``decay_mult`` and ``decay_mode``, so the loss term of ``penalty`` mode and
    the decay report read them back from ``optimizer.param_groups``. ``momentum`` is SGD's;
    Adam's betas and eps are :data:`ADAM_BETAS` and :data:`ADAM_EPS` unless a group sets its
    own (torch reads them per group).
    """
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")
    mode = resolved_decay_mode(name, decay_mode)
    if mode not in DECAY_MODES:
        raise UserError(f"--decay-mode '{mode}': choose one of {', '.join(DECAY_MODES)}")
    if lr <= 0:
        raise UserError(f"--lr {lr}: must be > 0")
    for g in groups:
        lam = g["weight_decay"]
        if mode == "decoupled":
            check_decoupled_step(lr, lam, g.get("group", "params"))
        g["lambda"] = lam
        g["decay_mode"] = mode
        g["weight_decay"] = lam if mode == "coupled" else 0.0
        if mode == "decoupled":
            if name.startswith("sgd"):
                g["decoupled_weight_decay"] = lam
            else:
                g["weight_decay"] = lam  # AdamW's own decoupled decay
    if name.startswith("sgd"):
        nesterov = name == "sgd-nesterov"
        if nesterov and momentum <= 0:
            raise UserError("--optimizer sgd-nesterov needs --momentum > 0")
        cls = SGDW if mode == "decoupled" else torch.optim.SGD
        return cls(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if mode == "decoupled":
        return torch.optim.AdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    return torch.optim.Adam(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
