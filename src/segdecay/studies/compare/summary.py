"""Turn the runs of a comparison into compare.json (and, through ``report``, compare.csv
and report.html).

Every run is scored on the evaluation split (test, or val where there is none) with its
final weights, per image as well, and the scores are cached in the run folder. The tables
give mean and sd over seeds; the paired tables give each variant minus the baseline, over
seeds and over the split's groups of images (the image where the split has no groups), with
Holm-corrected p-values across the variants.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig, load_config
from segdecay.data.check import split_stats
from segdecay.fileio import write_json
from segdecay.runs.folder import is_finished, read_summary
from segdecay.studies.compare.per_image import score_images
from segdecay.studies.compare.report import fmt, write_report
from segdecay.studies.compare.statistics import holm, mean_sd, paired_by_group, paired_difference
from segdecay.studies.compare.variants import run_dir

SCORES_VERSION = 2  # 2: an all-ignore image scores NaN (was 0); older caches are rescored


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
    try:
        return load_config(folder / "config.yaml").lr
    except Exception:  # noqa: BLE001 - a missing or odd config only blanks a column
        return None


def _scores(folder: Path, split, split_name: str, num_classes: int) -> dict[str, Any]:
    """Per-image and split scores of one run (cached next to its summary)."""
    cache = folder / f"compare_{split_name}.json"
    stamp = (folder / "summary.json").stat().st_mtime_ns
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if (cached.get("summary_mtime_ns") == stamp
                    and cached.get("scores_version") == SCORES_VERSION):
                return cached
        except ValueError:
            pass
    result = score_images(folder, split, num_classes)
    result.pop("confusion", None)
    result["summary_mtime_ns"] = stamp
    result["scores_version"] = SCORES_VERSION
    write_json(cache, result)
    return result


def _scores_list(values: list[float | None]) -> list[float]:
    """Per-image scores as floats: the cache holds NaN (an unscored image) as null."""
    return [math.nan if v is None else float(v) for v in values]


def image_groups(split) -> list[str]:
    """The group of each image (CamVid: its video sequence); its own name where none."""
    groups = list(split.groups)
    return groups if len(groups) == len(split) else list(split.names)


def rare_classes(split, num_classes: int) -> list[int]:
    """Classes holding less than half the uniform share of labelled training pixels."""
    pixels = split_stats(split, num_classes)["pixels"]
    total = max(1, sum(pixels))
    return [c for c in range(num_classes) if pixels[c] / total < 0.5 / num_classes]


def collect(base: TrainConfig, options, out: Path, data) -> dict[str, Any]:
    """Every finished run's numbers, per variant, plus the data facts the report needs."""
    split_name = "test" if data.test is not None else "val"
    split = data.split(split_name)
    n = data.info.num_classes
    runs = []
    for variant in options.variants:
        for seed in options.seeds:
            folder = run_dir(out, variant.name, seed)
            if not is_finished(folder):
                continue
            summary = read_summary(folder)
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
                           per_image=_scores_list(scores["per_image_miou"]))
            else:
                row["reason"] = summary.get("reason")
            runs.append(row)
    return {"runs": runs, "split": split_name, "class_names": data.info.class_names,
            "rare": rare_classes(data.train, n), "images": len(split),
            "groups": image_groups(split)}


def _image_means(runs: dict[int, dict], seeds: list[int]) -> list[float]:
    """Per-image mIoU averaged over the given seeds' runs (NaN: an unscored image)."""
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
        if seeds:  # each variant's seed-mean per image, averaged per group of images
            item["images"] = paired_by_group(_image_means(ok[name], seeds),
                                             _image_means(ok[baseline], seeds),
                                             collected["groups"])
        paired.append(item)
    for key in ("eval_miou", "images"):  # the family: every variant asked for
        adjusted = holm([p.get(key, {}).get("p_t", math.nan) for p in paired])
        for p, adj in zip(paired, adjusted, strict=True):
            if key in p:
                p[key]["p_t_holm"] = adj
    return {"baseline": baseline, "variants": variants, "paired": paired}


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
        say(f"{v['variant']:<20} {fmt(v['eval_miou'], v['eval_miou_sd']):>18} "
            f"{fmt(v['val_miou'], v['val_miou_sd']):>18} {v['gap']:>8.4f}")
    for p in summary["paired"]:
        s = p["eval_miou"]
        say(f"{p['variant']} - {p['baseline']}: {s['mean_diff']:+.4f} "
            f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] paired t p={s['p_t']:.3g}")
    say(f"wrote {out / 'compare.json'}, compare.csv and report.html")
    return payload
