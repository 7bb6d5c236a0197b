"""The loss-side terms: (lambda/2)·sum(w^2) for ``penalty`` mode, alpha·sum|w| for L1, and
the weight norm that every run logs.

Three modes, one meaning of lambda (design.md, "Weight decay semantics"):

- ``penalty``: the loss gets (lambda/2)·sum(w^2) (+ alpha·sum|w| for L1); the optimizer has none.
- ``coupled``: the optimizer adds lambda·w to the gradient (torch SGD/Adam ``weight_decay``).
- ``decoupled``: w shrinks by lr·lambda·w outside the adaptive statistics (AdamW, SGDW).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from segdecay.decay.groups import param_groups


def regularization_term(
    model: nn.Module | None = None,
    l2: float = 0.0,
    l1: float = 0.0,
    groups: Sequence[dict] | None = None,
) -> torch.Tensor:
    """(l2/2)·sum(m·w^2) + l1·sum(m·|w|) over the decayed tensors, m the group multiplier.

    With ``groups`` the multipliers come from them; otherwise the default split of ``model``.
    This is the loss term of ``penalty`` mode (and of L1 in every mode); its gradient is
    l2·m·w + l1·m·sign(w).
    """
    if groups is None:
        if model is None:
            raise ValueError("regularization_term needs a model or groups")
        groups = param_groups(model, 1.0)
    total: torch.Tensor | None = None
    for g in groups:
        mult = float(g.get("decay_mult", 1.0))
        if mult == 0.0 or (l2 == 0.0 and l1 == 0.0):
            continue
        for p in g["params"]:
            term = 0.0
            if l2:
                term = term + (0.5 * l2 * mult) * p.pow(2).sum()
            if l1:
                term = term + (l1 * mult) * p.abs().sum()
            total = term if total is None else total + term
    if total is None:
        ref = next(iter(groups[0]["params"])) if groups and groups[0]["params"] else None
        return torch.zeros((), device=ref.device if ref is not None else None)
    return total


@torch.no_grad()
def weight_norm(params: Iterable[torch.Tensor]) -> float:
    """Global L2 norm of the given tensors (the 'weight norm' column of metrics.csv)."""
    sq = [p.detach().float().pow(2).sum() for p in params]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0
