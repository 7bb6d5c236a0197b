"""What ``segdecay spectrum`` measures and how: its options, checked up front."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from segdecay.data.base import SPLITS
from segdecay.errors import UserError

# Radial bands of the noise test, in cycles/pixel: thirds of 0..Nyquist (0.5).
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 1 / 6), "mid": (1 / 6, 1 / 3), "high": (1 / 3, 0.5)}
DEFAULT_LOWPASS = (0.0625, 0.125, 0.25)
LOWPASS_KINDS = ("ideal", "gaussian")
CHECKPOINTS = ("best", "last")


@dataclass
class SpectrumOptions:
    """Everything that decides the numbers in spectrum.json (it is written there too)."""

    data: str | None = None  # dataset spec; None: each run's own
    split: str = "val"
    checkpoint: str = "last"  # last: the weights decay acted on longest (best.pt if absent)
    device: str = "auto"
    cutoff: float = 0.25  # cycles/pixel: "low frequency" for kernels and predictions
    lowpass: list[float] = field(default_factory=lambda: list(DEFAULT_LOWPASS))
    lowpass_kind: str = "ideal"
    noise_eps: float = 0.5  # RMS of the noise per input value, normalized-input units
    bands: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    boundary_ratio: float = 0.02
    kernel_fft: int = 32  # kernels are zero-padded to this size before the FFT
    seed: int = 0
    max_images: int | None = None

    def validate(self) -> None:
        """One UserError naming the option for the first bad value."""
        if not 0 < self.cutoff <= 0.5:
            raise UserError(f"--cutoff {self.cutoff}: must lie in (0, 0.5] cycles/pixel")
        if not self.lowpass:
            raise UserError("--lowpass: give at least one cutoff")
        for c in self.lowpass:
            if not 0 < c <= 0.5:
                raise UserError(f"--lowpass {c:g}: cutoffs must lie in (0, 0.5] cycles/pixel")
        if self.lowpass_kind not in LOWPASS_KINDS:
            raise UserError(f"--lowpass-kind {self.lowpass_kind}: use ideal or gaussian")
        if not (math.isfinite(self.noise_eps) and self.noise_eps > 0):
            raise UserError(f"--noise-eps {self.noise_eps}: must be a positive number")
        if not (math.isfinite(self.boundary_ratio) and 0 < self.boundary_ratio < 1):
            raise UserError(f"--boundary-ratio {self.boundary_ratio}: must lie in (0, 1)")
        if self.kernel_fft < 8:
            raise UserError(f"--kernel-fft {self.kernel_fft}: must be at least 8")
        if self.max_images is not None and self.max_images < 1:
            raise UserError(f"--max-images {self.max_images}: must be at least 1")
        if self.split not in SPLITS:
            raise UserError(f"--split {self.split}: use train, val or test")


def parse_floats(text: str, option: str) -> list[float]:
    """``"0.1,0.2"`` as floats; a UserError naming ``option`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UserError(f"{option} {text}: not a comma-separated list of numbers") from exc
    if not values:
        raise UserError(f"{option} {text!r}: give at least one number")
    return values
