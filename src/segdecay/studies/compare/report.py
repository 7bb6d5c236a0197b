"""compare.csv and report.html of a comparison: tables, paired differences, per-class bars
and learning curves."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig
from segdecay.fileio import atomic_write_text
from segdecay.report.html import figure_to_img, html_table, page

CSV_COLUMNS = ["variant", "seed", "status", "lr", "val_miou", "eval_miou", "train_miou",
               "gap", "weight_norm", "epochs", "train_seconds"]
LR_NOTE = (
    "Under normalization layers (BatchNorm) most weights are scale-invariant: L2 decay then "
    "mostly shrinks their norm and so raises the effective learning rate lr/||w||^2 (van "
    "Laarhoven 2017; Zhang et al. 2019, 'Three mechanisms of weight decay regularization'). "
    "A variant that differs in decay also differs in effective step size; --retune-lr gives "
    "each variant its own learning rate from a short grid so that the comparison is not "
    "between a tuned and a mistuned optimizer.")


def _plots(collected: dict[str, Any], summary: dict[str, Any], names: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        curves = [r["history"] for r in collected["runs"]
                  if r["variant"] == name and r["history"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        epochs = [curves[0][i]["epoch"] for i in range(length)]
        mean = [sum(c[i]["val_miou"] for c in curves) / len(curves) for i in range(length)]
        ax.plot(epochs, mean, label=f"{name} (n={len(curves)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mIoU (mean over seeds)")
    ax.set_title("learning curves")
    ax.legend(fontsize=8)
    figs.append(figure_to_img(fig))

    classes = collected["class_names"]
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(classes)), 4.5))
    width = 0.8 / max(1, len(names))
    for k, entry in enumerate(summary["variants"]):
        xs = [c + k * width for c in range(len(classes))]
        ax.bar(xs, [v if math.isfinite(v) else 0 for v in entry["class_iou"]], width,
               label=entry["variant"])
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(classes))])
    ax.set_xticklabels([f"{n}*" if i in collected["rare"] else n
                        for i, n in enumerate(classes)], rotation=30, ha="right")
    ax.set_ylabel(f"IoU on {collected['split']} (mean over seeds)")
    ax.set_title("per-class IoU (* rare: under half the uniform pixel share in training)")
    ax.legend(fontsize=8)
    figs.append(figure_to_img(fig))
    return figs


def fmt(mean: float, sd: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if math.isfinite(sd) else f"{mean:.4f}"


def units_text(summary: dict[str, Any]) -> str:
    """What the per-image test pairs over, from compare.json's own record of its unit."""
    tests = [p["images"] for p in summary["paired"] if p.get("images")]
    if not tests:
        return "No per-image test: no variant shares a finished seed with the baseline."
    s = tests[0]
    unit, n = s.get("unit", "image"), s.get("n_units", s["n"])
    how = (f"Over groups: per-image mIoU averaged over seeds, then within each of the {n} "
           "groups of the split (CamVid: video sequences), variant minus baseline per group."
           if unit == "group" else
           f"Over images: per-image mIoU averaged over seeds, variant minus baseline on each "
           f"of the {n} images (the split has no groups of images).")
    left = s.get("n_left_out", 0)
    dropped = (f" {left} image(s) with every pixel ignored have no score and are left out "
               "for every variant." if left else "")
    return f"{how} The test's {s.get('unit_note', '')}{dropped}"


def write_report(out: Path, base: TrainConfig, options, collected: dict[str, Any],
                 summary: dict[str, Any]) -> None:
    """compare.csv and report.html."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in collected["runs"]:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in CSV_COLUMNS})
    atomic_write_text(out / "compare.csv", buf.getvalue())

    split = collected["split"]
    names = [v.name for v in options.variants]
    table = html_table(
        ["variant", "seeds", f"{split} mIoU", "val mIoU", "train mIoU", "train-val gap",
         "weight norm", "failed"],
        [[v["variant"], len(v["seeds"]), fmt(v["eval_miou"], v["eval_miou_sd"]),
          fmt(v["val_miou"], v["val_miou_sd"]), fmt(v["train_miou"], v["train_miou_sd"]),
          fmt(v["gap"], v["gap_sd"]), fmt(v["weight_norm"], v["weight_norm_sd"]),
          ", ".join(map(str, v["failed"])) or ""] for v in summary["variants"]])
    rows = []
    for p in summary["paired"]:
        for key in ("eval_miou", "images"):
            s = p.get(key)
            if not s:
                continue
            unit = "seeds" if key == "eval_miou" else s.get("unit", "image") + "s"
            rows.append([p["variant"], unit, s["n"], s["mean_diff"], s["ci_low"], s["ci_high"],
                         s["p_t"], s.get("p_t_holm"), s["p_wilcoxon"]])
    paired = html_table(["variant", "pairs over", "n", f"mean diff ({split} mIoU)",
                         "95% CI low", "95% CI high", "paired t p", "Holm p", "Wilcoxon p"],
                        rows)
    classes = collected["class_names"]
    class_rows = [[v["variant"]] + v["class_iou"] for v in summary["variants"]]
    class_table = html_table(["variant"] + [f"{c}*" if i in collected["rare"] else c
                                            for i, c in enumerate(classes)], class_rows)
    curves, bars = _plots(collected, summary, names)
    variants = html_table(["variant", "options"],
                          [[v.name, json.dumps(v.options)] for v in options.variants])
    sections = [
        ("Variants", variants + f"<p>Base config: optimizer {base.optimizer}, lr "
         f"{_or_default(base.lr)}, lambda {_or_default(base.weight_decay)}, {base.epochs} "
         f"epochs, batch {_or_default(base.batch_size)}, augment "
         f"{_or_default(base.augment)}; seeds {', '.join(map(str, options.seeds))}. Every variant "
         "trains on the same data and split with the same seeds.</p>"),
        ("Results (mean ± sd over seeds)", table
         + f"<p>{split} mIoU: final weights on the {split} split ({collected['images']} "
         "images). Gap: final train mIoU (clean pass) minus final val mIoU.</p>"),
        (f"Paired differences against '{summary['baseline']}'", paired
         + "<p>Over seeds: each seed's run of the variant minus the baseline's run with the "
         f"same seed. {units_text(summary)} Holm corrects the t-test p-values across the "
         "variants (a test that could not be run still counts in the family). With n pairs "
         "the Wilcoxon test cannot go below p = 2/2^n.</p>"),
        ("Per-class IoU (* rare classes)", class_table + bars),
        ("Learning curves", curves),
        ("Effective learning rate", f"<p>{LR_NOTE}</p>"
         + (f"<p>Learning rates were re-tuned per variant over {options.retune_lr}.</p>"
            if options.retune_lr else "<p>All variants used the base learning rate.</p>")),
    ]
    atomic_write_text(out / "report.html", page(f"segdecay compare {out.name}", sections))


def _or_default(value: float | None) -> str:
    """A base value, or 'its default' when each run resolves it (see its config.yaml)."""
    return "default (per optimizer)" if value is None else f"{value:g}"
