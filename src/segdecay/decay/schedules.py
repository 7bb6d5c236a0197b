"""Learning-rate schedules per step: linear warmup, then poly, cosine or constant."""

from __future__ import annotations

import math

import torch

from segdecay.config import SCHEDULES
from segdecay.errors import UserError


def lr_factor(
    step: int, total_steps: int, schedule: str, warmup_steps: int = 0, power: float = 0.9
) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup, then the schedule."""
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule '{schedule}': choose one of {', '.join(SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    if schedule == "poly":
        return (1.0 - t) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    schedule: str,
    warmup_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR of ``lr_factor``; stepped once after every optimizer step."""
    lr_factor(0, total_steps, schedule, warmup_steps)  # validates the name early
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, schedule, warmup_steps)
    )
