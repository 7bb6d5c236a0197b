"""Markdown tables of finished ``segdecay compare`` studies, for docs and notes.

    .venv/bin/python benchmarks/compare_tables.py runs/cmp_syn_reg [runs/cmp_cv_reg ...]
        [--classes pole,Pole,Bicyclist]   (IoU columns for these classes, where they exist)

Per study: mean ± sd over seeds of the evaluation split's mIoU, val mIoU, train-val gap,
weight norm and the mean IoU of the rare classes; then each variant's paired difference
against the baseline over seeds (t CI, t-test p, Holm-adjusted) and over images.
Everything is read from compare.json; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from segdecay.studies.compare.statistics import mean_sd


def _pm(mean: float | None, sd: float | None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if sd is None or math.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def _class_cells(runs: list[dict], variant: str, classes: list[int]) -> list[str]:
    return [_pm(*mean_sd([r["eval_iou"][c] for r in runs if r["variant"] == variant]))
            for c in classes]


def tables(folder: Path, show: list[str] | None = None) -> str:
    data = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
    split = data["split"]
    rare = data["rare_classes"]
    names = data["class_names"]
    runs = [r for r in data["runs"] if r.get("status") == "completed"]
    shown = [names.index(n) for n in show or []]
    lines = [f"### {folder} ({split} split, seeds {data['seeds']}, baseline "
             f"{data['baseline']}; rare classes: "
             f"{', '.join(names[c] for c in rare) or 'none'})", "",
             f"| variant | {split} mIoU | val mIoU | train-val gap | weight norm | "
             "rare-class IoU |" + "".join(f" {names[c]} IoU |" for c in shown),
             "|---|---|---|---|---|---|" + "---|" * len(shown)]
    for v in data["variants"]:
        per_seed = [sum(r["eval_iou"][c] for c in rare) / len(rare)
                    for r in runs if r["variant"] == v["variant"]] if rare else []
        mean, sd = mean_sd(per_seed)
        lines.append(f"| {v['variant']} | {_pm(v['eval_miou'], v['eval_miou_sd'])} | "
                     f"{_pm(v['val_miou'], v['val_miou_sd'])} | {_pm(v['gap'], v['gap_sd'])} | "
                     f"{_pm(v['weight_norm'], v['weight_norm_sd'], 1)} | {_pm(mean, sd)} |"
                     + "".join(f" {c} |" for c in _class_cells(runs, v["variant"], shown)))
    lines += ["", f"| variant − {data['baseline']} | Δ {split} mIoU over seeds [95% CI] | "
              "p (t) | p (Holm) | Δ over images | p images (Holm) |",
              "|---|---|---|---|---|---|"]
    for p in data["paired"]:
        s, im = p["eval_miou"], p.get("images", {})
        lines.append(f"| {p['variant']} | {s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, "
                     f"{s['ci_high']:+.3f}] | {_p(s['p_t'])} | {_p(s.get('p_t_holm'))} | "
                     f"{im.get('mean_diff', math.nan):+.3f} | {_p(im.get('p_t_holm'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--classes", default="", help="NAME,... classes to show IoU columns of")
    args = parser.parse_args()
    for folder in args.folders:
        data_names = json.loads((folder / "compare.json").read_text())["class_names"]
        show = [n for n in args.classes.split(",") if n and n in data_names]
        print(tables(folder, show))


if __name__ == "__main__":
    main()
