"""``segdecay spectrum``: test whether weight decay favours low frequencies."""

from __future__ import annotations

import argparse

from segdecay.options import add_options, options_from_args
from segdecay.studies.spectrum.options import SpectrumOptions


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
    add_options(p, SpectrumOptions)
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Analyse the runs and write spectrum.json and report.html."""
    from segdecay.studies.spectrum import run_spectrum

    options = options_from_args(SpectrumOptions, args)
    run_spectrum(args.runs, args.out, options, quiet=args.quiet)
    return 0
