"""Whole-batch augmentation with tensor ops, on whatever device the batch lives on.

One ``affine_grid`` + ``grid_sample`` per batch does resize, random scale, random crop and
horizontal flip at once (bilinear for images, nearest for masks); pixels sampled from outside
the image become the ignore index, so padding never teaches a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segdecay.data.base import IGNORE_INDEX
from segdecay.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what pretrained smp encoders expect
IMAGENET_STD = (0.229, 0.224, 0.225)
Stats = tuple[float, float, float] | list[float]


@dataclass(frozen=True)
class AugmentPreset:
    """Ranges of the random transforms; ``none`` only resizes."""

    hflip: bool = False
    vflip: bool = False
    rot90: bool = False  # quarter turns, applied to square outputs only
    scale: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0


# The names are the choices of --augment, declared with TrainConfig.augment (config.AUGMENTS);
# tests/test_cli.py checks that the two agree.
PRESETS = {
    "none": AugmentPreset(),
    "flip": AugmentPreset(hflip=True),
    "light": AugmentPreset(hflip=True, scale=(0.75, 1.25)),
    "strong": AugmentPreset(hflip=True, scale=(0.5, 2.0), brightness=0.25, contrast=0.25),
    "d4": AugmentPreset(hflip=True, vflip=True, rot90=True),
}


def get_preset(name: str) -> AugmentPreset:
    """The preset called ``name`` or a UserError naming ``--augment``."""
    if name not in PRESETS:
        raise UserError(f"--augment '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def standardize(x: torch.Tensor, mean: Stats | None, std: Stats | None) -> torch.Tensor:
    """0..1 float images [N,3,H,W] -> (x - mean) / std per channel (None: ImageNet's)."""
    m = torch.as_tensor(IMAGENET_MEAN if mean is None else mean, device=x.device)
    s = torch.as_tensor(IMAGENET_STD if std is None else std, device=x.device)
    return (x - m.view(1, 3, 1, 1)) / s.view(1, 3, 1, 1)


def _sample(
    images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor, out_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    n = images.shape[0]
    grid = F.affine_grid(theta, [n, 3, *out_hw], align_corners=False)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    shifted = (masks.float() + 1.0).unsqueeze(1)  # 0 marks "outside the image"
    m = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros",
                      align_corners=False).squeeze(1).long()
    m = torch.where(m == 0, torch.full_like(m, IGNORE_INDEX), m - 1)
    return img, m


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    out_hw: tuple[int, int],
    preset: AugmentPreset,
    generator: torch.Generator,
    crop_fraction: tuple[float, float] = (1.0, 1.0),
    mean: Stats | None = None,
    std: Stats | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized float images [N,3,h,w] and long masks [N,h,w] for one training step.

    ``images`` are uint8 [N,3,H,W] and ``masks`` [N,H,W] on any device; random numbers come
    from ``generator`` (CPU) so that a resumed run draws exactly what it would have drawn.
    ``crop_fraction`` is the crop size over the resized size, per axis; ``mean``/``std`` are
    the run's input statistics (None: ImageNet's).
    """
    n = images.shape[0]
    lo, hi = preset.scale
    u = torch.rand(n, 6 if preset.rot90 else 5, generator=generator)
    scale = torch.exp(torch.log(torch.tensor(lo)) + u[:, 0] * (torch.log(torch.tensor(hi / lo))))
    fx = crop_fraction[1] / scale
    fy = crop_fraction[0] / scale
    # translation keeps the window inside the image when it is smaller than the image
    tx = (u[:, 1] * 2 - 1) * (1 - fx).abs()
    ty = (u[:, 2] * 2 - 1) * (1 - fy).abs()
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if preset.hflip else torch.ones(n)
    vflip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if preset.vflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = fx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = fy * vflip
    theta[:, 1, 2] = ty
    x = images.float().div_(255.0)
    img, m = _sample(x, masks, theta.to(x.device), out_hw)
    if preset.brightness or preset.contrast:
        jitter = torch.rand(n, 2, generator=generator).to(img.device) * 2 - 1
        b = 1 + preset.brightness * jitter[:, 0].view(n, 1, 1, 1)
        c = 1 + preset.contrast * jitter[:, 1].view(n, 1, 1, 1)
        centre = img.mean(dim=(1, 2, 3), keepdim=True)
        img = ((img - centre) * c + centre) * b
        img = img.clamp_(0.0, 1.0)
    if preset.rot90 and out_hw[0] == out_hw[1]:
        img, m = _quarter_turns(img, m, (u[:, 5] * 4).long().clamp_(max=3))
    return standardize(img, mean, std), m


def _quarter_turns(img: torch.Tensor, m: torch.Tensor,
                   turns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each square sample turned by its own number of quarter turns (0-3)."""
    img, m = img.clone(), m.clone()
    for k in range(1, 4):
        rows = (turns == k).nonzero().flatten().to(img.device)
        if len(rows):
            img[rows] = torch.rot90(img[rows], k, dims=(-2, -1))
            m[rows] = torch.rot90(m[rows], k, dims=(-2, -1))
    return img, m
