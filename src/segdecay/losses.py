"""Class-balancing weights and the segmentation losses they feed.

Rare classes (CamVid's sign, pole, bicyclist) are a few percent of the pixels, so an unweighted
loss mostly ignores them; weights computed once from the training masks make the rare classes
count. Weights apply only to the cross-entropy part of a loss: smp's Dice/Focal/Lovasz weight
classes differently or not at all, so we refuse weights there instead of silently ignoring them.

Behaviour of ``segmentation_models_pytorch.losses`` with ignore pixels, checked against its
source (smp 0.6) and by ``tests/test_losses.py``:

* ``DiceLoss(ignore_index=...)`` masks ignored pixels out of both prediction and one-hot target,
  so it equals the loss on the valid pixels alone. Classes absent from the batch's labels get a
  zero loss (their false positives are not penalised) but still count in the mean over classes.
* ``FocalLoss`` (multiclass) is a one-vs-rest *sigmoid* focal loss per class, averaged over
  classes; it drops ignored pixels but returns NaN when a batch has no valid pixel (mean of an
  empty tensor), so we sum and divide by the number of valid pixels ourselves.
* ``LovaszLoss`` drops ignored pixels, but when a batch has no valid pixel it returns an empty
  ``[0, C]`` tensor instead of a scalar, which breaks ``backward()``; we return a zero instead.
* ``torch.nn.CrossEntropyLoss`` with mean reduction returns NaN (0/0) when every pixel is
  ignored, or when every valid pixel belongs to a class of weight 0; ``CrossEntropyLoss`` below
  returns 0 in those cases, without a host sync, and is otherwise identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from segdecay.config import CLASS_WEIGHTS, LOSSES
from segdecay.data.base import IGNORE_INDEX
from segdecay.errors import UserError

__all__ = [
    "LOSSES",
    "WEIGHTED_LOSSES",
    "CrossEntropyLoss",
    "PixelCounts",
    "build_loss",
    "class_pixel_counts",
    "class_weights",
]

WEIGHTED_LOSSES = ("ce", "ce+dice")  # the losses that take class weights


class PixelCounts(NamedTuple):
    """Per-class label statistics of a set of masks (ignore pixels excluded everywhere)."""

    pixels: torch.Tensor  # [C] int64: pixels labelled c
    image_pixels: torch.Tensor  # [C] int64: labelled pixels of the images that contain c
    images: torch.Tensor  # [C] int64: number of images that contain c
    total: int  # labelled pixels in all images


def class_pixel_counts(
    masks: Iterable[torch.Tensor], num_classes: int, ignore_index: int = IGNORE_INDEX
) -> PixelCounts:
    """Count pixels per class over masks ``[H,W]`` (or batches ``[N,H,W]``).

    ``image_pixels`` is what median-frequency balancing divides by: a class that appears in few
    images is compared only with those images, not with the whole data set. Only labelled
    (non-ignore) pixels of an image count towards its size.
    """
    c = num_classes
    pixels = torch.zeros(c, dtype=torch.int64)
    image_pixels = torch.zeros(c, dtype=torch.int64)
    images = torch.zeros(c, dtype=torch.int64)
    for mask in masks:
        batch = mask.reshape(-1, *mask.shape[-2:]) if mask.dim() >= 2 else mask.reshape(1, -1)
        for img in batch:
            flat = img.reshape(-1).cpu().long()
            labelled = flat[flat != ignore_index]
            if labelled.numel() and (labelled.min() < 0 or labelled.max() >= c):
                bad = labelled[(labelled < 0) | (labelled >= c)].unique().tolist()
                raise ValueError(
                    f"mask values {bad} are outside [0, {c}) and not the ignore index "
                    f"{ignore_index}"
                )
            counts = torch.bincount(labelled, minlength=c)
            present = counts > 0
            pixels += counts
            image_pixels += present.long() * labelled.numel()
            images += present.long()
    return PixelCounts(pixels, image_pixels, images, int(pixels.sum()))


def _median(values: list[float]) -> float:
    """The usual median (mean of the two middle values for an even count).

    ``torch.median`` returns the lower middle value instead, which would shift every weight.
    """
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def class_weights(
    masks: Iterable[torch.Tensor],
    num_classes: int,
    scheme: str,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor | None:
    """Per-class loss weights ``[C]`` (float32) from training masks, or None for ``none``.

    * ``inverse``: ``total / (C * count_c)`` (sklearn's "balanced").
    * ``median``: median-frequency balancing (Eigen & Fergus; SegNet):
      ``freq_c = count_c / image_pixels_c``, ``w_c = median(freq) / freq_c``.
    * ``enet``: ``1 / ln(1.02 + p_c)`` with ``p_c = count_c / total`` (ENet).

    Classes absent from every mask get weight 0 and do not enter the median.
    """
    if scheme not in CLASS_WEIGHTS:
        raise UserError(
            f"--class-weights: unknown scheme {scheme!r}; choose one of {', '.join(CLASS_WEIGHTS)}"
        )
    if scheme == "none":
        return None
    stats = class_pixel_counts(masks, num_classes, ignore_index)
    if stats.total == 0:
        raise UserError(
            f"--class-weights {scheme}: the training masks have no labelled pixels "
            f"(all are ignore index {ignore_index})"
        )
    pixels = stats.pixels.tolist()
    present = [n > 0 for n in pixels]
    w = [0.0] * num_classes
    if scheme == "inverse":
        for k in range(num_classes):
            if present[k]:
                w[k] = stats.total / (num_classes * pixels[k])
    elif scheme == "median":
        image_pixels = stats.image_pixels.tolist()
        freq = [p / ip if p else 0.0 for p, ip in zip(pixels, image_pixels, strict=True)]
        med = _median([f for f, ok in zip(freq, present, strict=True) if ok])
        for k in range(num_classes):
            if present[k]:
                w[k] = med / freq[k]
    else:  # enet
        for k in range(num_classes):
            if present[k]:
                w[k] = 1.0 / math.log(1.02 + pixels[k] / stats.total)
    return torch.tensor(w, dtype=torch.float32)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` (weighted mean over labelled pixels) that is 0, not NaN,
    for a batch with no labelled pixel or only pixels of weight-0 classes.

    A random crop can land entirely in void; one NaN loss would turn every weight into NaN.
    """

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__(weight=weight, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        total = F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="sum"
        )
        labelled = target != self.ignore_index
        if self.weight is None:
            denom = labelled.sum().to(total.dtype)
        else:
            cls = target.clamp(0, self.weight.numel() - 1)
            denom = (self.weight.to(total.dtype)[cls] * labelled).sum()
        # Where denom is 0 every term of total has weight 0, so total is 0 and so is the loss.
        return total / torch.where(denom > 0, denom, torch.ones_like(denom))


class DiceLoss(nn.Module):
    """smp's multiclass soft Dice; its ignore handling is correct, targets are cast to long."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss as SmpDice

        self.inner = SmpDice(mode="multiclass", ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, target.long())


class FocalLoss(nn.Module):
    """smp's multiclass focal loss, mean over labelled pixels, 0 (not NaN) if there are none.

    smp averages per-class losses, each a mean over labelled pixels; summing inside smp and
    dividing by the labelled count gives the same value without the empty-mean NaN.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        from segmentation_models_pytorch.losses import FocalLoss as SmpFocal

        self.ignore_index = ignore_index
        self.inner = SmpFocal(mode="multiclass", ignore_index=ignore_index, reduction="sum")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        n = (target != self.ignore_index).sum().clamp_min(1)
        return self.inner(logits, target) / n


class LovaszLoss(nn.Module):
    """smp's Lovasz-softmax over the batch; a zero scalar when every pixel is ignored.

    smp returns an empty ``[0, C]`` tensor in that case, on which ``backward()`` fails.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        from segmentation_models_pytorch.losses import LovaszLoss as SmpLovasz

        self.inner = SmpLovasz(mode="multiclass", ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits, target.long())
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:  # shape check: no host sync
            return logits.sum() * 0.0
        return loss


class CEDiceLoss(nn.Module):
    """Weighted cross-entropy plus (unweighted) Dice: CE for calibration, Dice for overlap."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.ce = CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice(logits, target)


def build_loss(
    name: str,
    num_classes: int,
    weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> nn.Module:
    """The loss module ``--loss name``, called as ``loss(logits [N,C,H,W], target [N,H,W])``."""
    if name not in LOSSES:
        raise UserError(f"--loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if weights is not None:
        if name not in WEIGHTED_LOSSES:
            raise UserError(
                f"--class-weights cannot be used with --loss {name}: only --loss "
                f"{' and --loss '.join(WEIGHTED_LOSSES)} accept class weights "
                "(use --class-weights none)"
            )
        if tuple(weights.shape) != (num_classes,):
            raise ValueError(
                f"class weights have shape {tuple(weights.shape)}, expected ({num_classes},)"
            )
        weights = weights.float()
    if name == "ce":
        return CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
    if name == "ce+dice":
        return CEDiceLoss(weight=weights, ignore_index=ignore_index)
    if name == "dice":
        return DiceLoss(ignore_index=ignore_index)
    if name == "focal":
        return FocalLoss(ignore_index=ignore_index)
    return LovaszLoss(ignore_index=ignore_index)
