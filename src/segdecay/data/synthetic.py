"""The embedded synthetic dataset: small scenes where regularization visibly matters.

Generated in-process from a seed (well under a second). Classes differ in shape AND texture
frequency, so a model must use both; one class is rare and thin, like poles:

====  ===========  ======================  ======================================
id    name         shape                   texture
====  ===========  ======================  ======================================
0     background   everything else         smooth low-frequency colour waves
1     disc         circles                 coarse stripes (period 8 px)
2     fine_box     axis-aligned rectangles fine checkerboard (period 2 px)
3     coarse_box   axis-aligned rectangles coarse checkerboard (period 8 px)
4     ellipse      rotated ellipses        fine stripes (period 3 px)
5     pole         1-2 px vertical lines   flat dark colour (~1% of pixels)
====  ===========  ======================  ======================================

``fine_box`` and ``coarse_box`` share their shape and colour distribution: only texture
frequency separates them. Object colours come from one distribution for every class, so
colour alone says nothing. Each image gets a random gain, a linear illumination ramp and
Gaussian noise. The default split is small for training (24 images) and larger for val/test
(96 each), so that without weight decay a U-Net overfits measurably.

Parameters (also as ``synthetic:key=value,...`` data specs): ``size`` (pixels per side),
``n_train``, ``n_val``, ``n_test``, ``noise`` (std of the additive noise on a 0..1 scale),
``objects`` (max objects per image), ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch

from segdecay.data.base import DatasetInfo, SegData, SegSplit

CLASS_NAMES = ["background", "disc", "fine_box", "coarse_box", "ellipse", "pole"]
PALETTE = [
    (40, 40, 40),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
]
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def _texture(kind: int, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0..1 texture field of the class's characteristic frequency, random phase."""
    if kind == 1:  # coarse stripes
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, 8)
        return (np.sin(2 * np.pi * u / 8.0) > 0).astype(np.float32)
    if kind == 2:  # fine checkerboard
        ox, oy = rng.integers(0, 2, size=2)
        return (((xx + ox) // 1 + (yy + oy) // 1) % 2).astype(np.float32)
    if kind == 3:  # coarse checkerboard
        ox, oy = rng.integers(0, 8, size=2)
        return ((((xx + ox) // 4) + ((yy + oy) // 4)) % 2).astype(np.float32)
    if kind == 4:  # fine stripes
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, 3)
        return (0.5 + 0.5 * np.sin(2 * np.pi * u / 3.0)).astype(np.float32)
    raise ValueError(kind)


def _shape_mask(
    kind: int, xx: np.ndarray, yy: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
    scale = size / 64.0
    if kind == 1:
        r = rng.uniform(6, 12) * scale
        return (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
    if kind in (2, 3):
        hw, hh = rng.uniform(5, 12, size=2) * scale
        return (np.abs(xx - cx) < hw) & (np.abs(yy - cy) < hh)
    a, b = rng.uniform(8, 14) * scale, rng.uniform(3.5, 6) * scale
    phi = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)
    v = -(xx - cx) * np.sin(phi) + (yy - cy) * np.cos(phi)
    return (u / a) ** 2 + (v / b) ** 2 < 1.0


def render_scene(
    rng: np.random.Generator, size: int = 64, noise: float = 0.08, objects: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its mask (H, W) uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(0.3, 0.7, size=3).astype(np.float32)
    f = rng.uniform(0.3, 1.5, size=2) * 2 * np.pi / size
    wave = 0.15 * np.sin(f[0] * xx + f[1] * yy + rng.uniform(0, 2 * np.pi))
    img = base[None, None, :] + wave[..., None] * rng.uniform(-1, 1, size=3)[None, None, :]
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(2, objects + 1))):
        kind = int(rng.integers(1, 5))
        region = _shape_mask(kind, xx, yy, size, rng)
        texture = _texture(kind, xx, yy, rng)
        colour = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
        amp = rng.uniform(0.25, 0.4)
        pixels = colour[None, None, :] * (1.0 - amp + 2.0 * amp * texture[..., None])
        img = np.where(region[..., None], pixels, img)
        mask[region] = kind
    for _ in range(int(rng.integers(1, 3))):  # thin poles, drawn last (in front)
        x0 = int(rng.integers(0, size - 2))
        width = int(rng.integers(1, 3))
        y0 = int(rng.integers(0, size // 2))
        y1 = int(min(size, y0 + rng.integers(size // 4, size // 2 + 1)))
        shade = rng.uniform(0.05, 0.3)
        img[y0:y1, x0 : x0 + width] = shade
        mask[y0:y1, x0 : x0 + width] = 5
    gain = rng.uniform(0.7, 1.3)
    ramp_dir = rng.uniform(0, 2 * np.pi)
    ramp = 0.15 * ((xx * np.cos(ramp_dir) + yy * np.sin(ramp_dir)) / size)
    img = img * gain + ramp[..., None] + rng.normal(0.0, noise, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mask


def make_split(
    n: int, seed: int, split: str, size: int = 64, noise: float = 0.08, objects: int = 6
) -> SegSplit:
    """``n`` scenes from the seed's stream for this split (splits never share scenes)."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    images, masks, names = [], [], []
    for i in range(n):
        img, mask = render_scene(rng, size=size, noise=noise, objects=objects)
        images.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        masks.append(torch.from_numpy(mask))
        names.append(f"synthetic_{split}_{i:04d}")
    return SegSplit(images=images, masks=masks, names=names, groups=list(names))


def make_synthetic(
    seed: int = 0,
    size: int = 64,
    n_train: int = 24,
    n_val: int = 96,
    n_test: int = 96,
    noise: float = 0.08,
    objects: int = 6,
) -> SegData:
    """The whole synthetic dataset for a seed: small train split, larger val and test."""
    kw = {"size": int(size), "noise": float(noise), "objects": int(objects)}
    info = DatasetInfo(
        name="synthetic",
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        palette=list(PALETTE),
    )
    return SegData(
        info=info,
        train=make_split(int(n_train), seed, "train", **kw),
        val=make_split(int(n_val), seed, "val", **kw),
        test=make_split(int(n_test), seed, "test", **kw),
    )
