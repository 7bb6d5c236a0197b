"""``segdecay check-data``: every problem of a dataset at once, before a run trips on one.

``train`` stops at the first bad file, which makes fixing a messy folder a slow loop of
one error per attempt. This runs the very same loader checks (``load_dataset`` with a
``problems`` list) so that the list here is exactly what ``train`` would refuse, and adds
what a user wants to see before training: how many images each split holds, their sizes,
and how often each class occurs (a class absent from training cannot be learned).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from segdecay.data import IGNORE_INDEX, SegData, SegSplit, load_dataset
from segdecay.errors import UserError


@dataclass
class DataCheck:
    """The outcome of a check: problems (each names its file), notes, and what loaded."""

    spec: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: SegData | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing would stop ``train``."""
        return not self.problems


def split_stats(split: SegSplit, num_classes: int) -> dict[str, Any]:
    """Image count, sizes and per-class pixel counts of one split (ignore index separate)."""
    counts = torch.zeros(256, dtype=torch.int64)
    for mask in split.masks:
        counts += torch.bincount(mask.reshape(-1).long(), minlength=256)
    sizes = Counter(f"{img.shape[-2]}x{img.shape[-1]}" for img in split.images)
    return {
        "images": len(split),
        "sizes": dict(sizes.most_common()),
        "pixels": counts[:num_classes].tolist(),
        "ignored": int(counts[IGNORE_INDEX]),
        "total": int(counts.sum()),
    }


def check_data(
    spec: str,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    mask_encoding: str = "auto",
) -> DataCheck:
    """Load ``spec`` collecting every problem instead of stopping at the first one."""
    result = DataCheck(spec)
    try:
        data = load_dataset(spec, num_classes=num_classes, class_names=class_names,
                            val_fraction=val_fraction, seed=seed, problems=result.problems,
                            mask_encoding=mask_encoding)
    except UserError as exc:  # the dataset cannot be read at all (no folder, bad spec)
        result.problems.append(str(exc))
        return result
    result.data = data
    n = data.info.num_classes
    named = {"train": data.train, "val": data.val}
    if data.test is not None:
        named["test"] = data.test
    for name, split in named.items():
        result.splits[name] = split_stats(split, n)
    train_pixels = result.splits["train"]["pixels"]
    if result.splits["train"]["images"]:
        absent = [data.info.class_names[c] for c in range(n) if train_pixels[c] == 0]
        if absent:
            result.notes.append(f"class(es) with no pixels in the train split: "
                                f"{', '.join(absent)} (the model cannot learn them)")
    if not result.splits["val"]["images"] and result.splits["train"]["images"]:
        result.notes.append("the val split is empty")
    return result


def _sizes_text(sizes: dict[str, int]) -> str:
    if len(sizes) <= 1:
        return next(iter(sizes), "-")
    shown = ", ".join(f"{s} ({k})" for s, k in list(sizes.items())[:3])
    return f"{len(sizes)} sizes: {shown}" + (", ..." if len(sizes) > 3 else "")


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def format_check(result: DataCheck) -> str:
    """The summary table, class frequencies, notes and every problem, as printed."""
    lines = []
    if result.data is not None:
        info = result.data.info
        lines.append(f"dataset {result.spec}: {info.name}, {info.num_classes} classes")
        lines.append("")
        lines.append(f"{'split':<6} {'images':>6}  {'ignored':>8}  sizes")
        for name, st in result.splits.items():
            lines.append(f"{name:<6} {st['images']:>6}  {_pct(st['ignored'], st['total']):>8}  "
                         f"{_sizes_text(st['sizes'])}")
        lines.append("")
        width = max([5] + [len(c) for c in info.class_names])
        header = f"{'class':<{width}}" + "".join(f"{name:>10}" for name in result.splits)
        lines.append(header + "   (share of labelled pixels)")
        for c, cname in enumerate(info.class_names):
            cells = "".join(
                f"{_pct(st['pixels'][c], st['total'] - st['ignored']):>10}"
                for st in result.splits.values()
            )
            lines.append(f"{cname:<{width}}{cells}")
    for note in result.notes:
        lines.append(f"note: {note}")
    if result.problems:
        lines.append("")
        lines.append(f"{len(result.problems)} problem(s):")
        lines.extend(f"  - {p}" for p in result.problems)
    else:
        lines.append("")
        lines.append("no problems found")
    return "\n".join(lines)
