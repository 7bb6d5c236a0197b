"""Segmentation metrics from one confusion matrix accumulated over a whole split.

mIoU is a ratio of sums, so it must be computed from counts pooled over every pixel of the
split: averaging per-batch IoUs weights small batches and batches missing a class wrongly.
Pixels labelled with the ignore index (255: CamVid void) count nowhere. Evaluation happens at
label resolution, so logits smaller than the labels are upsampled before the argmax.

Counting uses ``Tensor.index_add_`` into a fixed-size buffer on the inputs' device rather than
``torch.bincount``: CUDA's ``bincount`` reads the input's min and max back to the host to size
its output, which would stall the GPU once per batch. ``index_add_`` needs no host sync and is
deterministic for integer counts (and in ``torch.use_deterministic_algorithms`` mode).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from segdecay.data.base import IGNORE_INDEX

__all__ = ["SegmentationMetrics", "format_iou_table"]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> list[float]:
    """Elementwise num/den as floats, NaN where den is 0 (a class that never occurred)."""
    pairs = zip(num.tolist(), den.tolist(), strict=True)
    return [float(n) / float(d) if d > 0 else math.nan for n, d in pairs]


def _nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none (no warning, unlike numpy)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


class SegmentationMetrics:
    """Accumulates a ``C x C`` confusion matrix (rows = true class, cols = prediction).

    The matrix stays on the device of the inputs and ``update`` never syncs with the host, so it
    can run every validation step on a GPU; ``confusion`` can be read and assigned (e.g. after a
    DDP ``all_reduce``) and ``merge`` adds another accumulator's counts.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._device = torch.device(device) if device is not None else None
        self.reset()

    @property
    def device(self) -> torch.device:
        """Where the counts live: the ``device`` argument, else that of the first update."""
        return self._confusion.device

    def reset(self) -> None:
        """Forget all counts (start of a new split or epoch)."""
        dev = self._device if self._device is not None else torch.device("cpu")
        c = self.num_classes
        self._confusion = torch.zeros(c, c, dtype=torch.int64, device=dev)
        # Pixels whose target (or given prediction) lies outside [0, C) and is not the ignore
        # index. Kept on device so that update() needs no sync; compute() raises if non-zero.
        self._invalid = torch.zeros((), dtype=torch.int64, device=dev)
        self._seen_update = False

    @property
    def confusion(self) -> torch.Tensor:
        """The ``[C, C]`` int64 count matrix, rows = true class, columns = predicted class."""
        return self._confusion

    @confusion.setter
    def confusion(self, value: torch.Tensor) -> None:
        c = self.num_classes
        if tuple(value.shape) != (c, c):
            raise ValueError(f"confusion must have shape ({c}, {c}), got {tuple(value.shape)}")
        self._confusion = value.to(torch.int64)
        self._invalid = self._invalid.to(self._confusion.device)

    def _follow_device(self, device: torch.device) -> None:
        """Move an untouched accumulator (no fixed device) to where the first inputs live."""
        if self._device is None and not self._seen_update and self._confusion.device != device:
            self._confusion = self._confusion.to(device)
            self._invalid = self._invalid.to(device)

    @torch.no_grad()
    def update(self, logits_or_preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: logits ``[N,C,h,w]`` (any h, w) or int predictions ``[N,H,W]``.

        ``target`` is ``[N,H,W]`` int/uint8 with ``ignore_index`` for unlabelled pixels.
        """
        if target.dim() != 3:
            raise ValueError(f"target must be [N,H,W], got shape {tuple(target.shape)}")
        if target.is_floating_point():
            raise ValueError(f"target must be an integer tensor, got {target.dtype}")
        out = logits_or_preds
        if out.dim() == 4:
            if out.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {out.shape[1]} channels, expected num_classes={self.num_classes}"
                )
            if out.shape[0] != target.shape[0]:
                raise ValueError(f"batch sizes differ: {out.shape[0]} vs {target.shape[0]}")
            if out.shape[-2:] != target.shape[-2:]:
                out = F.interpolate(
                    out.float(), size=target.shape[-2:], mode="bilinear", align_corners=False
                )
            pred = out.argmax(dim=1)
        elif out.dim() == 3:
            if out.is_floating_point():
                raise ValueError("3-D predictions must be integer class indices, not floats")
            if out.shape != target.shape:
                raise ValueError(
                    f"predictions {tuple(out.shape)} and target {tuple(target.shape)} differ"
                )
            pred = out
        else:
            raise ValueError(
                f"expected logits [N,C,H,W] or predictions [N,H,W], got {tuple(out.shape)}"
            )

        self._follow_device(pred.device)
        self._seen_update = True
        c = self.num_classes
        t = target.to(pred.device).long()
        p = pred.long()
        ignored = t == self.ignore_index
        bad = ~ignored & ((t < 0) | (t >= c) | (p < 0) | (p >= c))
        if t.device.type == "cpu" and bool(bad.any()):
            # Free to check on the CPU; on an accelerator it is reported by compute() instead.
            raise ValueError(self._invalid_message(int(bad.sum())))
        # Bin c*c collects ignored pixels, bin c*c+1 invalid ones; both are dropped below.
        idx = torch.where(ignored, c * c, torch.where(bad, c * c + 1, t * c + p)).reshape(-1)
        counts = torch.zeros(c * c + 2, dtype=torch.int64, device=idx.device)
        ones = torch.ones(1, dtype=torch.int64, device=idx.device).expand_as(idx)
        counts.index_add_(0, idx, ones)
        counts = counts.to(self._confusion.device)
        self._confusion += counts[: c * c].view(c, c)
        self._invalid += counts[c * c + 1]

    def merge(self, other: SegmentationMetrics) -> None:
        """Add the counts of another accumulator (another worker or split shard)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self._confusion += other._confusion.to(self._confusion.device)
        self._invalid += other._invalid.to(self._confusion.device)

    def _invalid_message(self, n: int) -> str:
        return (
            f"{n} pixel(s) have a target or prediction outside [0, {self.num_classes}) that is "
            f"not the ignore index {self.ignore_index}"
        )

    def compute(self) -> dict:
        """All metrics as plain Python numbers (JSON-ready; NaN marks an undefined class)."""
        n_invalid = int(self._invalid)
        if n_invalid:
            raise ValueError(self._invalid_message(n_invalid))
        cm = self._confusion.detach().cpu().to(torch.int64)
        tp = cm.diag()
        support = cm.sum(dim=1)  # true pixels per class = TP + FN
        predicted = cm.sum(dim=0)  # predicted pixels per class = TP + FP
        fp = predicted - tp
        fn = support - tp
        total = int(cm.sum())
        iou = _ratio(tp, tp + fp + fn)
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        acc = _ratio(tp, support)
        return {
            "miou": _nanmean(iou),
            "iou": iou,
            "dice": dice,
            "mdice": _nanmean(dice),
            "pixel_acc": int(tp.sum()) / total if total else math.nan,
            "mean_acc": _nanmean(acc),
            "acc": acc,
            "confusion": cm.tolist(),
            "support": support.tolist(),
        }


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100.0 * value:.2f}"


def format_iou_table(result: dict, class_names: list[str]) -> str:
    """A plain-text per-class table of ``SegmentationMetrics.compute()`` output.

    Per-class rows make rare classes visible, which a single mIoU hides.
    """
    n = len(result["iou"])
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")
    header = ["class", "IoU %", "Dice %", "Acc %", "pixels"]
    rows = [
        [name, _pct(i), _pct(d), _pct(a), str(s)]
        for name, i, d, a, s in zip(
            class_names,
            result["iou"],
            result["dice"],
            result["acc"],
            result["support"],
            strict=True,
        )
    ]
    # Column means (mIoU, mean Dice, mean class accuracy) over the classes that occurred.
    footer = [
        [
            "mean",
            _pct(result["miou"]),
            _pct(result["mdice"]),
            _pct(result["mean_acc"]),
            str(sum(result["support"])),
        ]
    ]
    widths = [max(len(r[k]) for r in [header, *rows, *footer]) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule, *(line(r) for r in rows), rule, *(line(r) for r in footer)]
    out.append(
        f"mIoU {_pct(result['miou'])}  pixel acc {_pct(result['pixel_acc'])}  "
        f"mean acc {_pct(result['mean_acc'])}"
    )
    return "\n".join(out)
