"""The decision rule: which class a pixel gets from its logits.

``argmax`` takes the largest logit. ``adjusted`` is post-hoc logit adjustment (Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021): the class maximizing
``z_c - t·log pi_c``, with ``pi`` the class prior of the training pixels. t > 0 favours the
rare classes, t < 0 the frequent ones, t = 0 is argmax. It is the operating point of the
imbalance treatment, as a threshold is on binary data: a model trained with class weights or
Dice often over-predicts the rare classes (thick cracks, poles that bleed into buildings),
and a t < 0 takes back what the training over-corrected. segdecay chooses t on the val split
at the end of a run, from :data:`TAUS`, never on test, and keeps a t other than 0 only when
its gain over argmax on val exceeds two bootstrap SEs of that gain over the val images
(:func:`choose_tau_on_evidence`): on a small val split the best of 21 t's is partly noise,
and a t chosen on noise costs on test what it seemed to gain on val.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from segdecay.metrics import SegmentationMetrics

DECISION_FILE = "decision.json"  # in a run folder: the chosen t and the bias it adds
TAUS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))  # -1.0, -0.9, ..., 1.0
BOOTSTRAP_RESAMPLES = 1000
# A best t is kept when its val gain exceeds this many bootstrap SEs. One SE let noise
# through: CE runs on CrackForest kept t = 0.1 at 1.6 SE on 20 val images and lost 0.009
# Dice on test in both seeds, where the gains that held on test (CamVid, the synthetic data)
# stood 3.4 to 13 SEs clear.
EVIDENCE_SES = 2.0


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


def per_image_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int) -> torch.Tensor:
    """``[N, 3, C]`` counts of each image: true positives, predicted and true pixels per
    class (what an IoU needs, without the ``C x C`` matrix), ignored pixels left out."""
    n, k = pred.shape[0], num_classes
    valid = target != ignore_index
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(pred)

    def count(cls: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        idx = (image * k + cls.long())[where]
        out = torch.zeros(n * k, dtype=torch.int64, device=pred.device)
        return out.index_add_(0, idx, torch.ones_like(idx)).view(n, k)

    return torch.stack([count(pred, valid & (pred == target)), count(pred, valid),
                        count(target, valid)], dim=1)


def miou_of_counts(counts: np.ndarray) -> np.ndarray:
    """mIoU of pooled ``[..., 3, C]`` counts (the mean over classes with a non-empty union,
    as :class:`SegmentationMetrics` computes it)."""
    tp, predicted, support = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    union = (predicted + support - tp).astype(float)
    iou = np.divide(tp, union, out=np.zeros_like(union), where=union > 0)
    present = (union > 0).sum(axis=-1)
    return np.where(present > 0, iou.sum(axis=-1) / np.maximum(present, 1), np.nan)


def gain_and_se(per_image: np.ndarray, a: int, b: int, seed: int = 0) -> tuple[float, float]:
    """mIoU of t index ``a`` minus that of ``b`` over the pooled images ``[n, T, 3, C]``, and
    the bootstrap SE of that difference over resamples of the images (paired: each resample
    scores both t on the same images)."""
    n = per_image.shape[0]
    pooled = per_image[:, [a, b]].sum(axis=0)
    gain = float(miou_of_counts(pooled[0]) - miou_of_counts(pooled[1]))
    if n < 2:
        return gain, math.inf
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n),
                                                      size=BOOTSTRAP_RESAMPLES)
    resampled = np.tensordot(weights, per_image[:, [a, b]], axes=(1, 0))  # [B, 2, 3, C]
    diffs = miou_of_counts(resampled[:, 0]) - miou_of_counts(resampled[:, 1])
    return gain, float(np.nanstd(diffs, ddof=1))


def choose_tau_on_evidence(mious: dict[float, float], per_image: np.ndarray,
                           taus: Sequence[float]) -> dict:
    """The best t on val (:func:`choose_tau`) if its gain over t = 0 exceeds
    :data:`EVIDENCE_SES` bootstrap SEs over the val images, else 0 (argmax); with the gain,
    its SE and the images behind it."""
    best = choose_tau(mious)
    if best == 0.0 or 0.0 not in taus:
        return {"tau": best, "best_tau": best, "gain": 0.0, "se": None,
                "images": int(per_image.shape[0])}
    gain, se = gain_and_se(per_image, list(taus).index(best), list(taus).index(0.0))
    kept = best if gain > EVIDENCE_SES * se else 0.0
    return {"tau": kept, "best_tau": best, "gain": gain, "se": se,
            "images": int(per_image.shape[0])}


class DecisionSweep:
    """Confusion counts of every t in ``taus`` over the batches one pass sees, and each
    image's own counts (the unit of the bootstrap behind :func:`choose_tau_on_evidence`)."""

    def __init__(self, prior_logs: Sequence[float], ignore_index: int,
                 taus: Sequence[float] = TAUS):
        self.prior_logs = list(prior_logs)
        self.taus = tuple(taus)
        self.ignore_index = ignore_index
        k = len(self.prior_logs)
        self.metrics = {t: SegmentationMetrics(k, ignore_index) for t in self.taus}
        self.images: list[torch.Tensor] = []  # [N, T, 3, C] per batch

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of plain logits ``[N,C,H,W]`` (at the target's size)."""
        batch = []
        for t, metrics in self.metrics.items():
            pred = apply_bias(logits, logit_bias(t, self.prior_logs)).argmax(dim=1)
            metrics.update(pred, target)  # first: it refuses labels outside the classes
            batch.append(per_image_counts(pred, target.long(), len(self.prior_logs),
                                          self.ignore_index))
        self.images.append(torch.stack(batch, dim=1))

    def per_image(self) -> np.ndarray:
        """``[n, T, 3, C]`` counts of every image this sweep saw."""
        if not self.images:
            return np.zeros((0, len(self.taus), 3, len(self.prior_logs)), dtype=np.int64)
        return torch.cat(self.images).cpu().numpy()

    def mious(self) -> dict[float, float]:
        """mIoU of each t."""
        return {t: m.compute()["miou"] for t, m in self.metrics.items()}

    def result(self, t: float) -> dict:
        """All metrics of one t."""
        return self.metrics[t].compute()
