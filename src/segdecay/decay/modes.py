"""Which decay mode a run trains with, resolved in one function, and why a decoupled step
may not reach lr·lambda = 1. Free of torch, so a study's options (and the command line's
parser, which is built from them) import it without loading torch."""

from __future__ import annotations

# Why lr·lambda >= 1 is refused, in every message that refuses it (train and tune).
SIGN_FLIP = ("decoupled decay (SGDW, AdamW) would multiply the weights by 1 - lr·lambda <= 0 "
             "each step")


def default_decay_mode(optimizer: str) -> str:
    """The mode each optimizer name implies when the user gives none."""
    return "decoupled" if optimizer == "adamw" else "coupled"


def resolved_decay_mode(optimizer: str, *given: str | None) -> str:
    """The decay mode ``optimizer`` trains with: the first mode given and set (a tune
    trial's searched mode before its config's), else the optimizer's default. Every unset
    mode is resolved here, so training, the default lambda and a tune cannot disagree."""
    for mode in given:
        if mode:
            return mode
    return default_decay_mode(optimizer)
