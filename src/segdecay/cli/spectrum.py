"""``segdecay spectrum``: test whether weight decay favours low frequencies."""

from __future__ import annotations

import argparse

from segdecay.data.base import SPLITS
from segdecay.studies.spectrum.options import CHECKPOINTS, LOWPASS_KINDS


def add_parser(sub) -> None:
    """The ``spectrum`` subcommand."""
    p = sub.add_parser("spectrum", help="test whether weight decay favours low frequencies",
                       description="Frequency analysis of trained runs against lambda: kernel "
                       "spectra, prediction spectra, mIoU under low-pass filtering and band-"
                       "limited noise, boundary IoU. Writes OUT/spectrum.json and "
                       "OUT/report.html. See docs/spectrum.md.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders, or folders holding runs (a tune or compare folder)")
    p.add_argument("--out", required=True, help="folder for spectrum.json and report.html")
    p.add_argument("--data", help="dataset spec (default: the runs' own)")
    p.add_argument("--split", default="val", choices=list(SPLITS),
                   help="split to score [default: val]")
    p.add_argument("--checkpoint", default="last", choices=list(CHECKPOINTS),
                   help="which weights (the other if missing) [default: last]")
    p.add_argument("--cutoff", type=float, default=0.25, metavar="CYCLES_PER_PX",
                   help="low/high split of kernel and prediction spectra [default: 0.25]")
    p.add_argument("--lowpass", default="0.0625,0.125,0.25", metavar="C1,C2,...",
                   help="low-pass cutoffs in cycles/px [default: 0.0625,0.125,0.25]")
    p.add_argument("--lowpass-kind", default="ideal", choices=list(LOWPASS_KINDS),
                   help="ideal (brick-wall) or gaussian low-pass [default: ideal]")
    p.add_argument("--noise-eps", type=float, default=0.5, metavar="RMS",
                   help="RMS of the band noise per input value, in normalized-input units, "
                   "the same in every band [default: 0.5]")
    p.add_argument("--boundary-ratio", type=float, default=0.02, metavar="R",
                   help="boundary width as a fraction of the image diagonal [default: 0.02]")
    p.add_argument("--kernel-fft", type=int, default=32, metavar="N",
                   help="kernels are zero-padded to NxN before the FFT [default: 32]")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="score only the first N images of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise [default: 0]")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse the runs and write spectrum.json and report.html."""
    from segdecay.studies.spectrum import SpectrumOptions, run_spectrum
    from segdecay.studies.spectrum.options import parse_floats

    options = SpectrumOptions(
        data=args.data, split=args.split, checkpoint=args.checkpoint, device=args.device,
        cutoff=args.cutoff, lowpass=parse_floats(args.lowpass, "--lowpass"),
        lowpass_kind=args.lowpass_kind, noise_eps=args.noise_eps,
        boundary_ratio=args.boundary_ratio, kernel_fft=args.kernel_fft, seed=args.seed,
        max_images=args.max_images)
    run_spectrum(args.runs, args.out, options, quiet=args.quiet)
    return 0
