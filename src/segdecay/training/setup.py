"""Build a run: model, decay groups, optimizer, schedule, loss, and the run folder's header.

:class:`TrainingRun` holds everything a run is made of and does not change while it trains;
the loop passes it to each step, together with the run's :class:`~segdecay.training.state.
Progress`. Its methods say what a checkpoint and a summary hold, so no step reaches into
another step's locals. Where and how the run executes (processes, device, batch sizes, log)
comes in as one :class:`Execution`, decided by the caller before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segdecay.config import TrainConfig, parse_size, save_config
from segdecay.data.base import IGNORE_INDEX, SegData, SegSplit
from segdecay.decay import (
    algorithm_name,
    build_optimizer,
    build_scheduler,
    decay_report,
    describe_split,
    param_groups,
    resolved_decay_mode,
    weight_norm,
)
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.losses import build_loss, class_weights
from segdecay.models import build_model, output_stride
from segdecay.training import distributed
from segdecay.training.averaging import WeightAverage, horizon_steps
from segdecay.training.interrupt import StopRequest
from segdecay.training.log import Log
from segdecay.training.state import Progress, rng_state
from segdecay.version import library_versions


@dataclass(frozen=True)
class Execution:
    """Where and how a run executes, decided before :func:`build_run` builds its parts."""

    ctx: distributed.DistContext  # this process's rank among the data-parallel processes
    device: torch.device
    generator: torch.Generator  # batch order and augmentation
    batch_size: int  # global: images per step over all processes
    local_batch: int  # this process's images per step
    log: Log
    stop: StopRequest  # set by SIGINT/SIGTERM; checked between steps
    checkpoints: bool  # whether the run writes best.pt and last.pt

    @property
    def rank_rows(self) -> slice | None:
        """This rank's rows of every global batch (None in a single process)."""
        ctx, k = self.ctx, self.local_batch
        return slice(ctx.rank * k, (ctx.rank + 1) * k) if ctx.enabled else None


@dataclass
class TrainingRun:
    """The fixed parts of one run, built once before the first step."""

    config: TrainConfig  # as given, with amp resolved
    resolved_config: TrainConfig  # what config.yaml says: the decay mode resolved too
    out: Path
    execution: Execution
    data: SegData
    model: nn.Module
    train_size: tuple[int, int]  # (height, width) of every training batch
    initial_norm: float
    decay_mode: str  # resolved: never None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    total_steps: int
    epochs: int
    class_weights: torch.Tensor | None
    loss_fn: nn.Module
    decay_by_group: list[dict]  # decay_report's entry per parameter group (decay.json)
    defaults: list[str]  # one line per default decided from the optimizer or the data
    average: WeightAverage | None = None  # --ema: the weights that are scored and saved

    @property
    def main(self) -> bool:
        """Rank 0 writes the run folder; every rank computes the same numbers."""
        return self.execution.ctx.is_main

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation, checkpoints and summaries score: the average under --ema."""
        return self.average.module if self.average is not None else self.model

    @property
    def train_split(self) -> SegSplit:
        """The images the run trains on."""
        return self.data.train

    @property
    def penalty_l2(self) -> float:
        """lambda of the loss-side L2 term (0 unless the mode is penalty)."""
        return self.config.weight_decay if self.decay_mode == "penalty" else 0.0

    @property
    def dataset_meta(self) -> dict[str, Any]:
        """What a checkpoint needs to know of the data to predict with it."""
        info = self.data.info
        return {"name": info.name, "num_classes": info.num_classes,
                "class_names": list(info.class_names),
                "palette": [list(c) for c in info.palette]}

    @property
    def algorithm(self) -> str:
        """The plain name of what runs (SGD + coupled L2, AdamW, ...)."""
        return algorithm_name(self.config.optimizer, self.decay_mode)

    def checkpoint_state(self, progress: Progress, epoch_done: int,
                         **inside: Any) -> dict[str, Any]:
        """What ``last.pt`` holds for an exact resume; ``inside`` adds a mid-epoch position.

        A collective under DDP (every rank calls it): ``rank_rng`` holds each rank's RNG
        states, since their dropout streams differ."""
        ctx = self.execution.ctx
        rng = rng_state(self.execution.generator, self.execution.device)
        extra = {"rank_rng": ctx.gather(rng)} if ctx.enabled else {}
        if self.average is not None:  # "model" is what evaluate loads; the raw weights resume
            extra.update(trained_model=self.model.state_dict(),
                         average=self.average.state_dict())
        return {
            "model": self.eval_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng,
            "epoch": epoch_done, "step": progress.step, "history": progress.history,
            "best_miou": progress.best, "train_seconds": progress.train_seconds,
            "config": self.resolved_config.to_dict(), "dataset": self.dataset_meta,
            "world_size": ctx.world_size, **extra, **inside,
        }

    def best_state(self, epoch_done: int, score: float) -> dict[str, Any]:
        """What ``best.pt`` holds: the weights and enough to load them."""
        return {"model": self.eval_model.state_dict(), "epoch": epoch_done, "val_miou": score,
                "config": self.resolved_config.to_dict(), "dataset": self.dataset_meta}

    def summary(self, progress: Progress, status: str, **results: Any) -> dict[str, Any]:
        """summary.json: what ran (shared by completed and diverged runs), then results."""
        config = self.config
        return {
            "status": status, "run": str(self.out), "data": config.data, "seed": config.seed,
            "algorithm": self.algorithm, "decay_mode": self.decay_mode,
            "weight_decay": config.weight_decay, "l1": config.l1, "epochs": self.epochs,
            "steps": progress.step, "train_seconds": progress.train_seconds,
            "world_size": self.execution.ctx.world_size, **results,
            "versions": library_versions(),
        }


def resolve_train_size(config: TrainConfig, split: SegSplit, stride: int) -> tuple[int, int]:
    """Input size of training batches: crop, else size, else the images' common size."""
    hw = parse_size(config.crop, "--crop") or parse_size(config.size, "--size")
    if hw is None:
        hw = split.uniform_size()
        if hw is None:
            raise UserError("training images differ in size: pass --size HxW (and maybe --crop)")
    if hw[0] % stride or hw[1] % stride:
        fix = "x".join(str(max(stride, round(v / stride) * stride)) for v in hw)
        raise UserError(
            f"--size/--crop {hw[0]}x{hw[1]}: sides must be multiples of {stride} for "
            f"{config.arch}/{config.encoder}; try {fix}"
        )
    return hw


def _placed_model(config: TrainConfig, num_classes: int, ctx: distributed.DistContext,
                  device: torch.device) -> nn.Module:
    """The seeded model on its device (SyncBatchNorm under DDP if asked, channels_last)."""
    model = build_model(config.arch, config.encoder, num_classes, dropout=config.dropout,
                        encoder_weights=config.encoder_weights)
    if config.sync_bn and ctx.enabled:
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_run(config: TrainConfig, out: Path, data: SegData, execution: Execution,
              defaults: list[str] | None = None) -> TrainingRun:
    """Every fixed part of a run, built in the order that fixes the seeded numbers.

    ``defaults`` are the lines :func:`~segdecay.training.defaults.resolve_defaults` wrote
    for the options it decided; the run logs them first."""
    info, n = data.info, len(data.train)
    ctx, device = execution.ctx, execution.device
    model = _placed_model(config, info.num_classes, ctx, device)
    train_size = resolve_train_size(config, data.train, output_stride(model))
    # Fixed by the seed (and pretrained weights), so a resumed run computes the same value.
    initial_norm = weight_norm(p for p in model.parameters())
    if ctx.enabled:  # weights came from config.seed; dropout masks differ per rank
        torch.manual_seed(distributed.rank_seed(config.seed, ctx.rank))
    decay_mode = resolved_decay_mode(config.optimizer, config.decay_mode)
    groups = param_groups(model, config.weight_decay, no_decay=config.no_decay,
                          rules=config.decay_rules)
    optimizer = build_optimizer(groups, config.optimizer, config.lr, decay_mode,
                                momentum=config.momentum)
    steps_per_epoch = max(1, n // execution.batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = build_scheduler(optimizer, total_steps, config.schedule, warmup)
    weights = class_weights(data.train.masks, info.num_classes, config.class_weights,
                            IGNORE_INDEX)
    loss_fn = build_loss(config.loss, info.num_classes,
                         weights.to(device) if weights is not None else None, IGNORE_INDEX)
    decay_by_group = decay_report(optimizer, config.optimizer, total_steps=total_steps,
                                  steps_per_epoch=steps_per_epoch, schedule=config.schedule,
                                  warmup_steps=warmup, momentum=config.momentum)
    average = (WeightAverage(model, horizon_steps(config.ema, total_steps))
               if config.ema > 0 else None)
    return TrainingRun(
        config=config, resolved_config=replace(config, decay_mode=decay_mode), out=out,
        execution=execution, data=data, model=model, train_size=train_size,
        initial_norm=initial_norm, decay_mode=decay_mode, optimizer=optimizer,
        scheduler=scheduler,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        epochs=math.ceil(total_steps / steps_per_epoch), class_weights=weights,
        loss_fn=loss_fn, decay_by_group=decay_by_group, defaults=list(defaults or []),
        average=average)


def crop_padding(config: TrainConfig, split: SegSplit) -> str | None:
    """A line when --crop is larger than the images it is cut from: the rest is padding."""
    crop = parse_size(config.crop, "--crop")
    base = parse_size(config.size, "--size") or split.uniform_size()
    if crop is None or base is None or (crop[0] <= base[0] and crop[1] <= base[1]):
        return None
    kept = min(crop[0], base[0]) * min(crop[1], base[1]) / (crop[0] * crop[1])
    return (f"note: --crop {crop[0]}x{crop[1]} is larger than the {base[0]}x{base[1]} "
            f"training images: {1 - kept:.0%} of each sample is padding, which the loss "
            "ignores (--crop)")


def write_header(run: TrainingRun) -> None:
    """config.yaml and decay.json, before the first step (rank 0)."""
    if not run.main:
        return
    config = run.config
    run.out.mkdir(parents=True, exist_ok=True)
    save_config(run.resolved_config, run.out / "config.yaml")
    write_json(run.out / "decay.json", {
        "algorithm": run.algorithm,
        "optimizer": config.optimizer,
        "decay_mode": run.decay_mode,
        "weight_decay": config.weight_decay,
        "l1": config.l1,
        "no_decay": config.no_decay,
        "decay_rules": list(config.decay_rules),
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps,
        "batch_size": run.execution.batch_size,
        "world_size": run.execution.ctx.world_size,
        "class_weights": run.class_weights.tolist() if run.class_weights is not None else None,
        "groups": run.decay_by_group,
    })


def log_start(run: TrainingRun) -> None:
    """What the run is about to do: data, parallelism, optimizer, and the decay split."""
    info, config, execution = run.data.info, run.config, run.execution
    ctx, log, size = execution.ctx, execution.log, run.train_size
    for line in run.defaults:
        log.line(f"default {line}")
    log.line(f"data {info.name}: {len(run.train_split)} train / {len(run.data.val)} val "
             f"images, {info.num_classes} classes, input {size[0]}x{size[1]}, device "
             f"{execution.device}")
    if ctx.enabled:
        log.line(f"data-parallel: {ctx.world_size} processes x {execution.local_batch} images "
                 f"= global batch {execution.batch_size}"
                 + (", SyncBatchNorm" if config.sync_bn else ", BatchNorm per process (not one "
                                                          "process's numbers: --sync-bn)"))
    padding = crop_padding(config, run.train_split)
    if padding:
        log.line(padding)
    log.line(f"optimizer: {run.algorithm}, lr {config.lr:g}, lambda {config.weight_decay:g}"
             + (f", l1 {config.l1:g}" if config.l1 else ""))
    log.line(describe_split(run.optimizer.param_groups))
    if run.average is not None:
        log.line(f"weight average: the last {config.ema:g} of the run (horizon "
                 f"{run.average.horizon} of {run.total_steps} steps); validation and "
                 "checkpoints use it")
