"""Self-contained HTML reports: matplotlib figures inlined as PNG, tables as HTML.

One file a user can open or mail: no external assets, no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segdecay.fileio import atomic_write_text

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.low{background:#fde2e2}img{max-width:100%}code{background:#f5f5f5;padding:1px 4px}
"""


def figure_to_img(fig) -> str:
    """An <img> tag with the figure as an inline PNG; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def lambda_axis(ax: Any, lams: list[float]) -> None:
    """Log axis that still shows lambda = 0 (symlog, linear below the smallest lambda > 0)."""
    positive = [v for v in lams if v > 0]
    if positive:
        low = min(positive)
        ax.set_xscale("symlog", linthresh=low)
        # Autoscale margins would reach into negative lambdas; stop just left of the data.
        ax.set_xlim(left=-0.3 * low if min(lams) <= 0 else low / 1.5, right=max(positive) * 1.5)
    ax.set_xlabel("lambda (symlog axis: 0 is shown)")


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
               row_classes: Sequence[str] | None = None) -> str:
    """A plain HTML table; floats printed with 4 significant digits, NaN/None as '-'."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML document with one <h2> per (heading, html) section."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "</body></html>\n")


def _curves(history: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]

    def series(key):
        return [r.get(key) if r.get(key) is not None else float("nan") for r in history]

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(ep, series("train_loss"), label="train loss (data + penalty)")
    ax[0].plot(ep, series("data_loss"), label="train data loss")
    ax[0].plot(ep, series("val_loss"), "o-", label="val loss")
    ax[0].set_xlabel("epoch")
    ax[0].set_title("loss")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[1].plot(ep, series("train_miou"), label="train mIoU (augmented batches)")
    ax[1].plot(ep, series("val_miou"), "o-", label="val mIoU")
    ax[1].set_xlabel("epoch")
    ax[1].set_title("mIoU")
    ax[1].legend()
    ax[2].plot(ep, series("weight_norm"), label="||w|| all")
    ax[2].plot(ep, series("decayed_norm"), label="||w|| decayed tensors")
    ax[2].set_xlabel("epoch")
    ax[2].set_title("weight norm")
    ax[2].legend()
    return figure_to_img(fig)


def write_train_report(out: Path, history: list[dict], summary: dict, decay: list[dict],
                       class_names: Sequence[str]) -> Path:
    """report.html of one training run: curves, per-class IoU table, decay groups."""
    val = summary["val"]
    iou = val["iou"]
    finite = [v for v in iou if v is not None and math.isfinite(v)]
    cut = sorted(finite)[len(finite) // 4] if finite else 0.0
    rows, classes = [], []
    for i, name in enumerate(class_names):
        rows.append([name, iou[i], val["dice"][i], val["acc"][i], val["support"][i]])
        classes.append("low" if iou[i] is not None and math.isfinite(iou[i]) and iou[i] <= cut
                       else "")
    rows.append(["mean", val["miou"], val["mdice"], val["mean_acc"], sum(val["support"])])
    classes.append("")
    decay_rows = [[g["name"], g["tensors"], g["parameters"], g["weight_decay"], g["algorithm"],
                   g["lr"], g["tau_steps"], g["tau_epochs"], g["integrated_shrinkage"],
                   g["note"]] for g in decay]
    overview = html_table(
        ["run", "algorithm", "lambda", "epochs", "best val mIoU", "final val mIoU",
         "final train mIoU", "train seconds"],
        [[summary["run"], summary["algorithm"], summary["weight_decay"], summary["epochs"],
          summary["best_val_miou"], summary["final_val_miou"], summary["final_train_miou"],
          summary["train_seconds"]]],
    )
    sections = [
        ("Overview", overview),
        ("Training curves", _curves(history)),
        ("Per-class IoU (val, final weights; lowest quarter shaded)",
         html_table(["class", "IoU", "Dice", "accuracy", "pixels"], rows, classes)
         + f"<p>pixel accuracy {val['pixel_acc']:.4f}</p>"),
        ("Weight decay by parameter group",
         html_table(["group", "tensors", "parameters", "lambda", "algorithm", "lr",
                     "tau (steps)", "tau (epochs)", "shrinkage exp(-lambda sum lr)", "note"],
                    decay_rows)),
    ]
    path = out / "report.html"
    atomic_write_text(path, page(f"segdecay run {out.name}", sections))
    return path
