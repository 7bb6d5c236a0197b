"""report.html of one training run: curves, per-class IoU, decay by parameter group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from segdecay.fileio import atomic_write_text
from segdecay.report.html import figure_to_img, html_table, page


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
