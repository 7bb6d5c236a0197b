"""Per-image scores of a trained run, for paired statistics over images or groups of them.

Seeds are few (3-5), so a paired test over seeds has little power; images are many, and
every variant is scored on the same ones (the test averages them per group of correlated
images first: :func:`segdecay.studies.compare.statistics.paired_by_group`). A per-image
mIoU averages the IoU of the classes present in that image's label or prediction (a class
absent from both says nothing). An image whose every pixel is ignored has no score (NaN),
not 0: it would otherwise count as a total failure of every variant, and the callers leave
it out of means and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segdecay.data.base import IGNORE_INDEX, SegSplit
from segdecay.runs.folder import inference_choice, load_run
from segdecay.training.evaluate import Scoring, evaluate_split


def image_confusions(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, C, C]`` confusion counts (rows: true class) of each image, ignore excluded."""
    n = preds.shape[0]
    valid = target != IGNORE_INDEX
    index = (torch.arange(n, device=preds.device).view(n, 1, 1) * num_classes * num_classes
             + target.clamp(max=num_classes - 1) * num_classes + preds)
    counts = torch.bincount(index[valid], minlength=n * num_classes * num_classes)
    return counts.view(n, num_classes, num_classes)


def image_miou(confusion: torch.Tensor) -> torch.Tensor:
    """Per-image mIoU from ``[N, C, C]`` counts, over classes in the label or prediction.

    NaN for an image without a labelled pixel (no class present): there is nothing to score.
    """
    cm = confusion.double()
    tp = cm.diagonal(dim1=1, dim2=2)
    union = cm.sum(dim=2) + cm.sum(dim=1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    count = present.sum(dim=1)
    return torch.where(count > 0, iou.sum(dim=1) / count.clamp(min=1),
                       iou.new_full((iou.shape[0],), torch.nan))


def score_images(run: str | Path, split: SegSplit, num_classes: int,
                 checkpoint: str = "run") -> dict[str, Any]:
    """Split-level metrics and per-image mIoU of the weights ``run`` answers with on
    ``split``, pixels decided as the run chose (``--decision``), as ``segdecay evaluate``
    decides them."""
    bias, group, _ = inference_choice(run)
    config, _, model, device = load_run(run, checkpoint, device="cpu")
    per_image: list[float] = []

    def collect(logits: torch.Tensor, target: torch.Tensor) -> None:
        per_image.extend(image_miou(image_confusions(logits.argmax(1), target,
                                                     num_classes)).tolist())

    result, _ = evaluate_split(model, split, num_classes, config, device,
                               scoring=Scoring(on_batch=collect, logit_bias=bias, tta=group))
    return {**result, "per_image_miou": per_image}
