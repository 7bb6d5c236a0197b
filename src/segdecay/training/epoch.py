"""One training epoch: augmented batches, the optimizer step, and a clean stop on a signal.

The step reads like torchvision's reference loop: forward under autocast, data loss plus the
loss-side decay terms, backward, optimizer and scheduler steps. Between steps the epoch
checks for SIGINT/SIGTERM and, if one arrived, writes a checkpoint that holds its exact
position (the permutation, the next batch, the running sums) before it stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from segdecay.config import TrainConfig, parse_size
from segdecay.data.base import IGNORE_INDEX, SegSplit
from segdecay.data.transforms import augment_batch, get_preset
from segdecay.decay import regularization_term
from segdecay.metrics import SegmentationMetrics
from segdecay.training.interrupt import TrainingInterrupted
from segdecay.training.log import write_metrics_csv
from segdecay.training.setup import TrainingRun
from segdecay.training.state import Progress, save_checkpoint


@dataclass
class EpochResult:
    """Mean losses over the epoch's steps (all ranks), and its training confusion."""

    loss: float
    data_loss: float
    metrics: SegmentationMetrics


def crop_fraction(crop: tuple[int, int] | None, size: tuple[int, int] | None,
                  image_hw: tuple[int, int]) -> tuple[float, float]:
    """The crop's share of the image it is cut from: the --size image, else the native one
    (a crop without --size is a window at native scale, not the whole image squeezed)."""
    if crop is None:
        return (1.0, 1.0)
    base = size or image_hw
    return (crop[0] / base[0], crop[1] / base[1])


def augmented_batch(
    split: SegSplit,
    idx: torch.Tensor,
    config: TrainConfig,
    train_size: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    rank_rows: slice | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented batch ``idx`` at ``train_size`` (height, width), or its ``rank_rows``
    (a data-parallel rank's share).

    Every rank augments the whole global batch, so ``generator`` advances on each rank
    exactly as in a single process (the next epoch's permutation agrees) and each image gets
    the random transform it would get there; the extra work is a resampling per image, small
    next to a training step.
    """
    preset = get_preset(config.augment)
    size = parse_size(config.size, "--size")
    crop = parse_size(config.crop, "--crop")
    stats = {"mean": config.input_mean, "std": config.input_std}
    stacked = split.stacked()
    if stacked is not None:
        images, masks = stacked[0][idx].to(device), stacked[1][idx].to(device)
        frac = crop_fraction(crop, size, tuple(images.shape[-2:]))
        x, m = augment_batch(images, masks, train_size, preset, generator, frac, **stats)
    else:
        parts = [
            augment_batch(split.images[i][None].to(device), split.masks[i][None].to(device),
                          train_size, preset, generator,
                          crop_fraction(crop, size, tuple(split.images[i].shape[-2:])),
                          **stats)
            for i in idx.tolist()
        ]
        x, m = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if rank_rows is not None:
        x, m = x[rank_rows], m[rank_rows]
    return x, m


def train_step(run: TrainingRun, net: Callable[[torch.Tensor], torch.Tensor],
               x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One optimizer step; returns (loss, data loss, logits), detached."""
    config = run.config
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(run.execution.device.type, dtype=torch.bfloat16, enabled=config.amp):
        logits = net(x)
    logits = logits.float()
    data_loss = run.loss_fn(logits, target)
    loss = data_loss
    if run.penalty_l2 or config.l1:
        # On every rank; DDP averages the gradients, so the decay counts once.
        loss = loss + regularization_term(l2=run.penalty_l2, l1=config.l1,
                                          groups=run.optimizer.param_groups)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    if run.average is not None:
        run.average.update(run.model)
    return loss.detach(), data_loss.detach(), logits.detach()


def _stop_here(run: TrainingRun, progress: Progress, epoch: int, batch: int, perm, sums,
               count: int, metrics: SegmentationMetrics, signum: int) -> None:
    """Save the exact position inside the epoch, then raise TrainingInterrupted."""
    ctx, checkpoints = run.execution.ctx, run.execution.checkpoints
    saved = run.checkpoint_state(
        progress, epoch, perm=perm, next_batch=batch,
        epoch_sums=ctx.all_reduce_sum(sums.clone()), epoch_count=count,
        epoch_confusion=ctx.all_reduce_sum(metrics.confusion.clone()))
    if run.main:
        if checkpoints:
            save_checkpoint(saved, run.out / "last.pt")
        write_metrics_csv(run.out / "metrics.csv", progress.history)
    ctx.barrier()  # no rank exits before last.pt is complete
    raise TrainingInterrupted(signum, str(run.out), f"in epoch {epoch + 1}/{run.epochs} after "
                              f"step {progress.step}", checkpoints)


def _epoch_start(run: TrainingRun, progress: Progress, metrics: SegmentationMetrics):
    """(permutation, first batch, loss sums, step count): fresh, or where a stop left off."""
    position, device = progress.position, run.execution.device
    if position is None:
        n = len(run.train_split)
        perm = torch.randperm(n, generator=run.execution.generator)
        return perm, 0, torch.zeros(2, device=device), 0
    progress.position = None
    sums = torch.zeros(2, device=device)
    if run.main:  # the saved sums are over all ranks already: count them once
        sums = position["epoch_sums"].to(device)
        metrics.confusion = position["epoch_confusion"].to(device)
    return position["perm"], position["next_batch"], sums, position["epoch_count"]


def train_one_epoch(run: TrainingRun, progress: Progress,
                    net: Callable[[torch.Tensor], torch.Tensor], epoch: int,
                    started: float) -> EpochResult:
    """Every step of epoch ``epoch`` (0-based); ``started`` is its perf_counter start."""
    execution = run.execution
    ctx, bs, log = execution.ctx, execution.batch_size, execution.log
    run.model.train()  # net may be a DDP wrapper or a compiled function of model
    metrics = SegmentationMetrics(run.data.info.num_classes, IGNORE_INDEX,
                                  device=execution.device)
    perm, first_batch, sums, count = _epoch_start(run, progress, metrics)
    bar = log.bar(run.steps_per_epoch, f"epoch {epoch + 1}/{run.epochs}")
    bar.update(first_batch)
    for b in range(first_batch, run.steps_per_epoch):
        if progress.step >= run.total_steps:
            break
        # Between steps: every rank stops at the same step, if any rank got a signal.
        signum = ctx.agree_max(execution.stop.signum or 0)
        if signum:
            bar.close()
            progress.train_seconds += time.perf_counter() - started
            _stop_here(run, progress, epoch, b, perm, sums, count, metrics, signum)
        x, target = augmented_batch(run.train_split, perm[b * bs: (b + 1) * bs], run.config,
                                    run.train_size, execution.generator, execution.device,
                                    rank_rows=execution.rank_rows)
        loss, data_loss, logits = train_step(run, net, x, target)
        progress.step += 1
        count += 1
        step_losses = torch.stack([loss, data_loss])
        sums += step_losses / ctx.world_size if ctx.enabled else step_losses
        metrics.update(logits, target)
        bar.update(1)
        if log.tty and not log.quiet:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    if ctx.enabled:  # loss sums (means over ranks) and pixel counts of the whole batch
        ctx.all_reduce_sum(sums)
        ctx.all_reduce_sum(metrics.confusion)
    loss_mean, data_mean = (sums / max(1, count)).tolist()  # one host sync per epoch
    return EpochResult(loss_mean, data_mean, metrics)
