"""What a comparison compares and how, as the user states it: variants (named train options
over one base config), the presets by name, the seeds, and the options of ``segdecay
compare``, each declared once with its help and default (:mod:`segdecay.options`).

A variant is a name and a set of train options merged over the base config, so every
variant gets the same data, split, seeds, epochs and augmentation and differs only where it
says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segdecay.config import TrainConfig, from_dict, internal, option
from segdecay.errors import UserError
from segdecay.options import parse_grid

PRESETS = ("regularizers", "imbalance")


@dataclass
class Variant:
    """A named set of train options; ``options`` are TrainConfig keys."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def config(self, base: TrainConfig) -> TrainConfig:
        """The base config with this variant's options merged over it."""
        return from_dict(self.options, f"--variant '{self.name}'", base)


SEEDS = "3"  # --seeds when not given: a count, so seeds 0, 1, 2


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """'3' -> [0, 1, 2]; '0,4,7' -> [0, 4, 7]."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError as exc:
        raise UserError(f"{flag} '{text}': expected a count (3) or a list (0,1,2)") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"{flag} '{text}': need at least one distinct seed >= 0")
    return seeds


@dataclass
class CompareOptions:
    """What to compare and how: each field but ``variants`` and ``per_image`` is a flag of
    ``segdecay compare``, declared here with its help and default."""

    variants: list[Variant] = internal(why="from --variant, --variants and --preset (read in "
                                       "cli.compare.run: a preset needs the data)")
    seeds: list[int] = option(help="a count (3) or a list (0,1,2)", default_text=SEEDS,
                              factory=lambda: parse_seeds(SEEDS), parse=parse_seeds)
    baseline: str | None = option(None, "variant the others are compared with",
                                  default_text="first")
    retune_lr: list[float] | None = option(None, "re-tune the learning rate per variant over "
                                           "this grid (first seed)", metavar="LR1,LR2,...",
                                           parse=parse_grid)
    retune_epochs: int | None = option(None, "epochs of each lr re-tuning run",
                                       default_text="epochs/3")
    workers: int = option(1, "local worker processes")
    per_image: bool = internal(True, "Python API only, and read by nothing: per-image "
                               "scores are always taken")
