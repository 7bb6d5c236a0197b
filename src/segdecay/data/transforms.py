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

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class AugmentPreset:
    """Ranges of the random transforms; ``none`` only resizes."""

    hflip: bool = False
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
}


def get_preset(name: str) -> AugmentPreset:
    """The preset called ``name`` or a UserError naming ``--augment``."""
    if name not in PRESETS:
        raise UserError(f"--augment '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float, ImageNet mean/std (what smp encoders expect)."""
    x = images_uint8.float().div_(255.0)
    return (x - MEAN.to(x.device)) / STD.to(x.device)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized float images [N,3,h,w] and long masks [N,h,w] for one training step.

    ``images`` are uint8 [N,3,H,W] and ``masks`` [N,H,W] on any device; random numbers come
    from ``generator`` (CPU) so that a resumed run draws exactly what it would have drawn.
    ``crop_fraction`` is the crop size over the resized size, per axis.
    """
    n = images.shape[0]
    lo, hi = preset.scale
    u = torch.rand(n, 5, generator=generator)
    scale = torch.exp(torch.log(torch.tensor(lo)) + u[:, 0] * (torch.log(torch.tensor(hi / lo))))
    fx = crop_fraction[1] / scale
    fy = crop_fraction[0] / scale
    # translation keeps the window inside the image when it is smaller than the image
    tx = (u[:, 1] * 2 - 1) * (1 - fx).abs()
    ty = (u[:, 2] * 2 - 1) * (1 - fy).abs()
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if preset.hflip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = fx * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = fy
    theta[:, 1, 2] = ty
    x = images.float().div_(255.0)
    img, m = _sample(x, masks, theta.to(x.device), out_hw)
    if preset.brightness or preset.contrast:
        jitter = torch.rand(n, 2, generator=generator).to(img.device) * 2 - 1
        b = 1 + preset.brightness * jitter[:, 0].view(n, 1, 1, 1)
        c = 1 + preset.contrast * jitter[:, 1].view(n, 1, 1, 1)
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = ((img - mean) * c + mean) * b
        img = img.clamp_(0.0, 1.0)
    img = (img - MEAN.to(img.device)) / STD.to(img.device)
    return img, m
