"""The decision rule: which class a pixel gets from its logits.

``argmax`` takes the largest logit. ``adjusted`` is post-hoc logit adjustment (Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021): the class maximizing
``z_c - t·log pi_c``, with ``pi`` the class prior of the training pixels. t > 0 favours the
rare classes, t < 0 the frequent ones, t = 0 is argmax. It is the operating point of the
imbalance treatment, as a threshold is on binary data: a model trained with class weights or
Dice often over-predicts the rare classes (thick cracks, poles that bleed into buildings),
and a t < 0 takes back what the training over-corrected. segdecay chooses t on the val split
at the end of a run, from :data:`TAUS`, never on test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from segdecay.metrics import SegmentationMetrics

DECISION_FILE = "decision.json"  # in a run folder: the chosen t and the bias it adds
TAUS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))  # -1.0, -0.9, ..., 1.0


def log_prior(pixels: Sequence[int]) -> list[float]:
    """log of the Laplace-smoothed class shares (n_c + 1) / (N + C): a class absent from the
    training masks gets a finite, very small prior instead of log 0."""
    total, k = sum(int(n) for n in pixels), len(pixels)
    return [math.log((int(n) + 1) / (total + k)) for n in pixels]


def logit_bias(tau: float, prior_logs: Sequence[float]) -> list[float]:
    """What ``adjusted`` adds to each class's logit: -t·log pi_c."""
    return [-tau * v for v in prior_logs]


def apply_bias(logits: torch.Tensor, bias: Sequence[float] | None) -> torch.Tensor:
    """Logits ``[N,C,H,W]`` with the per-class ``bias`` added (None: unchanged)."""
    if bias is None:
        return logits
    return logits + torch.as_tensor(bias, dtype=logits.dtype,
                                    device=logits.device).view(1, -1, 1, 1)


def choose_tau(mious: dict[float, float]) -> float:
    """The t with the highest mIoU; a tie goes to the smaller |t| (the lesser change)."""
    return max(mious, key=lambda t: (mious[t], -abs(t), t))


class DecisionSweep:
    """Confusion counts of every t in ``taus`` over the batches one pass sees."""

    def __init__(self, prior_logs: Sequence[float], ignore_index: int,
                 taus: Sequence[float] = TAUS):
        self.prior_logs = list(prior_logs)
        self.taus = tuple(taus)
        k = len(self.prior_logs)
        self.metrics = {t: SegmentationMetrics(k, ignore_index) for t in self.taus}

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of plain logits ``[N,C,H,W]`` (at the target's size)."""
        for t, metrics in self.metrics.items():
            pred = apply_bias(logits, logit_bias(t, self.prior_logs)).argmax(dim=1)
            metrics.update(pred, target)

    def mious(self) -> dict[float, float]:
        """mIoU of each t."""
        return {t: m.compute()["miou"] for t, m in self.metrics.items()}

    def result(self, t: float) -> dict:
        """All metrics of one t."""
        return self.metrics[t].compute()
