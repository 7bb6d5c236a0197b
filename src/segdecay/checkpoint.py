"""Checkpoints written atomically and read without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``; anything else in the file is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from segdecay.errors import UserError
from segdecay.fileio import atomic_open


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save into a temporary sibling, then rename over ``path``."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a missing, truncated or pickled-object file is refused."""
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"checkpoint {path}: refused, it holds objects other than tensors and plain "
            f"data (segdecay loads checkpoints with weights_only=True): {exc}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"checkpoint {path}: unreadable or truncated ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path}: not a segdecay checkpoint (no 'model' entry)")
    return state
