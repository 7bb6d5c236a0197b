"""Turn the runs of a comparison into compare.json, compare.csv and report.html.

Every run is scored on the evaluation split (test, or val where there is none) with its
final weights, per image as well, and the scores are cached in the run folder. The tables
give mean and sd over seeds; the paired tables give each variant minus the baseline, over
seeds and over images, with Holm-corrected p-values across the variants.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig
from segdecay.fileio import atomic_write_text, write_json
from segdecay.paired import holm, paired_difference
from segdecay.report import figure_to_img, html_table, page

CSV_COLUMNS = ["variant", "seed", "status", "lr", "val_miou", "eval_miou", "train_miou",
               "gap", "weight_norm", "epochs", "train_seconds"]
LR_NOTE = (
    "Under normalization layers (BatchNorm) most weights are scale-invariant: L2 decay then "
    "mostly shrinks their norm and so raises the effective learning rate lr/||w||^2 (van "
    "Laarhoven 2017; Zhang et al. 2019, 'Three mechanisms of weight decay regularization'). "
    "A variant that differs in decay also differs in effective step size; --retune-lr gives "
    "each variant its own learning rate from a short grid so that the comparison is not "
    "between a tuned and a mistuned optimizer.")


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample sd of the finite values (NaN where too few)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _history(folder: Path) -> list[dict[str, float]]:
    path = folder / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    for r in csv.DictReader(path.read_text(encoding="utf-8").splitlines()):
        rows.append({"epoch": int(r["epoch"]),
                     "val_miou": float(r["val_miou"]) if r.get("val_miou") else math.nan})
    return rows


def _run_lr(folder: Path) -> float | None:
    from segdecay.config import load_config

    try:
        return load_config(folder / "config.yaml").lr
    except Exception:  # noqa: BLE001 - a missing or odd config only blanks a column
        return None


def _scores(folder: Path, split, split_name: str, num_classes: int) -> dict[str, Any]:
    """Per-image and split scores of one run (cached next to its summary)."""
    from segdecay.per_image import score_images

    cache = folder / f"compare_{split_name}.json"
    stamp = (folder / "summary.json").stat().st_mtime_ns
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("summary_mtime_ns") == stamp:
                return cached
        except ValueError:
            pass
    result = score_images(folder, split, num_classes)
    result.pop("confusion", None)
    result["summary_mtime_ns"] = stamp
    write_json(cache, result)
    return result


def rare_classes(split, num_classes: int) -> list[int]:
    """Classes holding less than half the uniform share of labelled training pixels."""
    from segdecay.check import split_stats

    pixels = split_stats(split, num_classes)["pixels"]
    total = max(1, sum(pixels))
    return [c for c in range(num_classes) if pixels[c] / total < 0.5 / num_classes]


def collect(base: TrainConfig, options, out: Path, data) -> dict[str, Any]:
    """Every finished run's numbers, per variant, plus the data facts the report needs."""
    from segdecay.compare import run_dir

    split_name = "test" if data.test is not None else "val"
    split = data.split(split_name)
    n = data.info.num_classes
    runs = []
    for variant in options.variants:
        for seed in options.seeds:
            folder = run_dir(out, variant.name, seed)
            if not (folder / "summary.json").is_file():
                continue
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            row: dict[str, Any] = {"variant": variant.name, "seed": seed,
                                   "status": summary.get("status", "completed"),
                                   "lr": _run_lr(folder), "epochs": summary.get("epochs"),
                                   "train_seconds": summary.get("train_seconds"),
                                   "weight_norm": summary.get("weight_norm"),
                                   "history": _history(folder)}
            if row["status"] == "completed":
                scores = _scores(folder, split, split_name, n)
                row.update(val_miou=summary["final_val_miou"],
                           train_miou=summary["final_train_miou"],
                           gap=summary["final_train_miou"] - summary["final_val_miou"],
                           eval_miou=scores["miou"], eval_iou=scores["iou"],
                           per_image=scores["per_image_miou"])
            else:
                row["reason"] = summary.get("reason")
            runs.append(row)
    return {"runs": runs, "split": split_name, "class_names": data.info.class_names,
            "rare": rare_classes(data.train, n), "images": len(split)}


def _image_means(runs: dict[int, dict], seeds: list[int]) -> list[float]:
    """Per-image mIoU averaged over the given seeds' runs."""
    per = [runs[s]["per_image"] for s in seeds]
    return [sum(v) / len(v) for v in zip(*per, strict=True)]


def aggregate(collected: dict[str, Any], options) -> dict[str, Any]:
    """Mean/sd per variant and paired differences against the baseline."""
    names = [v.name for v in options.variants]
    baseline = options.baseline or names[0]
    ok = {name: {r["seed"]: r for r in collected["runs"]
                 if r["variant"] == name and r["status"] == "completed"} for name in names}
    n_classes = len(collected["class_names"])
    variants = []
    for name in names:
        rows = list(ok[name].values())
        entry: dict[str, Any] = {"variant": name, "seeds": sorted(ok[name]),
                                 "failed": sorted(r["seed"] for r in collected["runs"]
                                                  if r["variant"] == name
                                                  and r["status"] != "completed")}
        for key in ("val_miou", "eval_miou", "train_miou", "gap", "weight_norm"):
            entry[key], entry[key + "_sd"] = mean_sd([r.get(key) for r in rows])
        entry["class_iou"] = [mean_sd([r["eval_iou"][c] for r in rows])[0]
                              for c in range(n_classes)]
        variants.append(entry)
    paired = []
    for name in names:
        if name == baseline:
            continue
        seeds = sorted(set(ok[name]) & set(ok[baseline]))
        item: dict[str, Any] = {"variant": name, "baseline": baseline, "seeds": seeds}
        for key in ("eval_miou", "val_miou"):
            item[key] = paired_difference([ok[name][s][key] for s in seeds],
                                          [ok[baseline][s][key] for s in seeds])
        if seeds:  # per image: each variant's seed-mean on the same images
            item["images"] = paired_difference(_image_means(ok[name], seeds),
                                               _image_means(ok[baseline], seeds))
        paired.append(item)
    for key in ("eval_miou", "images"):
        adjusted = holm([p.get(key, {}).get("p_t", math.nan) for p in paired])
        for p, adj in zip(paired, adjusted, strict=True):
            if key in p:
                p[key]["p_t_holm"] = adj
    return {"baseline": baseline, "variants": variants, "paired": paired}


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


def _fmt(mean: float, sd: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if math.isfinite(sd) else f"{mean:.4f}"


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
        [[v["variant"], len(v["seeds"]), _fmt(v["eval_miou"], v["eval_miou_sd"]),
          _fmt(v["val_miou"], v["val_miou_sd"]), _fmt(v["train_miou"], v["train_miou_sd"]),
          _fmt(v["gap"], v["gap_sd"]), _fmt(v["weight_norm"], v["weight_norm_sd"]),
          ", ".join(map(str, v["failed"])) or ""] for v in summary["variants"]])
    rows = []
    for p in summary["paired"]:
        for unit, key in (("seeds", "eval_miou"), ("images", "images")):
            s = p.get(key)
            if not s:
                continue
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
        ("Variants", variants + f"<p>Base config: optimizer {base.optimizer}, lr {base.lr}, "
         f"lambda {base.weight_decay}, {base.epochs} epochs, batch {base.batch_size}, "
         f"augment {base.augment}; seeds {', '.join(map(str, options.seeds))}. Every variant "
         "trains on the same data and split with the same seeds.</p>"),
        ("Results (mean ± sd over seeds)", table
         + f"<p>{split} mIoU: final weights on the {split} split ({collected['images']} "
         "images). Gap: final train mIoU (clean pass) minus final val mIoU.</p>"),
        (f"Paired differences against '{summary['baseline']}'", paired
         + "<p>Over seeds: each seed's run of the variant minus the baseline's run with the "
         "same seed. Over images: per-image mIoU averaged over seeds, variant minus baseline "
         "on each image. Holm corrects the t-test p-values across the variants. With few "
         "seeds the Wilcoxon test cannot go below p = 2/2^n.</p>"),
        ("Per-class IoU (* rare classes)", class_table + bars),
        ("Learning curves", curves),
        ("Effective learning rate", f"<p>{LR_NOTE}</p>"
         + (f"<p>Learning rates were re-tuned per variant over {options.retune_lr}.</p>"
            if options.retune_lr else "<p>All variants used the base learning rate.</p>")),
    ]
    atomic_write_text(out / "report.html", page(f"segdecay compare {out.name}", sections))


def summarize_compare(base: TrainConfig, options, out: Path, say, data) -> dict[str, Any]:
    """Collect, aggregate and write every output; returns compare.json's content."""
    collected = collect(base, options, out, data)
    summary = aggregate(collected, options)
    payload = {"base": base.to_dict(), "seeds": options.seeds,
               "variants_options": {v.name: v.options for v in options.variants},
               "split": collected["split"], "rare_classes": collected["rare"],
               "class_names": collected["class_names"], **summary,
               "runs": [{k: v for k, v in r.items() if k not in ("history", "per_image")}
                        for r in collected["runs"]]}
    write_json(out / "compare.json", payload)
    write_report(out, base, options, collected, summary)
    say(f"\n{'variant':<20} {collected['split'] + ' mIoU':>18} {'val mIoU':>18} "
        f"{'gap':>8}")
    for v in summary["variants"]:
        say(f"{v['variant']:<20} {_fmt(v['eval_miou'], v['eval_miou_sd']):>18} "
            f"{_fmt(v['val_miou'], v['val_miou_sd']):>18} {v['gap']:>8.4f}")
    for p in summary["paired"]:
        s = p["eval_miou"]
        say(f"{p['variant']} - {p['baseline']}: {s['mean_diff']:+.4f} "
            f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] paired t p={s['p_t']:.3g}")
    say(f"wrote {out / 'compare.json'}, compare.csv and report.html")
    return payload
