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
from segdecay.decay.defaults import optimizer_defaults, total_steps
from segdecay.errors import UserError
from segdecay.losses import WEIGHTED_LOSSES, class_pixel_counts

RARE_FRACTION = 0.05  # a class under 5% of the labelled training pixels is rare
VALIDATIONS = 20  # at most this many validations per run, at least 10 when epochs allow
BATCH = 8  # images per step when the training split is large enough
MIN_STEPS_PER_EPOCH = 16  # smaller batches (down to 2) until an epoch has this many steps
# Labels whose per-class row profile moves less than this (total variation, weighted by the
# classes' pixel shares) when turned upside down have no up and down: road surfaces,
# microscopy, aerial views (CrackForest 0.002, the synthetic scenes 0.08), unlike driving
# scenes (CamVid 0.85: sky above, road below).
UPRIGHT_TV = 0.3
PROFILE_BINS = 8


def resolve_defaults(config: TrainConfig, data: SegData,
                     world_size: int = 1) -> tuple[TrainConfig, list[str]]:
    """``config`` with every unset default decided, and one line per decision (a default
    batch is a multiple of the ``world_size`` data-parallel processes)."""
    notes: list[str] = []
    config = _mask_encoding(config, data, notes)
    config = _batch_size(config, len(data.train), notes, world_size)
    config = _augment(config, data, notes)
    config = optimizer_defaults(config, steps_per_epoch(len(data.train), config.batch_size),
                                notes)
    config = _eval_size(config, notes)
    config = _normalization(config, data.train, notes)
    config = _loss(config, data, notes)
    config = _class_weights(config, data, notes)
    config = _decision(config, data, notes)
    config = _checkpoint(config, data, notes)
    config = _eval_cadence(config, len(data.train), config.batch_size, notes)
    return config, notes


def _mask_encoding(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """How a folder's mask values were read, said and kept, so config.yaml reads them the
    same way again."""
    read = data.info.mask_encoding
    if read not in ("binary", "index"):
        return config
    how = (f"values >= 128 are class 1 of {data.info.num_classes}" if read == "binary" else
           f"values are class ids 0..{data.info.num_classes - 1}, 255 ignore")
    source = ("as --mask-encoding says" if config.mask_encoding != "auto" else
              "read from the values; --mask-encoding")
    notes.append(f"mask encoding {read}: {how} ({source})")
    return replace(config, mask_encoding=read)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``n_train`` images (a partial last batch is dropped)."""
    return max(1, n_train // max(1, min(batch_size, n_train)))


def default_batch_size(n_train: int) -> int:
    """8, or 4, then 2, while an epoch would have fewer than MIN_STEPS_PER_EPOCH steps."""
    for batch in (BATCH, BATCH // 2):
        if n_train // batch >= MIN_STEPS_PER_EPOCH:
            return batch
    return max(1, min(2, n_train))


def _batch_size(config: TrainConfig, n_train: int, notes: list[str],
                world_size: int = 1) -> TrainConfig:
    """A small training split gets smaller batches, so a run of a few epochs still takes
    enough optimizer steps to learn; a batch larger than the split is clipped, and said."""
    if config.batch_size is None:
        batch = default_batch_size(n_train)
        batch = min(max(n_train, 1), -(-batch // world_size) * world_size)
        if batch < BATCH:
            notes.append(f"batch size {batch}: {n_train} training images make "
                         f"{n_train // BATCH} batches of {BATCH}, under "
                         f"{MIN_STEPS_PER_EPOCH} steps per epoch (--batch-size)")
        return replace(config, batch_size=batch)
    if config.batch_size > n_train:
        notes.append(f"batch size {n_train}: --batch-size {config.batch_size} is more than "
                     f"the {n_train} training images")
        return replace(config, batch_size=n_train)
    return config


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
    per_epoch = steps_per_epoch(n, batch_size)
    epochs = math.ceil(total_steps(config, per_epoch) / per_epoch)
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



def upside_down_change(masks, num_classes: int) -> float:
    """How much the labels' layout changes when turned upside down: per class, the total
    variation between its share of pixels in each of PROFILE_BINS horizontal bands and the
    same bands mirrored, averaged with the classes' pixel shares as weights (0: no up and
    down; 1: every class lives in one half)."""
    rows = torch.zeros(2, num_classes, PROFILE_BINS, dtype=torch.float64)
    for mask in masks:
        # the mask and its upside-down copy binned by the same bands: mirroring the bands
        # instead would be exact only for heights that divide into them evenly
        for k, m in enumerate((mask.long(), mask.long().flip(0))):
            band = torch.arange(m.shape[0]) * PROFILE_BINS // m.shape[0]
            valid = (m >= 0) & (m < num_classes)
            index = (torch.where(valid, m, 0) * PROFILE_BINS + band[:, None]).flatten()
            rows[k].view(-1).index_add_(0, index[valid.flatten()],
                                        torch.ones(int(valid.sum()), dtype=torch.float64))
    pixels = rows[0].sum(1)
    if pixels.sum() == 0:
        return 0.0
    profile, flipped = rows / pixels.clamp_min(1)[None, :, None]
    change = 0.5 * (profile - flipped).abs().sum(1)
    return float((change * pixels).sum() / pixels.sum())


def _augment(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """d4 (flips both ways, quarter turns) for labels with no up and down, else light
    (horizontal flips, scale 0.75-1.25): turning a street scene shows the model skies
    below roads, which no test image holds."""
    if config.augment is not None:
        return config
    change = upside_down_change(data.train.masks, data.info.num_classes)
    upright = change >= UPRIGHT_TV
    augment = "light" if upright else "d4"
    why = ("have an up and down" if upright else "look the same upside down")
    notes.append(f"augment {augment}: the training labels {why} (their rows' class layout "
                 f"changes by {change:.2f} when flipped vertically; "
                 f"{'at least' if upright else 'under'} {UPRIGHT_TV:g}; --augment)")
    return replace(config, augment=augment)


def _class_weights(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """ENet weights 1/ln(1.02 + p_c) when one of several classes is rare; none on binary
    data, where the Dice term and the decision's threshold already balance the two."""
    if config.class_weights is not None:
        return config
    name, share = rarest_fraction(data)
    classes = data.info.num_classes
    weights = "enet" if classes > 2 and share < RARE_FRACTION else "none"
    if config.loss not in WEIGHTED_LOSSES:
        notes.append(f"class weights none: --loss {config.loss} takes none (--class-weights)")
        return replace(config, class_weights="none")
    if weights == "enet":
        why = (f"{name} is {share:.2%} of the labelled training pixels (under "
               f"{RARE_FRACTION:.0%})")
    elif classes <= 2:
        why = "binary data (ce+dice and the decision threshold balance it)"
    else:
        why = f"every class is at least {RARE_FRACTION:.0%} of the labelled training pixels"
    notes.append(f"class weights {weights}: {why} (--class-weights)")
    return replace(config, class_weights=weights)


def _decision(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """Logit adjustment with t chosen on val, when there is a val split to choose it on."""
    if config.decision is not None:
        return config
    if len(data.val) == 0:
        notes.append("decision argmax: no val images to choose t on (--decision)")
        return replace(config, decision="argmax")
    notes.append(f"decision adjusted: argmax(logit - t*log prior), t chosen on the "
                 f"{len(data.val)} val images at the end of the run (--decision)")
    return replace(config, decision="adjusted")


def _checkpoint(config: TrainConfig, data: SegData, notes: list[str]) -> TrainConfig:
    """auto when there are val images: the best validation's weights where val shows them
    better beyond noise. A short run on a small, rare-foreground split can end on a worse
    point than it passed (CrackForest at 300 steps: crack Dice 0.46 at the end, 0.63 at the
    best validation), while at a full budget the best of many validations on 20 val images
    is mostly noise (600 steps: 0.670 against the final weights' 0.688)."""
    if len(data.val) == 0:
        if config.checkpoint == "best":
            raise UserError("--checkpoint best: there are no val images to choose the best "
                            "validation on; give a val split or --checkpoint last")
        return replace(config, checkpoint="last")
    if config.checkpoint is not None:
        return config
    notes.append(f"checkpoint auto: the run answers with the weights of its best validation "
                 f"if they beat the final weights by over two bootstrap SEs over the "
                 f"{len(data.val)} val images, else with the final weights (--checkpoint)")
    return replace(config, checkpoint="auto")
