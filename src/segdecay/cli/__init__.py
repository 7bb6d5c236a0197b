"""Command line: ``segdecay train | check-data | download | evaluate | predict | tune |
compare | spectrum | demo``, one module per command, each with ``add_parser`` and ``run``.

Options of ``train`` (and of tune and compare, which train) are generated from
``TrainConfig``, and each study's own from its options dataclass (:mod:`segdecay.options`),
so the CLI, the YAML files and the Python API never drift apart. Precedence: defaults <
``--config FILE`` < explicit options. User errors print one line and exit with code 2; a
diverged run exits with 3; SIGINT and SIGTERM stop training after a checkpoint and exit
with 130 and 143.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys

from segdecay.cli import (
    check_data,
    compare,
    demo,
    download,
    evaluate,
    predict,
    spectrum,
    train,
    tune,
)
from segdecay.cli.train import EXIT_DIVERGED
from segdecay.errors import UserError
from segdecay.version import __version__

COMMANDS = (train, check_data, download, evaluate, predict, tune, compare, spectrum, demo)

__all__ = ["EXIT_DIVERGED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full parser (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="segdecay",
        description="Train semantic-segmentation networks with weight decay done right.",
    )
    parser.add_argument("--version", action="version", version=f"segdecay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def negative_values_attached(argv: list[str]) -> list[str]:
    """``--flag -1e-3`` as ``--flag=-1e-3``: argparse takes a dash-led value that is not a
    plain decimal for an option of its own, so a negative number in scientific notation
    would end in a usage dump instead of the option's own check."""
    out: list[str] = []
    for token in argv:
        if out and _NUMBER.match(token) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def os_error_text(exc: OSError) -> str:
    """One line for an OSError on a user's path: what failed, on which file, and why."""
    where = f" {exc.filename}" if exc.filename else ""
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        why += " (free space on the disk, or give another --out)"
    return f"cannot use{where}: {why}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segdecay`` command."""
    parser = build_parser()
    args = parser.parse_args(negative_values_attached(sys.argv[1:] if argv is None else argv))
    # Imported once a command runs: the parser (--help, an option error) needs no torch.
    from segdecay.training.interrupt import TrainingInterrupted

    try:
        return args.func(args)
    except UserError as exc:
        print(f"segdecay {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's own paths: unwritable, missing, a full disk
        print(f"segdecay {args.command}: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"segdecay {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"segdecay {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
