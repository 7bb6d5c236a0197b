"""Frequency analysis on tensors: radial spectra, low-pass filters, band noise, boundary IoU.

The question behind it: does weight decay make a network prefer low spatial frequencies?
Each function here measures one face of that on plain tensors, so it can be checked against
theory (tests/test_spectrum.py) before it is trusted on trained models.

Conventions, used everywhere in this module:

* Frequencies are in cycles per pixel, ``torch.fft.fftfreq`` style, so the axis Nyquist is
  0.5; the radius of frequency (fy, fx) is ``sqrt(fy^2 + fx^2)`` (up to ~0.707 in corners).
* FFTs use ``norm="ortho"``, so by Parseval the summed power equals the summed squares of
  the signal, and energy fractions are fractions of ``sum(x^2)``.
* "Below the cutoff" means radius ``<= cutoff``; a band ``(lo, hi)`` holds ``lo < r <= hi``.
* Images are filtered at their own size with the periodic FFT (no padding): the model sees an
  image of the same size and mean, only its spectrum changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BoundaryIoU",
    "KernelSpectrum",
    "band_noise",
    "boundary_dilation",
    "boundary_iou",
    "kernel_spectra",
    "low_frequency_energy",
    "low_frequency_fraction",
    "lowpass",
    "mask_boundary",
    "power_spectrum_2d",
    "radial_frequency",
    "radial_power_spectrum",
    "radial_profile",
    "split_energy",
    "summed_kernel_power",
]


def radial_frequency(
    h: int, w: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``[h, w]`` radius in cycles/pixel of each bin of an ``h x w`` FFT (unshifted layout)."""
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, device=device, dtype=torch.float64)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _fft_size(x: torch.Tensor, size: int | tuple[int, int] | None) -> tuple[int, int]:
    h, w = x.shape[-2:]
    if size is None:
        return int(h), int(w)
    ph, pw = (size, size) if isinstance(size, int) else size
    if ph < h or pw < w:
        raise ValueError(f"FFT size {ph}x{pw} is smaller than the signal {h}x{w}")
    return int(ph), int(pw)


def power_spectrum_2d(
    x: torch.Tensor, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """``|FFT(x)|^2`` over the last two dims, zero-padded to ``size`` (orthonormal FFT).

    Zero padding samples the spectrum of a small kernel (3x3, 7x7) on a finer grid without
    changing its energy, which is what makes a radial profile of a 3x3 kernel meaningful.
    """
    ph, pw = _fft_size(x, size)
    spec = torch.fft.fft2(x.double(), s=(ph, pw), norm="ortho")
    return spec.real**2 + spec.imag**2


def radial_power_spectrum(
    x: torch.Tensor, size: int | tuple[int, int] | None = None, bins: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies, mean power per annulus) of the signals in the last two dims of ``x``.

    Bin ``j`` is centred on ``j / M`` cycles/pixel with ``M = 2 (bins - 1)`` and holds the
    frequencies whose radius rounds to it; the bins cover 0..0.5 (the corners beyond the
    axis Nyquist are only partly covered annuli and are left out of the profile, not out of
    the energy fractions). The default ``bins`` is ``min(H, W) // 2 + 1`` of the FFT grid, so
    on an ``N x N`` grid bin ``k`` is exactly ``k / N``. Returns ``[bins]`` frequencies and
    power of shape ``[..., bins]``: the radially *averaged* power, which is flat for white
    noise.
    """
    return radial_profile(power_spectrum_2d(x, size), bins)


def radial_profile(
    power: torch.Tensor, bins: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`radial_power_spectrum` of an already computed 2-D power spectrum."""
    ph, pw = power.shape[-2:]
    nb = bins if bins is not None else min(ph, pw) // 2 + 1
    if nb < 2:
        raise ValueError(f"need at least 2 radial bins, got {nb}")
    m = 2 * (nb - 1)
    idx = torch.round(radial_frequency(ph, pw, power.device) * m).long().flatten()
    keep = idx < nb
    idx = idx[keep]
    flat = power.reshape(*power.shape[:-2], ph * pw)[..., keep]
    sums = torch.zeros(*flat.shape[:-1], nb, dtype=flat.dtype, device=flat.device)
    sums.index_add_(flat.dim() - 1, idx, flat)
    counts = torch.zeros(nb, dtype=flat.dtype, device=flat.device)
    counts.index_add_(0, idx, torch.ones_like(idx, dtype=flat.dtype))
    freqs = torch.arange(nb, dtype=torch.float64) / m
    return freqs, sums / counts.clamp_min(1)


def low_frequency_energy(
    x: torch.Tensor, cutoff: float, size: int | tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(energy at radius <= ``cutoff``, total energy) of each signal, shapes ``[...]``.

    Kept as two sums so that a layer's fraction can be pooled over its kernels (sum of lows
    over sum of totals): kernels that decay shrank to nothing then weigh nothing.
    """
    return split_energy(power_spectrum_2d(x, size), cutoff)


def split_energy(power: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`low_frequency_energy` of an already computed 2-D power spectrum."""
    low = radial_frequency(*power.shape[-2:], device=power.device) <= cutoff
    return (power * low).sum(dim=(-2, -1)), power.sum(dim=(-2, -1))


def low_frequency_fraction(
    x: torch.Tensor, cutoff: float, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Fraction of each signal's energy at radius <= ``cutoff`` (NaN for an all-zero signal)."""
    low, total = low_frequency_energy(x, cutoff, size)
    return torch.where(total > 0, low / total.clamp_min(1e-300), torch.nan)


# ----------------------------------------------------------------------------- kernels


@dataclass
class KernelSpectrum:
    """One conv layer's kernels seen in frequency: where along the depth, and how smooth."""

    depth: int  # 0 = first spatial conv the input meets
    name: str
    kernel_size: tuple[int, int]
    kernels: int  # 2-D kernels (out x in/groups)
    energy: float  # sum of squared weights
    low_fraction: float  # pooled over the layer's kernels
    freqs: list[float] = field(default_factory=list)
    spectrum: list[float] = field(default_factory=list)  # mean over kernels, sums to 1


def _conv_order(
    model: nn.Module, example_input: torch.Tensor | None
) -> list[tuple[str, nn.Module]]:
    """Spatial 2-D convs in the order a forward pass first calls them (else registration)."""
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
             and tuple(m.weight.shape[-2:]) != (1, 1)]
    if example_input is None:
        return convs
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, *_: seen.append(id(mod))) for _, m in convs]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    first: dict[int, int] = {}
    for i, key in enumerate(seen):
        first.setdefault(key, i)
    return sorted(convs, key=lambda nm: first.get(id(nm[1]), len(seen)))


def summed_kernel_power(weight: torch.Tensor, size: int) -> torch.Tensor:
    """``sum_i |FFT_size(w_i)|^2`` over the 2-D kernels ``w_i`` of a conv weight (ortho FFT).

    Computed from the kernels' summed autocorrelation, not one FFT per kernel: the power
    spectrum of a kernel zero-padded to ``size`` is the DFT of its circular autocorrelation,
    and the sum over kernels only needs the ``k^2 x k^2`` Gram matrix of the flattened
    kernels. A 512x512x3x3 layer costs one small matrix product instead of 262,144 FFTs.
    """
    kh, kw = weight.shape[-2:]
    if size < max(kh, kw):
        raise ValueError(f"FFT size {size} is smaller than the {kh}x{kw} kernels")
    flat = weight.detach().reshape(-1, kh * kw).double().cpu()
    gram = flat.T @ flat  # [k*k, k*k]: G[p, q] = sum_i w_i[p] w_i[q]
    py, px = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    py, px = py.flatten(), px.flatten()
    dy = (py[:, None] - py[None, :]) % size  # displacement p - q, wrapped: circular
    dx = (px[:, None] - px[None, :]) % size
    acf = torch.zeros(size * size, dtype=torch.float64)
    acf.index_add_(0, (dy * size + dx).flatten(), gram.flatten())
    return torch.fft.fft2(acf.view(size, size)).real / (size * size)


@torch.no_grad()
def kernel_spectra(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    cutoff: float = 0.25,
    size: int = 32,
) -> list[KernelSpectrum]:
    """Spectrum of every spatial conv kernel (1x1 convs have none), one entry per layer.

    Depth follows the forward order found by running ``example_input`` once (registration
    order without it). Each kernel is zero-padded to ``size x size`` before the FFT. The
    layer's low fraction pools its kernels (sum of low energy over sum of energy), and its
    profile is the mean radial power over its kernels normalised to sum 1, so the shape is
    comparable across runs whose weight norms differ (decay changes the scale).
    """
    out = []
    for depth, (name, conv) in enumerate(_conv_order(model, example_input)):
        w = conv.weight
        n = w.numel() // (w.shape[-2] * w.shape[-1])
        power = summed_kernel_power(w, size)
        low, total = split_energy(power, cutoff)
        freqs, prof = radial_profile(power)
        prof = prof / prof.sum() if float(prof.sum()) > 0 else prof
        energy = float(total)
        out.append(KernelSpectrum(
            depth=depth, name=name, kernel_size=(int(w.shape[-2]), int(w.shape[-1])),
            kernels=n, energy=energy,
            low_fraction=float(low) / energy if energy > 0 else math.nan,
            freqs=freqs.tolist(), spectrum=prof.tolist()))
    return out


# ----------------------------------------------------------------------------- filters and noise


def lowpass(x: torch.Tensor, cutoff: float, kind: str = "ideal") -> torch.Tensor:
    """Low-pass filter the images ``x [..., H, W]`` at ``cutoff`` cycles/pixel.

    ``ideal`` keeps every Fourier coefficient with radius <= cutoff unchanged and zeroes the
    rest (as in Yin et al. 2019); ``gaussian`` multiplies each coefficient by
    ``exp(-r^2 / (2 cutoff^2))`` (no ringing, but a soft edge). The output is real, same
    dtype and shape.
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be > 0, got {cutoff}")
    h, w = x.shape[-2:]
    r = radial_frequency(h, w, x.device)
    if kind == "ideal":
        gain = (r <= cutoff).double()
    elif kind == "gaussian":
        gain = torch.exp(-(r**2) / (2 * cutoff**2))
    else:
        raise ValueError(f"low-pass kind must be 'ideal' or 'gaussian', got {kind!r}")
    spec = torch.fft.fft2(x.double(), norm="ortho") * gain
    return torch.fft.ifft2(spec, norm="ortho").real.to(x.dtype)


def band_noise(
    shape: tuple[int, ...] | torch.Size,
    band: tuple[float, float],
    eps: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian noise whose spectrum lies in the radial band ``lo < r <= hi``, fixed energy.

    ``shape`` is ``[N, C, H, W]`` (or ``[C, H, W]``). White Gaussian noise is band-passed with
    an ideal radial mask, then each sample is scaled so that its L2 norm over ``C x H x W`` is
    exactly ``eps * sqrt(C * H * W)``: an RMS of ``eps`` per value, the same energy in every
    band, so a drop in mIoU says which band the model relies on, not which got more noise.
    Float32 on the CPU; draw with ``generator`` for noise that repeats across runs.
    """
    lo, hi = band
    if not 0 <= lo < hi:
        raise ValueError(f"band must satisfy 0 <= lo < hi, got {band}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    shape = tuple(shape)
    if len(shape) < 3:
        raise ValueError(f"shape must be [C, H, W] or [N, C, H, W], got {shape}")
    h, w = shape[-2:]
    r = radial_frequency(h, w)
    mask = (r > lo) & (r <= hi)
    if not bool(mask.any()):
        raise ValueError(f"band ({lo}, {hi}] holds no frequency of a {h}x{w} image")
    white = torch.randn(shape, generator=generator, dtype=torch.float64)
    noise = torch.fft.ifft2(torch.fft.fft2(white, norm="ortho") * mask, norm="ortho").real
    norm = noise.flatten(start_dim=-3).norm(dim=-1)
    target = eps * math.sqrt(shape[-3] * h * w)
    noise = noise * (target / norm.clamp_min(1e-300))[..., None, None, None]
    return noise.float()


# ----------------------------------------------------------------------------- boundary IoU


def boundary_dilation(h: int, w: int, ratio: float = 0.02) -> int:
    """Boundary width d in pixels: ``round(ratio * image diagonal)``, at least 1 (Cheng et al.)."""
    return max(1, int(round(ratio * math.hypot(h, w))))


def mask_boundary(mask: torch.Tensor, dilation: int) -> torch.Tensor:
    """Pixels of ``mask [..., H, W]`` within ``dilation`` px of its contour (bool, same shape).

    The mask minus its erosion by a ``(2d+1)^2`` square, the image border counting as
    background, exactly as ``mask_to_boundary`` of Cheng et al.'s Boundary IoU code (cv2
    erosion with a 3x3 kernel iterated d times on a zero-padded mask).
    """
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    m = mask.bool()
    lead = m.shape[:-2]
    x = m.reshape(-1, 1, *m.shape[-2:]).float()
    x = F.pad(x, (dilation,) * 4, value=0.0)
    eroded = -F.max_pool2d(-x, kernel_size=2 * dilation + 1, stride=1)
    return (m & ~eroded.reshape(*lead, *m.shape[-2:]).bool())


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, ratio: float = 0.02,
                 dilation: int | None = None) -> float:
    """Boundary IoU of two binary masks ``[H, W]`` (1.0 when both have no boundary)."""
    d = dilation if dilation is not None else boundary_dilation(*target.shape[-2:], ratio)
    pb, tb = mask_boundary(pred, d), mask_boundary(target, d)
    union = int((pb | tb).sum())
    return int((pb & tb).sum()) / union if union else 1.0


class BoundaryIoU:
    """Per-class Boundary IoU (Cheng et al. 2021) pooled over a whole split, like mIoU.

    For class c: the boundary of ``target == c`` and of ``pred == c`` (width d from
    ``ratio`` and each image's diagonal), intersection and union counted over the split;
    pixels whose target is the ignore index count in neither. ``compute`` gives the per-class
    values (NaN for a class with no boundary anywhere) and their mean.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, ratio: float = 0.02) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.ratio = ratio
        self.intersection = torch.zeros(num_classes, dtype=torch.int64)
        self.union = torch.zeros(num_classes, dtype=torch.int64)
        self.dilations: set[int] = set()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add predictions and targets, both integer ``[N, H, W]``."""
        if pred.shape != target.shape or target.dim() != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must "
                             "be equal [N, H, W]")
        d = boundary_dilation(*target.shape[-2:], self.ratio)
        self.dilations.add(d)
        classes = torch.arange(self.num_classes, device=target.device)[None, :, None, None]
        tb = mask_boundary(target.long()[:, None] == classes, d)
        pb = mask_boundary(pred.long()[:, None] == classes, d)
        valid = (target != self.ignore_index)[:, None]
        self.intersection += ((tb & pb & valid).sum(dim=(0, 2, 3))).cpu()
        self.union += (((tb | pb) & valid).sum(dim=(0, 2, 3))).cpu()

    def compute(self) -> dict:
        """Per-class ``biou``, their mean ``mbiou`` (classes with a boundary), ``dilation``s."""
        per = [int(i) / int(u) if int(u) else math.nan
               for i, u in zip(self.intersection, self.union, strict=True)]
        kept = [v for v in per if not math.isnan(v)]
        return {"biou": per, "mbiou": sum(kept) / len(kept) if kept else math.nan,
                "dilation": sorted(self.dilations)}
