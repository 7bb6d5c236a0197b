"""What a run carries from epoch to epoch, and how it survives a restart.

:class:`Progress` is the mutable part of a run (history, step, best score, clock, and the
position inside an interrupted epoch). Checkpoints are written atomically and read without
unpickling arbitrary objects: a plain dict of tensors, numbers, strings, lists and dicts, so
it loads with ``torch.load(weights_only=True)``; anything else in the file is refused. RNG
states go with them, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segdecay.errors import UserError
from segdecay.fileio import atomic_open


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save into a temporary sibling, then rename over ``path``; a failed write (a
    full disk, a file-size limit) leaves the previous file and says so in one line."""
    try:
        with atomic_open(path, "wb") as fh:
            torch.save(state, fh)
    except (RuntimeError, OSError) as exc:
        kept = "the previous one is kept" if path.exists() else "nothing was written"
        raise UserError(f"could not write checkpoint {path} ({' '.join(str(exc).split())}; a "
                        f"full disk or a file-size limit?); {kept}") from exc


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


@dataclass
class Progress:
    """How far a run got: the part of ``last.pt`` that changes every step."""

    epoch: int = 0  # finished epochs
    step: int = 0
    best: float = -1.0  # best val mIoU so far
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    position: dict[str, Any] | None = None  # where inside an epoch an interruption stopped
    # the best validation's weights, when the run answers with them (best.pt on disk)
    best_weights: dict[str, torch.Tensor] | None = None


POSITION_KEYS = ("perm", "next_batch", "epoch_sums", "epoch_count", "epoch_confusion")


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """RNG states for an exact resume: CPU, batch generator, and the training GPU's only
    (reading every visible GPU's would create a CUDA context on each, from every process)."""
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["generator"].cpu())
    if device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"].cpu(), device)
    elif device.type == "cuda" and "cuda" in state:  # checkpoints of segdecay <= 0.1.0
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def progress_of(state: dict[str, Any]) -> Progress:
    """The Progress a ``last.pt`` holds, with its mid-epoch position if it has one."""
    position = None
    if state.get("next_batch") is not None:
        position = {k: state[k] for k in POSITION_KEYS}
    return Progress(epoch=state["epoch"], step=state["step"], best=state["best_miou"],
                    train_seconds=state["train_seconds"], history=state["history"],
                    position=position)
