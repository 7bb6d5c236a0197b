"""The one evaluation loop: a whole split at label resolution, optionally perturbed.

Training (validation each epoch), ``segdecay evaluate``, the per-image scores of compare and
the spectrum's filters and noise all score through :func:`evaluate_split`, so their numbers
agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from segdecay.config import TrainConfig, parse_size
from segdecay.data.base import IGNORE_INDEX, SegSplit
from segdecay.decision import (
    EVIDENCE_SES,
    TAUS,
    DecisionSweep,
    apply_bias,
    choose_tau_on_evidence,
    gain_and_se,
    log_prior,
    logit_bias,
)
from segdecay.inference import TTA_GROUPS, iterate_batches, normalized_input, tta_logits
from segdecay.losses import class_pixel_counts
from segdecay.metrics import SegmentationMetrics
from segdecay.models import output_stride
from segdecay.training import distributed


@dataclass(frozen=True)
class Scoring:
    """How :func:`evaluate_split` shares, perturbs, decides and reports its pass; the
    default is a plain argmax pass in one process.

    With a data-parallel ``dist``, rank r scores batches r, r+N, ... (each batch computed
    exactly as one process computes it) and the confusion counts and per-batch losses are
    summed over ranks, so every rank gets the single-process result.

    ``perturb(x, batch_index)`` changes each normalized input batch before the forward (the
    spectrum's filters and noise); ``on_batch(logits, target)`` sees each batch this rank
    scored (per-image scores, prediction spectra), so analyses share this one loop.

    ``logit_bias`` (a run's ``--decision adjusted``) is added to the logits that are scored
    and that ``on_batch`` sees; the loss is the training loss of the logits before the bias.
    ``tta`` averages each batch's probabilities over a test-time augmentation group
    (:data:`segdecay.inference.TTA_GROUPS`); the scores are then the log of the averages.
    """

    dist: distributed.DistContext | None = None
    perturb: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None
    logit_bias: Sequence[float] | None = None
    tta: str = "none"


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: SegSplit,
    num_classes: int,
    config: TrainConfig,
    device: torch.device,
    loss_fn: nn.Module | None = None,
    *,
    scoring: Scoring = Scoring(),
) -> tuple[dict[str, Any], float]:
    """Metrics over the whole split at label resolution, and the mean loss per image
    (0 without ``loss_fn``), scored as ``scoring`` says (:class:`Scoring`).

    ``model`` is the bare model, not its DDP wrapper: under a data-parallel
    ``scoring.dist`` ranks run different numbers of batches here.
    """
    ctx = scoring.dist or distributed.DistContext()
    model.eval()
    metrics = SegmentationMetrics(num_classes, IGNORE_INDEX, device=device)
    eval_hw = parse_size(config.eval_size, "--eval-size")
    stride = output_stride(model)
    batch_losses: list[tuple[int, torch.Tensor]] = []
    k = 0
    for k, (images, masks) in enumerate(
        iterate_batches(split, max(1, config.batch_size or 8), torch.device("cpu")), start=1
    ):
        if (k - 1) % ctx.world_size != ctx.rank:
            continue
        images, masks = images.to(device), masks.to(device)
        x = normalized_input(images, eval_hw, config.input_mean, config.input_std)
        if scoring.perturb is not None:
            x = scoring.perturb(x, k - 1)
        logits = tta_logits(model, x, tuple(masks.shape[-2:]), stride, scoring.tta,
                            channels_last=config.channels_last, amp=config.amp)
        target = masks.long()
        decided = apply_bias(logits, scoring.logit_bias)
        metrics.update(decided, target)
        if scoring.on_batch is not None:
            scoring.on_batch(decided, target)
        if loss_fn is not None:
            batch_losses.append((k - 1, loss_fn(logits, target).detach() * images.shape[0]))
    per_batch = torch.zeros(k, device=device)
    for slot, value in batch_losses:
        per_batch[slot] = value
    if ctx.enabled:
        ctx.all_reduce_sum(metrics.confusion)
        ctx.all_reduce_sum(per_batch)  # one non-zero entry per slot: exact
    loss_sum = torch.zeros((), device=device)
    for value in per_batch:  # in batch order, as one process adds them
        loss_sum += value
    return metrics.compute(), float(loss_sum) / max(1, len(split))


def tta_candidates(config: TrainConfig) -> list[str]:
    """The test-time augmentations a run compares on val: ``auto`` tries none and the
    group of its training augmentation (d4's, or the horizontal mirror of every other)."""
    if config.tta != "auto":
        return [config.tta]
    group = {"none": "none", "d4": "d4"}.get(config.augment or "flip", "flip")
    return ["none"] if group == "none" else ["none", group]


@torch.no_grad()
def choose_decision(
    model: nn.Module,
    val: SegSplit,
    train_masks: Sequence[torch.Tensor],
    num_classes: int,
    config: TrainConfig,
    device: torch.device,
    *,
    dist: distributed.DistContext | None = None,
) -> dict[str, Any] | None:
    """How the run decides pixels, chosen on val from one pass per test-time augmentation:
    the t of argmax(logit - t·log prior) under ``--decision adjusted`` (0 under argmax;
    :mod:`segdecay.decision`) and, under ``--tta auto``, whether the augmentation group
    beats the plain pass. Per group, the best t is kept only if its val gain over argmax
    exceeds two bootstrap SEs over the val images (:func:`choose_tau_on_evidence`); the group
    with the higher val mIoU at its t wins, a tie going to fewer passes. None when there is
    nothing to choose (argmax and no test-time augmentation)."""
    ctx = dist or distributed.DistContext()
    taus = TAUS if config.decision == "adjusted" else (0.0,)
    groups = tta_candidates(config)
    if taus == (0.0,) and groups == ["none"]:
        return None
    prior = log_prior(class_pixel_counts(train_masks, num_classes, IGNORE_INDEX).pixels.tolist())
    scores: dict[str, dict[float, float]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    for group in groups:
        sweep = DecisionSweep(prior, IGNORE_INDEX, taus)
        evaluate_split(model, val, num_classes, config, device,
                       scoring=Scoring(dist=ctx, tta=group, on_batch=sweep.update))
        if ctx.enabled:
            for metrics in sweep.metrics.values():
                ctx.all_reduce_sum(metrics.confusion)
        scores[group] = sweep.mious()
        per_image = np.concatenate(ctx.gather(sweep.per_image()))
        chosen[group] = choose_tau_on_evidence(scores[group], per_image, taus)
    best_tau = {g: chosen[g]["tau"] for g in groups}
    group = max(groups, key=lambda g: (scores[g][best_tau[g]], -groups.index(g)))
    tau = best_tau[group]
    return {"rule": config.decision, "tau": tau, "tta": group,
            "tta_passes": len(TTA_GROUPS[group]), "chosen_on": "val",
            "val_miou": scores[group][tau], "val_miou_argmax": scores["none"][0.0]
            if "none" in scores else scores[group][0.0],
            "best_val_tau": chosen[group]["best_tau"], "val_gain": chosen[group]["gain"],
            "val_gain_se": chosen[group]["se"], "val_images": chosen[group]["images"],
            "val_miou_by_tta": {g: scores[g][best_tau[g]] for g in groups},
            "val_miou_by_tau": {f"{t:g}": v for t, v in scores[group].items()},
            "log_prior": prior, "logit_bias": logit_bias(tau, prior)}


def _scored_per_image(model: nn.Module, val: SegSplit, num_classes: int, config: TrainConfig,
                      device: torch.device,
                      ctx: distributed.DistContext) -> tuple[dict[str, Any], np.ndarray]:
    """(val metrics, ``[n, 3, C]`` counts of each val image) of ``model`` at argmax."""
    sweep = DecisionSweep([0.0] * num_classes, IGNORE_INDEX, (0.0,))
    result, _ = evaluate_split(model, val, num_classes, config, device,
                               scoring=Scoring(dist=ctx, on_batch=sweep.update))
    return result, np.concatenate(ctx.gather(sweep.per_image()))[:, 0]


@torch.no_grad()
def choose_checkpoint(
    model: nn.Module,
    best_weights: dict[str, torch.Tensor],
    val: SegSplit,
    num_classes: int,
    config: TrainConfig,
    device: torch.device,
    *,
    dist: distributed.DistContext | None = None,
) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Whether the run answers with its best validation's weights (``best_weights``) rather
    than the final ones that ``model`` holds: under ``--checkpoint auto`` only if their val
    mIoU gain exceeds two bootstrap SEs over the val images, as a t of the decision must (the
    best of 10-20 validations on a small val split is partly noise, and the final weights,
    at the end of the lr schedule, are the steadier point). ``model`` is left holding the
    chosen weights. Returns (best chosen, their val metrics, the evidence)."""
    ctx = dist or distributed.DistContext()
    final_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final, final_images = _scored_per_image(model, val, num_classes, config, device, ctx)
    model.load_state_dict(best_weights)
    best, best_images = _scored_per_image(model, val, num_classes, config, device, ctx)
    gain, se = gain_and_se(np.stack([best_images, final_images], axis=1), 0, 1)
    chosen = config.checkpoint == "best" or gain > EVIDENCE_SES * se
    if not chosen:
        model.load_state_dict(final_weights)
    evidence = {"val_miou_best": best["miou"], "val_miou_final": final["miou"],
                "val_gain": gain, "val_gain_se": se if np.isfinite(se) else None,
                "val_images": int(len(best_images))}
    return chosen, (best if chosen else final), evidence
