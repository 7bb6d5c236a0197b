"""Pure weight-decay dynamics simulated with the real optimizers, for tests of tau.

No data gradient reaches the weights, so whatever shrinks them is the decay alone: what
tau = 1/(lr_eff·lambda) and the integrated shrinkage claim can be measured instead of
re-derived from the same formula. The lr schedules here are torch's own schedulers, not
``segdecay.decay.lr_factor``, so a wrong schedule in the report would show too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segdecay.decay import build_optimizer, param_groups, regularization_term


def torch_schedule(optimizer: torch.optim.Optimizer, total: int, schedule: str,
                   warmup: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup from lr/warmup, then poly (power 0.9), cosine or constant, built from
    torch.optim.lr_scheduler alone."""
    sched = torch.optim.lr_scheduler
    rest = total - warmup
    main = {"poly": lambda: sched.PolynomialLR(optimizer, total_iters=rest, power=0.9),
            "cosine": lambda: sched.CosineAnnealingLR(optimizer, T_max=rest),
            "constant": lambda: sched.ConstantLR(optimizer, factor=1.0, total_iters=0)}[schedule]
    if warmup <= 0:
        return main()
    ramp = sched.LinearLR(optimizer, start_factor=1 / warmup, end_factor=1.0,
                          total_iters=warmup - 1)
    return sched.SequentialLR(optimizer, [ramp, main()], milestones=[warmup])


def pure_decay(opt: torch.optim.Optimizer, steps: int, *,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               penalty_l2: float = 0.0) -> list[list[torch.Tensor]]:
    """Every parameter after each of ``steps`` steps with a zero data gradient; in penalty
    mode the only gradient is that of the loss term (penalty_l2/2)·||w||²."""
    params = [p for g in opt.param_groups for p in g["params"]]
    history = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        if penalty_l2:
            regularization_term(l2=penalty_l2, groups=opt.param_groups).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        history.append([p.detach().clone() for p in params])
    return history


def log_shrinkage(w0: torch.Tensor, w: torch.Tensor) -> float:
    """ln(w/w0), checked to be one factor for every element (pure decay scales uniformly)."""
    ratio = w / w0
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))
    return math.log(float(ratio.flatten()[0]))


def log_ratios(optimizer: str, mode: str, lr: float, lam: float, steps: int, *,
               momentum: float = 0.9, schedule: str = "constant", warmup: int = 0
               ) -> list[float]:
    """ln(w_t/w_0) after each step of one decayed 4x4 weight under the segdecay optimizer
    (torch SGD, SGDW, AdamW...) for ``optimizer``/``mode``, with a torch schedule."""
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    opt = build_optimizer(param_groups(layer, lam), optimizer, lr, mode, momentum=momentum)
    scheduler = torch_schedule(opt, steps, schedule, warmup)
    history = pure_decay(opt, steps, scheduler=scheduler,
                         penalty_l2=lam if mode == "penalty" else 0.0)
    w0 = torch.ones(4, 4)
    return [log_shrinkage(w0, ws[0]) for ws in history]


def e_folding_steps(ratios: list[float]) -> int | None:
    """The first step count after which ln(w/w0) <= -1 (None if it never gets there)."""
    return next((i + 1 for i, value in enumerate(ratios) if value <= -1.0), None)
