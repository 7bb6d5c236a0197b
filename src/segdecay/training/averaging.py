"""A moving average of the weights (``--ema``): the model that validation, the checkpoints,
evaluate and predict see, while the optimizer keeps stepping the raw weights.

Averaging the iterates of the last part of a run is a regularizer of its own (Polyak
averaging; SWA and EMA in timm and torchvision's references): it smooths the noise of the
last steps, which weight decay with a high learning rate makes large. The horizon is a
fraction of the run's steps, so a recipe tuned on short fits keeps its meaning on a longer
refit, as tau does for lambda.

After ``n`` updates the average holds the plain mean of the weights of every step while
``n`` is within the horizon ``H``, then an exponential average with decay ``1 - 1/H``: the
newest weights enter with weight ``max(1/n, 1/H)``. Floating-point state (parameters and
BatchNorm's running statistics) is averaged; integer buffers (BatchNorm's batch counter)
follow the raw model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def horizon_steps(fraction: float, total_steps: int) -> int:
    """The averaging horizon in steps: ``fraction`` of the run, at least one step."""
    return max(1, math.ceil(fraction * total_steps))


class WeightAverage:
    """The averaged copy of ``model``; :meth:`update` after each optimizer step."""

    def __init__(self, model: nn.Module, horizon: int) -> None:
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.horizon = horizon
        self.count = 0

    def newest_weight(self) -> float:
        """The weight the next update gives the current weights."""
        return max(1.0 / (self.count + 1), 1.0 / self.horizon)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average."""
        weight = self.newest_weight()
        for a, c in zip(_state(self.module), _state(model), strict=True):
            if a.is_floating_point():
                a.lerp_(c.detach(), weight)
            else:
                a.copy_(c)
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds to resume the average exactly."""
        return {"count": self.count, "horizon": self.horizon}

    def load_state_dict(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the averaged weights and the count of updates they hold."""
        self.module.load_state_dict(weights)
        self.count = int(state["count"])


def _state(model: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in a fixed order (the model and its copy match)."""
    return [*model.parameters(), *model.buffers()]
