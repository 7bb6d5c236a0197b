"""In-memory dataset contract shared by every data source.

Datasets here are small enough to decode once: images stay ``uint8`` tensors ``[3, H, W]``
and masks ``uint8`` tensors ``[H, W]`` holding class indices, with ``IGNORE_INDEX`` (255) for
pixels that carry no label (CamVid void, outside a field of view). Batches are drawn by index
and augmented as whole tensors (see ``segdecay.data.transforms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

IGNORE_INDEX = 255

_R = TypeVar("_R")


@dataclass
class DatasetInfo:
    """What the classes are called and how to draw them."""

    name: str
    num_classes: int
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = IGNORE_INDEX
    mask_encoding: str = ""  # folder data: how mask values were read (binary, index, palette)


@dataclass
class SegSplit:
    """One split held in memory; images may differ in size between samples."""

    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    names: list[str]
    groups: list[str] = field(default_factory=list)
    _stack: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def uniform_size(self) -> tuple[int, int] | None:
        """The common (H, W) of all samples, or None when sizes differ."""
        sizes = {tuple(img.shape[-2:]) for img in self.images}
        return next(iter(sizes)) if len(sizes) == 1 else None

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All images ``[N,3,H,W]`` and masks ``[N,H,W]`` as two tensors, if sizes agree."""
        if self._stack is None and len(self) and self.uniform_size() is not None:
            self._stack = (torch.stack(self.images), torch.stack(self.masks))
        return self._stack

    def subset(self, indices: list[int]) -> SegSplit:
        """A new split with the chosen samples (used for hold-out and k-fold splits)."""
        return SegSplit(
            images=[self.images[i] for i in indices],
            masks=[self.masks[i] for i in indices],
            names=[self.names[i] for i in indices],
            groups=[self.groups[i] for i in indices] if self.groups else [],
        )


@dataclass
class SegData:
    """A loaded dataset: train split, val split, optional test split, and class info."""

    info: DatasetInfo
    train: SegSplit
    val: SegSplit
    test: SegSplit | None = None

    def split(self, name: str) -> SegSplit:
        """The split called ``name`` ('train', 'val' or 'test'), or a UserError."""
        from segdecay.errors import UserError

        chosen = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if chosen is None:
            raise UserError(f"dataset '{self.info.name}' has no '{name}' split")
        return chosen


def report(problems: list[str] | None, message: str) -> None:
    """Raise ``message`` as a UserError, or append it to ``problems`` when collecting.

    Loaders run each check once: ``train`` passes no list and stops at the first problem,
    ``check-data`` passes a list and gets every problem from the very same checks.
    """
    from segdecay.errors import UserError

    if problems is None:
        raise UserError(message)
    problems.append(message)


def attempt(problems: list[str] | None, fn: Callable[..., _R], *args: Any) -> _R | None:
    """``fn(*args)``; when collecting, a UserError it raises is recorded and None returned."""
    from segdecay.errors import UserError

    try:
        return fn(*args)
    except UserError as exc:
        if problems is None:
            raise
        problems.append(str(exc))
        return None
