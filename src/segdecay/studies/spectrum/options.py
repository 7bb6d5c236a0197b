"""What ``segdecay spectrum`` measures and how: its options, checked up front."""

from __future__ import annotations

import math
from dataclasses import dataclass

from segdecay.config import CHECKPOINTS, SPLITS, internal, option
from segdecay.errors import UserError

# Radial bands of the noise test, in cycles/pixel: thirds of 0..Nyquist (0.5).
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 1 / 6), "mid": (1 / 6, 1 / 3), "high": (1 / 3, 0.5)}
DEFAULT_LOWPASS = (0.0625, 0.125, 0.25)
LOWPASS_KINDS = ("ideal", "gaussian")


def parse_floats(text: str, flag: str) -> list[float]:
    """``"0.1,0.2"`` as floats; a UserError naming ``flag`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UserError(f"{flag} {text}: not a comma-separated list of numbers") from exc
    if not values:
        raise UserError(f"{flag} {text!r}: give at least one number")
    return values


@dataclass
class SpectrumOptions:
    """Everything that decides the numbers in spectrum.json (it is written there too). Each
    field but ``bands`` is a flag of ``segdecay spectrum``, declared here with its help and
    default (the field order is spectrum.json's)."""

    data: str | None = option(None, "dataset spec", default_text="the runs' own")
    split: str = option("val", "split to score", choices=SPLITS)
    checkpoint: str = option(  # last: the weights decay acted on longest
        "last", "which weights (the other if missing)", choices=CHECKPOINTS)
    device: str = option("auto", "auto | cpu | cuda")
    cutoff: float = option(  # cycles/pixel: "low frequency" for kernels and predictions
        0.25, "low/high split of kernel and prediction spectra", metavar="CYCLES_PER_PX")
    lowpass: list[float] = option(help="low-pass cutoffs in cycles/px", metavar="C1,C2,...",
                                  factory=lambda: list(DEFAULT_LOWPASS), parse=parse_floats)
    lowpass_kind: str = option("ideal", "ideal (brick-wall) or gaussian low-pass",
                               choices=LOWPASS_KINDS)
    noise_eps: float = option(0.5, "RMS of the band noise per input value, in normalized-input "
                              "units, the same in every band", metavar="RMS")
    bands: dict[str, tuple[float, float]] = internal(
        why="Python API only: the noise test's radial bands", factory=lambda: dict(DEFAULT_BANDS))
    boundary_ratio: float = option(0.02, "boundary width as a fraction of the image diagonal",
                                   metavar="R")
    kernel_fft: int = option(32, "kernels are zero-padded to NxN before the FFT", metavar="N")
    seed: int = option(0, "seed of the noise")
    max_images: int | None = option(None, "score only the first N images of the split",
                                    metavar="N")

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
