"""Fail early when a run cannot fit: the decoded dataset in RAM, a batch on the device.

Datasets are decoded once into uint8 tensors (see ``segdecay.data.base``). A folder of
large images can need more memory than the machine has; finding out after minutes of
decoding, or from the kernel's OOM killer, loses the user's time. So loaders estimate the
cache from the image headers and compare it with ``MemAvailable`` before decoding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from segdecay.errors import UserError

MEMORY_LIMIT_ENV = "SEGDECAY_MEMORY_LIMIT"
"""Environment variable: a cap in bytes (suffixes K, M, G, T) on the memory segdecay plans to
use, e.g. to share a machine, or to test the refusal."""

# Decoded lists plus one stacked copy of the training split (``SegSplit.stacked``).
CACHE_COPIES = 2

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(text: str) -> int:
    """'123', '512M', '8G', '1.5T' -> bytes; errors name the environment variable."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS and value[-1:] else ""
    number = value[: len(value) - len(unit)].strip()
    try:
        result = float(number) * _UNITS[unit]
    except ValueError as exc:
        raise UserError(f"{MEMORY_LIMIT_ENV}={text!r}: expected bytes such as 8G or 512M") from exc
    if not result >= 0 or result == float("inf"):
        raise UserError(f"{MEMORY_LIMIT_ENV}={text!r}: expected a non-negative size")
    return int(result)


def available_memory(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """Bytes of RAM available to a new allocation: the smaller of MemAvailable and
    ``$SEGDECAY_MEMORY_LIMIT``; None when neither is known (not Linux, no cap)."""
    limits: list[int] = []
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        limits.append(parse_bytes(env))
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                parts = line.split()
                limits.append(int(parts[1]) * (1024 if parts[-1].lower() == "kb" else 1))
                break
    except (OSError, ValueError, IndexError):
        pass
    return min(limits) if limits else None


def gib(nbytes: float) -> str:
    """Human-readable size for messages."""
    if nbytes >= 1024**3 / 10:
        return f"{nbytes / 1024**3:.2f} GiB"
    return f"{nbytes / 1024**2:.1f} MiB"


def cache_bytes(sizes: Iterable[tuple[int, int]]) -> int:
    """Memory of the decoded cache for images of these (H, W): 3 image + 1 mask uint8 bytes
    per pixel, times ``CACHE_COPIES``."""
    return CACHE_COPIES * sum(4 * h * w for h, w in sizes)


DISK_CACHE_HINT = ("; or let segdecay decode into its disk cache, which needs no room in "
                   "memory: set $SEGDECAY_CACHE to a writable folder with room for the data")


def check_cache_fits(
    nbytes: int, what: str, n_images: int, available: int | None = None, hint: str = ""
) -> str | None:
    """The refusal message when ``nbytes`` of decoded data exceed the available memory,
    else None. ``available`` defaults to :func:`available_memory` (injectable for tests)."""
    available = available_memory() if available is None else available
    if available is None or nbytes <= available:
        return None
    return (
        f"{what}: {n_images} images need about {gib(nbytes)} of memory once decoded "
        f"(uint8 images and masks, plus a stacked copy of the training split) but only "
        f"{gib(available)} is available; free memory, use fewer or smaller images (resize "
        f"them on disk; --size only resizes batches), or raise ${MEMORY_LIMIT_ENV}{hint}"
    )


def image_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding; None when unreadable (the decoder
    reports that file properly later)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = img.size
        return h, w
    except Exception:  # any header failure is reported by the full decode
        return None
