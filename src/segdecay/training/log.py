"""What a run tells people (progress lines, tqdm bars) and writes per epoch (metrics.csv)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from segdecay.fileio import atomic_write_text

METRIC_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "data_loss", "reg_term", "train_miou",
    "val_miou", "val_loss", "weight_norm", "decayed_norm", "seconds",
]


class Log:
    """Progress for people: tqdm bars on a terminal, plain lines otherwise, nothing if quiet."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, text: str) -> None:
        """One plain log line."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def bar(self, total: int, desc: str):
        """A tqdm bar on a terminal, else a silent stand-in with the same methods."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, file=self.stream,
                    disable=self.quiet or not self.tty, dynamic_ncols=True)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """metrics.csv: one row per finished epoch, rewritten atomically after each."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The one line printed after each epoch."""
    val_text = f"{row['val_miou']:.4f}" if row["val_miou"] is not None else "-"
    return (f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.4f} (data "
            f"{row['data_loss']:.4f}, reg {row['reg_term']:.4g}) train mIoU "
            f"{row['train_miou']:.4f} val mIoU {val_text} lr {row['lr']:.3g} |w| "
            f"{row['weight_norm']:.2f} {row['seconds']:.0f}s")
