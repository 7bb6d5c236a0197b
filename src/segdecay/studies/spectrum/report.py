"""report.html of ``segdecay spectrum``: each quantity against lambda, and the verdict.

Lambda runs on a symlog axis (linear below the smallest positive lambda) so lambda = 0, the
reference every claim about decay is measured against, stays on the plot.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segdecay.fileio import atomic_write_text
from segdecay.report.html import figure_to_img, html_table, lambda_axis, page


def _series(runs: list[dict], get: Callable[[dict], Any]) -> tuple[list[float], list[float]]:
    """(lambdas, mean value per lambda), NaN-free, sorted by lambda."""
    groups: dict[float, list[float]] = {}
    for r in runs:
        v = get(r)
        if v is not None and math.isfinite(v):
            groups.setdefault(r["weight_decay"], []).append(v)
    lams = sorted(groups)
    return lams, [sum(groups[v]) / len(groups[v]) for v in lams]


def _plot(ax, runs: list[dict], get, label: str, **kw) -> None:
    lams, means = _series(runs, get)
    ax.plot(lams, means, "o-", label=label, **kw)
    pts = [(r["weight_decay"], get(r)) for r in runs]
    if len(pts) > len(lams):  # several runs per lambda: show each one too
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.5,
                   color=kw.get("color"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _layer_value(run: dict, depth: int) -> float | None:
    for layer in run["kernels"]["layers"]:
        if layer["depth"] == depth:
            return layer["low_fraction"]
    return None


def _kernel_section(runs: list[dict], cutoff: float) -> str:
    plt = _plt()
    lams = [r["weight_decay"] for r in runs]
    depths = sorted({layer["depth"] for r in runs for layer in r["kernels"]["layers"]})
    if not depths:
        return "<p>No spatial conv layer (all kernels are 1x1).</p>"
    fig, ax = plt.subplots(1, 2, figsize=(14, 4.5))
    cmap = plt.get_cmap("viridis")
    top = max(depths) or 1
    for d in depths:
        _plot(ax[0], runs, lambda r, d=d: _layer_value(r, d), label=None,
              color=cmap(d / top), lw=2.5 if d == 0 else 1, alpha=1 if d == 0 else 0.7)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
    fig.colorbar(sm, ax=ax[0], label="layer depth (0 = first conv, forward order)")
    ax[0].set_ylabel(f"energy fraction at radius <= {cutoff:g} cycles/px")
    ax[0].set_title("kernel low-frequency energy, one line per layer (thick: first layer)")
    lambda_axis(ax[0], lams)
    by_lam: dict[float, dict] = {}
    for r in runs:
        by_lam.setdefault(r["weight_decay"], r)
    cm2 = plt.get_cmap("plasma")
    for i, (lam, r) in enumerate(sorted(by_lam.items())):
        first = r["kernels"]["layers"][0]
        ax[1].plot(first["freqs"], first["spectrum"], "-",
                   color=cm2(i / max(1, len(by_lam) - 1) * 0.85), label=f"lambda={lam:g}")
    ax[1].axvline(cutoff, color="grey", ls=":", label=f"cutoff {cutoff:g}")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("frequency (cycles/pixel)")
    ax[1].set_ylabel("radially averaged power (normalised to sum 1)")
    ax[1].set_title(f"first layer ({runs[0]['kernels']['layers'][0]['name']})")
    ax[1].legend(fontsize=8)
    img = figure_to_img(fig)
    names = {(layer["depth"], layer["name"], tuple(layer["kernel_size"]), layer["kernels"])
             for r in runs for layer in r["kernels"]["layers"]}
    header = ["depth", "layer", "kernel", "kernels",
              *[f"lambda={r['weight_decay']:g}" for r in runs]]
    rows = [[d, n, f"{k[0]}x{k[1]}", c, *[_layer_value(r, d) for r in runs]]
            for d, n, k, c in sorted(names)]
    return (img + f"<p>Fraction of each layer's kernel energy (pooled over its kernels, "
            f"zero-padded FFT) at radius <= {cutoff:g} cycles/px; 1x1 convs have no spatial "
            "spectrum and are left out.</p>" + html_table(header, rows))


def _prediction_section(runs: list[dict], cutoff: float) -> str:
    plt = _plt()
    lams = [r["weight_decay"] for r in runs]
    fig, ax = plt.subplots(1, 2, figsize=(14, 4.5))
    cm2 = plt.get_cmap("plasma")
    seen: dict[float, dict] = {}
    for r in runs:
        seen.setdefault(r["weight_decay"], r)
    for i, (lam, r) in enumerate(sorted(seen.items())):
        p = r["predictions"]
        ax[0].plot(p["freqs"], p["pred_power"], color=cm2(i / max(1, len(seen) - 1) * 0.85),
                   label=f"prediction, lambda={lam:g}")
    p = runs[0]["predictions"]
    ax[0].plot(p["freqs"], p["gt_power"], "k--", label="ground truth (one-hot)")
    ax[0].axvline(cutoff, color="grey", ls=":")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("frequency (cycles/pixel)")
    ax[0].set_ylabel("radially averaged power per class map")
    ax[0].set_title("spectra of class probability maps")
    ax[0].legend(fontsize=8)
    _plot(ax[1], runs, lambda r: r["predictions"]["high_energy_ratio"],
          label=f"prediction / ground truth, energy at radius > {cutoff:g}")
    ax[1].axhline(1.0, color="grey", ls=":")
    ax[1].set_ylabel("high-frequency energy ratio")
    ax[1].set_title("below 1: predictions smoother than the truth")
    ax[1].legend(fontsize=8)
    lambda_axis(ax[1], lams)
    rows = [[r["run"], r["weight_decay"], r["predictions"]["pred_low_fraction"],
             r["predictions"]["gt_low_fraction"], r["predictions"]["high_energy_ratio"]]
            for r in runs]
    return figure_to_img(fig) + html_table(
        ["run", "lambda", f"pred energy <= {cutoff:g}", f"truth energy <= {cutoff:g}",
         "high-frequency ratio pred/truth"], rows)


def _reliance_section(runs: list[dict], settings: dict) -> str:
    plt = _plt()
    lams = [r["weight_decay"] for r in runs]
    fig, ax = plt.subplots(1, 2, figsize=(14, 4.5))
    for a in ax:
        _plot(a, runs, lambda r: r["band_reliance"]["clean_miou"], label="clean", color="k")
    for c in settings["lowpass"]:
        _plot(ax[0], runs, lambda r, c=c: next(e["miou"] for e in r["band_reliance"]["lowpass"]
                                               if e["cutoff"] == c),
              label=f"low-pass {c:g} cycles/px")
    for band, (lo, hi) in settings["bands"].items():
        _plot(ax[1], runs, lambda r, b=band: next(e["miou"] for e in r["band_reliance"]["noise"]
                                                  if e["band"] == b),
              label=f"{band} band noise ({lo:.3g}-{hi:.3g} cycles/px)")
    ax[0].set_title(f"{settings['lowpass_kind']} low-pass filtered input")
    ax[1].set_title(f"band-limited noise, RMS {settings['noise_eps']:g} in every band")
    for a in ax:
        a.set_ylabel("val mIoU")
        a.legend(fontsize=8)
        lambda_axis(a, lams)
    header = ["run", "lambda", "clean", *[f"low-pass {c:g}" for c in settings["lowpass"]],
              *[f"{b} noise" for b in settings["bands"]]]
    rows = [[r["run"], r["weight_decay"], r["band_reliance"]["clean_miou"],
             *[e["miou"] for e in r["band_reliance"]["lowpass"]],
             *[e["miou"] for e in r["band_reliance"]["noise"]]] for r in runs]
    return (figure_to_img(fig) + "<p>A model that relies on a band loses more mIoU when that "
            "band is removed (low-pass) or drowned in noise. Every band gets noise of the same "
            "energy, and every run the very same noisy images.</p>" + html_table(header, rows))


def _boundary_section(runs: list[dict]) -> str:
    plt = _plt()
    lams = [r["weight_decay"] for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4))
    _plot(ax, runs, lambda r: r["boundary"]["miou"], label="mIoU")
    _plot(ax, runs, lambda r: r["boundary"]["boundary_iou"], label="boundary IoU (mean)")
    ax.set_ylabel("val score")
    ax.legend(fontsize=8)
    lambda_axis(ax, lams)
    names = runs[0]["class_names"]
    header = ["class", *[f"lambda={r['weight_decay']:g} IoU / bIoU" for r in runs]]
    rows = []
    for i, name in enumerate(names):
        cells = []
        for r in runs:
            b = r["boundary"]
            iou, biou = b["iou_per_class"][i], b["boundary_iou_per_class"][i]
            cells.append(" / ".join("-" if v is None or not math.isfinite(v) else f"{v:.3f}"
                                    for v in (iou, biou)))
        rows.append([name, *cells])
    d = sorted({d for r in runs for d in r["boundary"]["dilation_px"]})
    return (figure_to_img(fig) + f"<p>Boundary IoU counts only pixels within {d} px of an "
            "object contour (d = ratio x image diagonal), so it scores the edges, the "
            "high-frequency part of a segmentation, which mIoU hardly sees.</p>"
            + html_table(header, rows))


def write_spectrum_report(out: Path, payload: dict[str, Any]) -> Path:
    """OUT/report.html from the spectrum.json payload."""
    runs = payload["runs"]
    settings = payload["settings"]
    v = payload["verdict"]
    verdict_html = f"<p><b>{html.escape(v['headline'])}</b></p>" + "".join(
        f"<p>{html.escape(s)}</p>" for s in v["sentences"])
    overview = html_table(
        ["run", "lambda", "algorithm", "lr", "L1", "dropout", "seed", "checkpoint", "images",
         "mIoU", "boundary IoU", "first-layer low fraction", "high-freq ratio pred/truth"],
        [[r["run"], r["weight_decay"], r["algorithm"] or r["optimizer"], r["lr"], r["l1"],
          r["dropout"], r["seed"], r["checkpoint"], r["images"], r["boundary"]["miou"],
          r["boundary"]["boundary_iou"],
          r["kernels"]["layers"][0]["low_fraction"] if r["kernels"]["layers"] else None,
          r["predictions"]["high_energy_ratio"]] for r in runs])
    cutoff = settings["cutoff"]
    sections = [
        ("Verdict", verdict_html),
        ("Runs", overview),
        ("Kernel spectra", _kernel_section(runs, cutoff)),
        ("Prediction spectra", _prediction_section(runs, cutoff)),
        ("Band reliance", _reliance_section(runs, settings)),
        ("Boundary quality", _boundary_section(runs)),
        ("Settings", html_table(["setting", "value"],
                                [[k, str(val)] for k, val in settings.items()])),
    ]
    if payload.get("skipped"):
        sections.append(("Skipped folders", html_table(
            ["folder", "reason"], [[s["path"], s["reason"]] for s in payload["skipped"]])))
    path = out / "report.html"
    atomic_write_text(path, page(f"segdecay spectrum {out.name}", sections))
    return path
