"""Forward passes for evaluation and prediction at the label resolution.

Inputs are resized to the evaluation size (or kept native), padded to a multiple of the
encoder's output stride, and the logits are cropped back and upsampled to the mask size, so
a 360x480 CamVid label is scored at 360x480 whatever size the model saw.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from segdecay.data.base import SegSplit
from segdecay.data.transforms import Stats, standardize


def forward_padded(model: nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Logits for normalized ``x`` whose sides need not be multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return model(x)[..., :h, :w]


def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    out_hw: tuple[int, int],
    eval_hw: tuple[int, int] | None,
    multiple: int,
    channels_last: bool = False,
    amp: bool = False,
    mean: Stats | None = None,
    std: Stats | None = None,
    tta: str = "none",
) -> torch.Tensor:
    """Float logits at ``out_hw`` for uint8 images [N,3,H,W] (averaged over ``tta``)."""
    return tta_logits(model, normalized_input(images, eval_hw, mean, std), out_hw,
                      multiple, tta, channels_last, amp)


def normalized_input(images: torch.Tensor, eval_hw: tuple[int, int] | None,
                     mean: Stats | None = None, std: Stats | None = None) -> torch.Tensor:
    """The float input the model sees: uint8 [N,3,H,W] resized to ``eval_hw``, standardized
    with the run's input statistics (None: ImageNet's, what runs before them used)."""
    x = images.float().div_(255.0)
    if eval_hw is not None and tuple(x.shape[-2:]) != tuple(eval_hw):
        x = F.interpolate(x, size=eval_hw, mode="bilinear", align_corners=False)
    return standardize(x, mean, std)


def logits_of_input(model: nn.Module, x: torch.Tensor, out_hw: tuple[int, int], multiple: int,
                    channels_last: bool = False, amp: bool = False) -> torch.Tensor:
    """Float logits at ``out_hw`` from an already normalized (perhaps perturbed) input."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = forward_padded(model, x, multiple)
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(out_hw):
        logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
    return logits


# Test-time augmentation groups as (horizontal flip, quarter turns) pairs: ``flip`` the
# mirror a street scene allows, ``d4`` the eight symmetries of the square (every flip and
# turn) that orientation-free images allow.
TTA_GROUPS: dict[str, tuple[tuple[bool, int], ...]] = {
    "none": ((False, 0),),
    "flip": ((False, 0), (True, 0)),
    "d4": tuple((flip, turns) for turns in range(4) for flip in (False, True)),
}


def _transformed(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """``x`` mirrored left-right (if ``flip``), then turned by ``turns`` quarter turns."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def _restored(y: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """The inverse of :func:`_transformed`: turned back, then mirrored back."""
    if turns:
        y = torch.rot90(y, -turns, dims=(-2, -1))
    return y.flip(-1) if flip else y


def tta_logits(model: nn.Module, x: torch.Tensor, out_hw: tuple[int, int], multiple: int,
               tta: str = "none", channels_last: bool = False,
               amp: bool = False) -> torch.Tensor:
    """Logits at ``out_hw`` averaged over the ``tta`` group: the log of the mean of the
    softmax probabilities of each transformed input, mapped back (``none``: the plain
    logits; the log-probabilities rank the classes as averaged probabilities do, and a
    decision's logit bias acts on them as on logits)."""
    if tta not in TTA_GROUPS:
        raise ValueError(f"unknown test-time augmentation {tta!r}")
    if tta == "none":
        return logits_of_input(model, x, out_hw, multiple, channels_last, amp)
    total = None
    for flip, turns in TTA_GROUPS[tta]:
        hw = tuple(reversed(out_hw)) if turns % 2 else tuple(out_hw)
        logits = logits_of_input(model, _transformed(x, flip, turns), hw, multiple,
                                 channels_last, amp)
        probs = _restored(logits.softmax(dim=1), flip, turns)
        total = probs if total is None else total + probs
    return (total / len(TTA_GROUPS[tta])).clamp_min(1e-12).log()


def iterate_batches(
    split: SegSplit, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (uint8 images, masks) in order; same-size neighbours share a batch."""
    stacked = split.stacked()
    n = len(split)
    if stacked is not None:
        images, masks = stacked
        for start in range(0, n, batch_size):
            yield (images[start : start + batch_size].to(device),
                   masks[start : start + batch_size].to(device))
        return
    for i in range(n):
        yield split.images[i][None].to(device), split.masks[i][None].to(device)
