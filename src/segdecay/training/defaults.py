"""Defaults that fit the user's data, resolved once at the start of a run.

Each option the user left unset gets a value from the optimizer or the training data, and a
line saying so that the run prints before its first step; ``config.yaml`` holds the resolved
values, so rerunning it gives the same run. The choices and the measurements behind them are
in ``docs/defaults.md``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from segdecay.config import TrainConfig
from segdecay.data.base import IGNORE_INDEX, SegData, SegSplit
from segdecay.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segdecay.decay.defaults import optimizer_defaults
from segdecay.losses import class_pixel_counts

RARE_FRACTION = 0.05  # a class under 5% of the labelled training pixels is rare
VALIDATIONS = 20  # at most this many validations per run, at least 10 when epochs allow


def resolve_defaults(config: TrainConfig, data: SegData,
                     batch_size: int) -> tuple[TrainConfig, list[str]]:
    """``config`` with every unset default decided, and one line per decision."""
    config, notes = optimizer_defaults(config)
    config = _eval_size(config, notes)
    config = _normalization(config, data.train, notes)
    config = _loss(config, data, notes)
    config = _eval_cadence(config, len(data.train), batch_size, notes)
    return config, notes


def _eval_size(config: TrainConfig, notes: list[str]) -> TrainConfig:
    """Evaluate at the scale the model trained at: --size when given, else native."""
    if config.eval_size is not None:
        return config
    if config.size:
        notes.append(f"eval size {config.size[0]}x{config.size[1]}: follows --size "
                     "(--eval-size native scores native images)")
        return replace(config, eval_size=list(config.size))
    return replace(config, eval_size=[])


def _eval_cadence(config: TrainConfig, n: int, batch_size: int,
                  notes: list[str]) -> TrainConfig:
    """Validate every ceil(epochs / 20) epochs: 10-20 validations in runs of 10+ epochs."""
    if config.eval_every is not None:
        return config
    steps_per_epoch = max(1, n // batch_size)
    epochs = math.ceil((config.steps or config.epochs * steps_per_epoch) / steps_per_epoch)
    every = max(1, math.ceil(epochs / VALIDATIONS))
    if every > 1:
        notes.append(f"validation every {every} epochs: {math.ceil(epochs / every)} of "
                     f"{epochs} epochs (--eval-every)")
    return replace(config, eval_every=every)


def rarest_fraction(data: SegData) -> tuple[str, float]:
    """The class with the fewest labelled training pixels, and its share of them."""
    counts = class_pixel_counts(data.train.masks, data.info.num_classes, IGNORE_INDEX)
    shares = counts.pixels.double() / max(1, counts.total)
    c = int(shares.argmin())
    return data.info.class_names[c], float(shares[c])


def _loss(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """ce+dice when a class is rare (CE alone lets the background win), else ce."""
    if config.loss is not None:
        return config
    name, share = rarest_fraction(data)
    loss = "ce+dice" if share < RARE_FRACTION else "ce"
    notes.append(f"loss {loss}: the rarest class, {name}, is {share:.2%} of the labelled "
                 f"training pixels ({'under' if loss != 'ce' else 'at least'} "
                 f"{RARE_FRACTION:.0%}; --loss)")
    return replace(config, loss=loss)


def channel_stats(split: SegSplit) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of every training pixel, on a 0..1 scale."""
    s1 = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    count = 0
    for image in split.images:
        x = image.to(torch.float64).reshape(3, -1)
        s1 += x.sum(1)
        s2 += (x * x).sum(1)
        count += x.shape[1]
    mean = s1 / count
    var = (s2 / count - mean * mean).clamp_min(0.0)
    return (mean / 255).tolist(), (var.sqrt() / 255).clamp_min(1e-6).tolist()


def _normalization(config: TrainConfig, split: SegSplit, notes: list[str]) -> TrainConfig:
    """The training images' own mean/std from scratch; ImageNet's for pretrained weights."""
    if config.input_mean is not None and config.input_std is not None:
        return config
    mode = config.normalize
    if mode == "auto":
        mode = "imagenet" if config.encoder_weights else "dataset"
    if mode == "imagenet":
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        mean, std = channel_stats(split)
        notes.append("input normalization: the training images' mean "
                     f"{', '.join(f'{v:.3f}' for v in mean)} and std "
                     f"{', '.join(f'{v:.3f}' for v in std)} (--normalize imagenet for "
                     "ImageNet's)")
    return replace(config, normalize=mode, input_mean=mean, input_std=std)

