"""The verdict of ``segdecay spectrum``: sentences (and the votes behind them) computed from
the measured numbers, never canned.

Each measure (kernels, predictions, band reliance, boundaries) compares the smallest and the
largest lambda analysed; three of them vote on whether decay shifts the model towards low
frequencies, and the headline says whether the votes support, contradict or do not settle
the claim, with the caveats that apply (one run per lambda, mixed recipes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segdecay.studies.spectrum.options import SpectrumOptions

# Changes smaller than these count as "no change" in the verdict (one seed is noisy).
KERNEL_TOL = 0.01  # low-frequency energy fraction
RATIO_TOL = 0.05  # relative change of the prediction/ground-truth high-frequency ratio
MIOU_TOL = 0.01  # mIoU drop under a perturbation
UNDERFIT_GAP = 0.02  # the largest lambda scoring this far below the best is underfitting
# Settings besides lambda that change what a run learned (a compare folder varies them).
RECIPE_KEYS = ("optimizer", "decay_mode", "lr", "l1", "dropout", "arch")
VOTERS = {"kernels": "the kernels", "predictions": "the predictions",
          "band_reliance": "the noise test"}


@dataclass
class Findings:
    """What the measures say so far: sentences in order, and each voter's vote."""

    runs: list[dict]
    options: SpectrumOptions
    lo: float
    hi: float
    sentences: list[str]
    votes: dict[str, int]

    def series(self, get: Callable[[dict], float | None]) -> list[tuple[float, float]]:
        """(lambda, mean value) over the runs, sorted by lambda."""
        return _by_lambda(self.runs, get)


def _by_lambda(runs: list[dict], get: Callable[[dict], float | None]) -> list[tuple[float, float]]:
    """(lambda, mean of finite values) sorted by lambda."""
    groups: dict[float, list[float]] = {}
    for r in runs:
        v = get(r)
        if v is not None and math.isfinite(v):
            groups.setdefault(r["weight_decay"], []).append(v)
    return [(lam, sum(vs) / len(vs)) for lam, vs in sorted(groups.items())]


def _move(a: float, b: float, tol: float) -> str:
    if b - a > tol:
        return "rises"
    if a - b > tol:
        return "falls"
    return "stays about the same"


def _vote(change: float, tol: float) -> int:
    """+1 towards low frequencies when ``change`` (sign: towards low) exceeds ``tol``."""
    return 1 if change > tol else -1 if change < -tol else 0


def _layer_fraction(run: dict, key: tuple[int, str] | None) -> float | None:
    for layer in run["kernels"]["layers"] if key else []:
        if (layer["depth"], layer["name"]) == key:
            return layer["low_fraction"]
    return None


def _drop(run: dict, kind: str, key) -> float | None:
    """mIoU lost to the noise band or low-pass cutoff ``key``."""
    br = run["band_reliance"]
    entry = next((e for e in br[kind] if e["band" if kind == "noise" else "cutoff"] == key),
                 None)
    return None if entry is None else br["clean_miou"] - entry["miou"]


def _lam(v: float) -> str:
    return f"lambda={v:g}"


def _layer_keys(f: Findings) -> list[tuple[int, str]]:
    ref = next(r for r in f.runs if r["weight_decay"] == f.lo)
    return [(layer["depth"], layer["name"]) for layer in ref["kernels"]["layers"]]


def kernel_sentence(f: Findings) -> None:
    """First-layer low-frequency fraction, and how many layers move which way."""
    keys = _layer_keys(f)
    if not keys:
        return
    ref = next(r for r in f.runs if r["weight_decay"] == f.lo)
    first = ref["kernels"]["layers"][0]
    up = down = 0
    for key in keys:
        series = f.series(lambda r, k=key: _layer_fraction(r, k))
        if len(series) >= 2 and series[0][0] == f.lo and series[-1][0] == f.hi:
            d = series[-1][1] - series[0][1]
            up += d > KERNEL_TOL
            down += d < -KERNEL_TOL
    pts = f.series(lambda r: _layer_fraction(r, keys[0]))
    if len(pts) < 2:
        return
    a, b = pts[0][1], pts[-1][1]
    f.sentences.append(
        f"The low-frequency energy fraction (radius <= {f.options.cutoff:g} cycles/px) of "
        f"first-layer kernels ({first['name']}, {first['kernel_size'][0]}x"
        f"{first['kernel_size'][1]}) {_move(a, b, KERNEL_TOL)} from {a:.3f} at {_lam(f.lo)} "
        f"to {b:.3f} at {_lam(f.hi)}; over all {len(keys)} spatial conv layers it rises by "
        f"more than {KERNEL_TOL:g} in {up} and falls by more than {KERNEL_TOL:g} in {down}.")
    f.votes["kernels"] = 1 if up > down else -1 if down > up else 0


def prediction_sentence(f: Findings) -> None:
    """High-frequency energy of the softmax maps relative to the ground truth."""
    pts = f.series(lambda r: r["predictions"]["high_energy_ratio"])
    if len(pts) < 2:
        return
    a, b = pts[0][1], pts[-1][1]
    rel = (b - a) / a if a else math.nan
    f.sentences.append(
        f"The predicted probability maps carry {a:.2f}x the high-frequency energy "
        f"(radius > {f.options.cutoff:g}) of the ground-truth maps at {_lam(f.lo)} and "
        f"{b:.2f}x at {_lam(f.hi)}: predictions get "
        + ("smoother" if rel < -RATIO_TOL else "sharper" if rel > RATIO_TOL
           else "neither smoother nor sharper") + " as lambda grows.")
    f.votes["predictions"] = _vote(-rel, RATIO_TOL)


def noise_sentence(f: Findings) -> None:
    """mIoU lost to noise in each band; the high band votes."""
    parts, hf_drop = [], None
    for band in f.options.bands:
        pts = f.series(lambda r, b=band: _drop(r, "noise", b))
        if len(pts) >= 2:
            parts.append(f"{band} band {pts[0][1]:.3f} -> {pts[-1][1]:.3f}")
            if band == "high":
                hf_drop = (pts[0][1], pts[-1][1])
    if parts:
        f.sentences.append(
            f"Noise of RMS {f.options.noise_eps:g} (normalized-input units) costs this much "
            f"val mIoU from {_lam(f.lo)} to {_lam(f.hi)}: " + "; ".join(parts) + ".")
    if hf_drop is not None:
        f.votes["band_reliance"] = _vote(hf_drop[0] - hf_drop[1], MIOU_TOL)


def lowpass_sentence(f: Findings) -> None:
    """mIoU lost to the strongest low-pass filter."""
    c = min(f.options.lowpass)
    pts = f.series(lambda r: _drop(r, "lowpass", c))
    if len(pts) >= 2:
        f.sentences.append(
            f"Low-pass filtering the input to {c:g} cycles/px ({f.options.lowpass_kind}) "
            f"costs {pts[0][1]:.3f} mIoU at {_lam(f.lo)} and {pts[-1][1]:.3f} at "
            f"{_lam(f.hi)}.")


def boundary_sentence(f: Findings) -> None:
    """Boundary IoU next to mIoU."""
    bi = f.series(lambda r: r["boundary"]["boundary_iou"])
    mi = f.series(lambda r: r["boundary"]["miou"])
    if len(bi) >= 2 and len(mi) >= 2:
        f.sentences.append(
            f"Boundary IoU {_move(bi[0][1], bi[-1][1], MIOU_TOL)} from {bi[0][1]:.3f} at "
            f"{_lam(f.lo)} to {bi[-1][1]:.3f} at {_lam(f.hi)}, while mIoU goes from "
            f"{mi[0][1]:.3f} to {mi[-1][1]:.3f}.")


def underfit_sentence(f: Findings) -> None:
    """An underfitting largest lambda loses everything at once: compare with the best too."""
    mi = f.series(lambda r: r["boundary"]["miou"])
    if len(mi) < 3:
        return
    best, best_miou = max(mi, key=lambda p: p[1])
    if best in (f.lo, f.hi) or mi[-1][1] >= best_miou - UNDERFIT_GAP:
        return

    def value(get) -> str:
        pts = dict(f.series(get))
        return f"{pts.get(f.lo, math.nan):.3f} -> {pts.get(best, math.nan):.3f}"

    keys = _layer_keys(f)
    first_key = keys[0] if keys else None
    f.sentences.append(
        f"{_lam(f.hi)} scores {best_miou - mi[-1][1]:.3f} mIoU below the best lambda "
        f"({best:g}, mIoU {best_miou:.3f}), so part of its change is underfitting. "
        f"From {_lam(f.lo)} to {_lam(best)}: "
        f"first-layer low-frequency fraction "
        f"{value(lambda r: _layer_fraction(r, first_key))}, "
        f"prediction/truth high-frequency ratio "
        f"{value(lambda r: r['predictions']['high_energy_ratio'])}, mIoU lost to "
        f"high-band noise {value(lambda r: _drop(r, 'noise', 'high'))}, boundary IoU "
        f"{value(lambda r: r['boundary']['boundary_iou'])}.")


def headline(f: Findings) -> str:
    """Support, contradict or do not settle, from the votes; then the caveats."""
    pro = [VOTERS[k] for k, v in f.votes.items() if v > 0]
    con = [VOTERS[k] for k, v in f.votes.items() if v < 0]
    flat = [VOTERS[k] for k, v in f.votes.items() if v == 0]
    if pro and not con and len(pro) >= 2:
        word = "support"
    elif con and not pro and len(con) >= 2:
        word = "contradict"
    else:
        word = "do not settle"
    detail = []
    if pro:
        detail.append(f"shifting to low frequencies: {', '.join(pro)}")
    if con:
        detail.append(f"shifting to high frequencies: {', '.join(con)}")
    if flat:
        detail.append(f"no clear change: {', '.join(flat)}")
    return (f"From {_lam(f.lo)} to {_lam(f.hi)} the measurements {word} the claim that weight "
            f"decay favours low-frequency features ({'; '.join(detail) or 'no measure'})."
            + _caveats(f.runs))


def _caveats(runs: list[dict]) -> str:
    lams = sorted({r["weight_decay"] for r in runs})
    seeds = max(sum(r["weight_decay"] == v for r in runs) for v in lams)
    caveat = (" One run per lambda: differences smaller than seed-to-seed variation are not "
              "evidence." if seeds == 1 else "")
    mixed = [k for k in RECIPE_KEYS if any(
        len({str(r[k]) for r in runs if r["weight_decay"] == v}) > 1 for v in lams)]
    if mixed:
        caveat += (f" Runs at one lambda differ in {', '.join(mixed)} and are averaged "
                   "together; analyse such variants separately to compare them.")
    return caveat


MEASURES = (kernel_sentence, prediction_sentence, noise_sentence, lowpass_sentence,
            boundary_sentence, underfit_sentence)


def verdict(runs: list[dict], options: SpectrumOptions) -> dict[str, Any]:
    """Sentences (and the votes behind them) computed from the measured numbers."""
    lams = sorted({r["weight_decay"] for r in runs})
    if len(lams) < 2:
        only = ", ".join(f"{v:g}" for v in lams)
        return {"headline": f"Only one lambda ({only}) was analysed, so there is no trend to "
                "report; pass runs trained with different --weight-decay values.",
                "sentences": [], "votes": {}}
    findings = Findings(runs, options, lams[0], lams[-1], [], {})
    for measure in MEASURES:
        measure(findings)
    return {"headline": headline(findings), "sentences": findings.sentences,
            "votes": findings.votes}
