"""What decay does over a run, per parameter group: tau = 1/(lr·lambda) and the integrated
shrinkage exp(-lambda·sum_t lr_t), written to decay.json and printed at the start of a run."""

from __future__ import annotations

import math

import torch

from segdecay.decay.optimizers import algorithm_name
from segdecay.decay.schedules import lr_factor
from segdecay.decay.timescale import effective_lr


def decay_report(
    optimizer: torch.optim.Optimizer,
    optimizer_name: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    schedule: str,
    warmup_steps: int = 0,
    momentum: float = 0.9,
) -> list[dict]:
    """One entry per parameter group: lambda, lr, tau = 1/(lr·lambda), integrated shrinkage.

    With SGD momentum beta the decay passes through the momentum buffer in penalty/coupled
    mode, so the effective step is lr/(1-beta); SGDW and AdamW shrink by lr·lambda directly.
    For Adam + coupled L2 the decay is rescaled per coordinate by the adaptive denominator, so
    tau there is nominal. Shrinkage is exp(-lambda·sum_t lr_eff_t) over the whole schedule.
    """
    lr_sum_factor = sum(
        lr_factor(s, total_steps, schedule, warmup_steps) for s in range(total_steps)
    )
    entries = []
    for g in optimizer.param_groups:
        lam = float(g.get("lambda", g.get("weight_decay", 0.0)))
        mode = g.get("decay_mode", "coupled")
        base_lr = float(g.get("initial_lr", g["lr"]))
        sgd_like = optimizer_name.startswith("sgd")
        eff_lr = effective_lr(optimizer_name, mode, base_lr, momentum)
        through_momentum = eff_lr != base_lr
        rate = eff_lr * lam
        tau_steps = 1.0 / rate if rate > 0 else None
        note = ""
        if lam > 0 and not sgd_like and mode != "decoupled":
            note = "Adam + L2: decay is divided by the adaptive denominator; tau is nominal"
        elif through_momentum:
            note = f"effective lr = lr/(1-momentum) = {eff_lr:g}"
        entries.append(
            {
                "name": g.get("group", "params"),
                "tensors": len(g["params"]),
                "parameters": int(sum(p.numel() for p in g["params"])),
                "weight_decay": lam,
                "decay_mult": float(g.get("decay_mult", 1.0)),
                "mode": mode,
                "algorithm": algorithm_name(optimizer_name, mode),
                "lr": base_lr,
                "effective_lr": eff_lr,
                "tau_steps": tau_steps,
                "tau_epochs": tau_steps / steps_per_epoch if tau_steps else None,
                "integrated_shrinkage": math.exp(-lam * eff_lr * lr_sum_factor),
                "note": note,
            }
        )
    return entries
