"""``segdecay spectrum``: test "weight decay favours low-frequency features" on trained runs.

For each run folder (or every run inside a tune / compare folder) it measures, on the val
split of the run's dataset:

1. kernel spectra: the share of each spatial conv layer's kernel energy below ``cutoff``;
2. prediction spectra: radial power of the softmax maps against the one-hot ground truth;
3. band reliance: mIoU when the model's input is low-pass filtered, and when band-limited
   noise of one fixed energy is added in the low, middle and high bands (Yin et al. 2019);
4. boundary quality: Boundary IoU (Cheng et al. 2021) next to mIoU.

Filters and noise act on the normalized float input the model sees (after the resize to
``eval_size``), and scores come from the same ``SegmentationMetrics`` and forward path as
``segdecay evaluate``. Noise is drawn from a generator seeded by ``--seed`` and the band, so
every run sees exactly the same perturbed images and the comparison across lambda is paired.
Results go to ``OUT/spectrum.json`` and ``OUT/report.html``; the verdict sentences are
computed from the numbers, never canned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segdecay.errors import UserError
from segdecay.fileio import write_json

# Radial bands of the noise test, in cycles/pixel: thirds of 0..Nyquist (0.5).
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.0, 1 / 6), "mid": (1 / 6, 1 / 3), "high": (1 / 3, 0.5)}
DEFAULT_LOWPASS = (0.0625, 0.125, 0.25)

# Changes smaller than these count as "no change" in the verdict (one seed is noisy).
KERNEL_TOL = 0.01  # low-frequency energy fraction
RATIO_TOL = 0.05  # relative change of the prediction/ground-truth high-frequency ratio
MIOU_TOL = 0.01  # mIoU drop under a perturbation
UNDERFIT_GAP = 0.02  # the largest lambda scoring this far below the best is underfitting
# Settings besides lambda that change what a run learned (a compare folder varies them).
RECIPE_KEYS = ("optimizer", "decay_mode", "lr", "l1", "dropout", "arch")


@dataclass
class SpectrumOptions:
    """Everything that decides the numbers in spectrum.json (it is written there too)."""

    data: str | None = None  # dataset spec; None: each run's own
    split: str = "val"
    checkpoint: str = "last"  # last: the weights decay acted on longest (best.pt if absent)
    device: str = "auto"
    cutoff: float = 0.25  # cycles/pixel: "low frequency" for kernels and predictions
    lowpass: list[float] = field(default_factory=lambda: list(DEFAULT_LOWPASS))
    lowpass_kind: str = "ideal"
    noise_eps: float = 0.5  # RMS of the noise per input value, normalized-input units
    bands: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    boundary_ratio: float = 0.02
    kernel_fft: int = 32  # kernels are zero-padded to this size before the FFT
    seed: int = 0
    max_images: int | None = None

    def validate(self) -> None:
        """One UserError naming the option for the first bad value."""
        if not 0 < self.cutoff <= 0.5:
            raise UserError(f"--cutoff {self.cutoff}: must lie in (0, 0.5] cycles/pixel")
        if not self.lowpass:
            raise UserError("--lowpass: give at least one cutoff")
        for c in self.lowpass:
            if not 0 < c <= 0.5:
                raise UserError(f"--lowpass {c:g}: cutoffs must lie in (0, 0.5] cycles/pixel")
        if self.lowpass_kind not in ("ideal", "gaussian"):
            raise UserError(f"--lowpass-kind {self.lowpass_kind}: use ideal or gaussian")
        if not (math.isfinite(self.noise_eps) and self.noise_eps > 0):
            raise UserError(f"--noise-eps {self.noise_eps}: must be a positive number")
        if not (math.isfinite(self.boundary_ratio) and 0 < self.boundary_ratio < 1):
            raise UserError(f"--boundary-ratio {self.boundary_ratio}: must lie in (0, 1)")
        if self.kernel_fft < 8:
            raise UserError(f"--kernel-fft {self.kernel_fft}: must be at least 8")
        if self.max_images is not None and self.max_images < 1:
            raise UserError(f"--max-images {self.max_images}: must be at least 1")
        if self.split not in ("train", "val", "test"):
            raise UserError(f"--split {self.split}: use train, val or test")


def parse_floats(text: str, option: str) -> list[float]:
    """``"0.1,0.2"`` as floats; a UserError naming ``option`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UserError(f"{option} {text}: not a comma-separated list of numbers") from exc
    if not values:
        raise UserError(f"{option} {text!r}: give at least one number")
    return values


# ----------------------------------------------------------------------------- finding runs


def is_run_folder(path: Path) -> bool:
    """A trained run: config.yaml plus a checkpoint (CV fold fits keep none and are skipped)."""
    return (path / "config.yaml").is_file() and (
        (path / "last.pt").is_file() or (path / "best.pt").is_file())


def find_runs(paths: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Run folders named by ``paths`` (runs, or folders holding runs at any depth).

    Returns (runs, skipped): folders with a config.yaml but no checkpoint, such as the fold
    fits of a tune, are listed as skipped. A path that is neither a run nor holds one is a
    UserError naming it.
    """
    runs: list[Path] = []
    skipped: list[dict[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"run folder {path}: does not exist or is not a folder")
        if is_run_folder(path):
            found = [path]
        else:
            found = []
            for cfg in sorted(path.rglob("config.yaml")):
                folder = cfg.parent
                if is_run_folder(folder):
                    found.append(folder)
                else:
                    skipped.append({"path": str(folder),
                                    "reason": "no checkpoint (e.g. a cross-validation fold)"})
            if not found:
                raise UserError(f"run folder {path}: holds no run (a folder with config.yaml "
                                "and last.pt or best.pt), neither itself nor below it")
        for run in found:
            if all(run.resolve() != r.resolve() for r in runs):
                runs.append(run)
    return runs, skipped


# ----------------------------------------------------------------------------- forward passes


Perturb = Callable[[torch.Tensor, int], torch.Tensor]  # (normalized batch, batch index)


def perturbed_miou(model: nn.Module, split, num_classes: int, config, device: torch.device,
                   perturb: Perturb) -> float:
    """Val mIoU when ``perturb`` changes each normalized input batch before the forward."""
    from segdecay.engine import evaluate_split

    return evaluate_split(model, split, num_classes, config, device, perturb=perturb)[0]["miou"]


def _noise_perturb(band: tuple[float, float], eps: float, seed: int) -> Perturb:
    """Adds band noise; the generator restarts per call site so every run gets the same noise."""
    from segdecay.spectrum import band_noise

    gen = torch.Generator().manual_seed(seed)

    def apply(x: torch.Tensor, _batch: int) -> torch.Tensor:
        return x + band_noise(tuple(x.shape), band, eps, gen).to(x.device, x.dtype)

    return apply


def _lowpass_perturb(cutoff: float, kind: str) -> Perturb:
    from segdecay.spectrum import lowpass

    return lambda x, _b: lowpass(x, cutoff, kind)


def clean_pass(model: nn.Module, split, num_classes: int, config, device: torch.device,
               cutoff: float, boundary_ratio: float) -> dict[str, Any]:
    """mIoU, Boundary IoU and prediction/ground-truth spectra in one pass over the split."""
    from segdecay.data.base import IGNORE_INDEX
    from segdecay.engine import evaluate_split
    from segdecay.spectrum import BoundaryIoU, power_spectrum_2d, radial_profile, split_energy

    biou = BoundaryIoU(num_classes, IGNORE_INDEX, boundary_ratio)
    acc = {k: torch.zeros((), dtype=torch.float64) for k in
           ("pred_low", "pred_total", "gt_low", "gt_total")}
    profiles: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"maps": 0, "bins": None, "freqs": None}

    def spectra(logits: torch.Tensor, target: torch.Tensor) -> None:
        biou.update(logits.argmax(dim=1), target)
        valid = (target != IGNORE_INDEX)[:, None]
        probs = logits.softmax(dim=1) * valid
        onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
        onehot = onehot.to(probs.dtype) * valid
        if state["bins"] is None:
            state["bins"] = min(target.shape[-2:]) // 2 + 1
        for i in range(probs.shape[0]):  # one image at a time bounds the FFT memory
            for name, maps_i in (("pred", probs[i]), ("gt", onehot[i])):
                power = power_spectrum_2d(maps_i.cpu())
                low, total = split_energy(power, cutoff)
                acc[f"{name}_low"] += low.sum()
                acc[f"{name}_total"] += total.sum()
                state["freqs"], prof = radial_profile(power, state["bins"])
                prof = prof.sum(dim=0)
                profiles[name] = profiles[name] + prof if name in profiles else prof
            state["maps"] += num_classes

    result, _ = evaluate_split(model, split, num_classes, config, device, on_batch=spectra)
    maps, freqs = state["maps"], state["freqs"]
    pred_prof, gt_prof = profiles.get("pred"), profiles.get("gt")
    if not maps:
        raise UserError("the split to analyse holds no image")
    boundary = biou.compute()

    def high(name: str) -> float:
        return float(acc[f"{name}_total"] - acc[f"{name}_low"])

    return {
        "miou": result["miou"], "iou": result["iou"],
        "boundary_iou": boundary["mbiou"], "boundary_iou_per_class": boundary["biou"],
        "boundary_dilation_px": boundary["dilation"],
        "predictions": {
            "freqs": freqs.tolist(),
            "pred_power": (pred_prof / maps).tolist(),
            "gt_power": (gt_prof / maps).tolist(),
            "pred_low_fraction": float(acc["pred_low"] / acc["pred_total"]),
            "gt_low_fraction": float(acc["gt_low"] / acc["gt_total"]),
            "high_energy_ratio": high("pred") / high("gt") if high("gt") > 0 else math.nan,
        },
    }


# ----------------------------------------------------------------------------- one run


def _load_split(spec: str, config, split: str, cache: dict, max_images: int | None):
    from segdecay.data import load_dataset_for

    key = (spec, config.num_classes, tuple(config.class_names or ()), config.val_fraction,
           config.seed)
    if key not in cache:
        cache[key] = load_dataset_for(config, spec)
    data = cache[key]
    chosen = data.split(split)
    if max_images is not None and len(chosen) > max_images:
        chosen = chosen.subset(list(range(max_images)))
    return data, chosen


def analyse_run(run: Path, options: SpectrumOptions, cache: dict) -> dict[str, Any]:
    """Every measurement of one run folder as a JSON-ready dict."""
    from segdecay.config import load_config
    from segdecay.engine import load_run
    from segdecay.models import output_stride
    from segdecay.spectrum import kernel_spectra

    yaml_config = load_config(run / "config.yaml")
    name = options.checkpoint
    if not (run / f"{name}.pt").is_file():
        name = "best" if name == "last" else "last"
    config, meta, model, dev = load_run(run, name, options.device)
    spec = options.data or config.data
    data, split = _load_split(spec, config, options.split, cache, options.max_images)
    if data.info.num_classes != meta["num_classes"]:
        raise UserError(f"--data {spec}: has {data.info.num_classes} classes but run {run} "
                        f"was trained with {meta['num_classes']}")
    n = meta["num_classes"]
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    side = 2 * output_stride(model)
    example = torch.zeros(1, first.in_channels, side, side, device=dev)
    layers = [asdict(k) for k in kernel_spectra(model, example, options.cutoff,
                                                options.kernel_fft)]
    clean = clean_pass(model, split, n, config, dev, options.cutoff, options.boundary_ratio)
    lows = [{"cutoff": c, "miou": perturbed_miou(model, split, n, config, dev,
                                                 _lowpass_perturb(c, options.lowpass_kind))}
            for c in options.lowpass]
    noise = []
    for i, (band, (lo, hi)) in enumerate(options.bands.items()):
        perturb = _noise_perturb((lo, hi), options.noise_eps, options.seed * 1000 + i)
        noise.append({"band": band, "low": lo, "high": hi,
                      "miou": perturbed_miou(model, split, n, config, dev, perturb)})
    summary_path = run / "summary.json"
    algorithm = None
    if summary_path.is_file():
        try:
            algorithm = json.loads(summary_path.read_text()).get("algorithm")
        except (ValueError, OSError):
            algorithm = None
    return {
        "run": str(run), "weight_decay": yaml_config.weight_decay,
        "optimizer": yaml_config.optimizer, "decay_mode": yaml_config.decay_mode,
        "algorithm": algorithm, "lr": yaml_config.lr, "seed": yaml_config.seed,
        "l1": yaml_config.l1, "dropout": yaml_config.dropout,
        "arch": f"{config.arch}/{config.encoder}", "checkpoint": name, "data": spec,
        "split": options.split, "images": len(split), "class_names": meta["class_names"],
        "kernels": {"cutoff": options.cutoff, "fft_size": options.kernel_fft, "layers": layers},
        "predictions": clean["predictions"],
        "band_reliance": {"clean_miou": clean["miou"], "lowpass": lows, "noise": noise},
        "boundary": {"miou": clean["miou"], "boundary_iou": clean["boundary_iou"],
                     "iou_per_class": clean["iou"],
                     "boundary_iou_per_class": clean["boundary_iou_per_class"],
                     "dilation_px": clean["boundary_dilation_px"]},
    }


# ----------------------------------------------------------------------------- verdict


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


def _layer_fraction(run: dict, key: tuple[int, str]) -> float | None:
    for layer in run["kernels"]["layers"]:
        if (layer["depth"], layer["name"]) == key:
            return layer["low_fraction"]
    return None


def _lam(v: float) -> str:
    return f"lambda={v:g}"


def verdict(runs: list[dict], options: SpectrumOptions) -> dict[str, Any]:
    """Sentences (and the votes behind them) computed from the measured numbers."""
    lams = sorted({r["weight_decay"] for r in runs})
    if len(lams) < 2:
        only = ", ".join(f"{v:g}" for v in lams)
        return {"headline": f"Only one lambda ({only}) was analysed, so there is no trend to "
                "report; pass runs trained with different --weight-decay values.",
                "sentences": [], "votes": {}}
    lo, hi = lams[0], lams[-1]
    sentences, votes = [], {}
    fc = options.cutoff

    # 1. kernels: first layer, and how many layers move which way
    ref = next(r for r in runs if r["weight_decay"] == lo)
    keys = [(layer["depth"], layer["name"]) for layer in ref["kernels"]["layers"]]
    if keys:
        first = ref["kernels"]["layers"][0]
        pts = _by_lambda(runs, lambda r: _layer_fraction(r, keys[0]))
        up = down = 0
        for key in keys:
            series = _by_lambda(runs, lambda r, k=key: _layer_fraction(r, k))
            if len(series) >= 2 and series[0][0] == lo and series[-1][0] == hi:
                d = series[-1][1] - series[0][1]
                up += d > KERNEL_TOL
                down += d < -KERNEL_TOL
        if len(pts) >= 2:
            a, b = pts[0][1], pts[-1][1]
            sentences.append(
                f"The low-frequency energy fraction (radius <= {fc:g} cycles/px) of first-layer "
                f"kernels ({first['name']}, {first['kernel_size'][0]}x{first['kernel_size'][1]})"
                f" {_move(a, b, KERNEL_TOL)} from {a:.3f} at {_lam(lo)} to {b:.3f} at "
                f"{_lam(hi)}; over all {len(keys)} spatial conv layers it rises by more than "
                f"{KERNEL_TOL:g} in {up} and falls by more than {KERNEL_TOL:g} in {down}.")
            votes["kernels"] = 1 if up > down else -1 if down > up else 0

    # 2. predictions: high-frequency energy of the softmax maps relative to the ground truth
    pts = _by_lambda(runs, lambda r: r["predictions"]["high_energy_ratio"])
    if len(pts) >= 2:
        a, b = pts[0][1], pts[-1][1]
        rel = (b - a) / a if a else math.nan
        sentences.append(
            f"The predicted probability maps carry {a:.2f}x the high-frequency energy "
            f"(radius > {fc:g}) of the ground-truth maps at {_lam(lo)} and {b:.2f}x at "
            f"{_lam(hi)}: predictions get "
            + ("smoother" if rel < -RATIO_TOL else "sharper" if rel > RATIO_TOL
               else "neither smoother nor sharper") + " as lambda grows.")
        votes["predictions"] = 1 if rel < -RATIO_TOL else -1 if rel > RATIO_TOL else 0

    # 3. band reliance: mIoU lost to noise in each band and to the strongest low-pass
    def drop(r: dict, kind: str, key) -> float | None:
        br = r["band_reliance"]
        entry = next((e for e in br[kind] if e["band" if kind == "noise" else "cutoff"] == key),
                     None)
        return None if entry is None else br["clean_miou"] - entry["miou"]

    parts = []
    hf_drop = None
    for band in options.bands:
        pts = _by_lambda(runs, lambda r, b=band: drop(r, "noise", b))
        if len(pts) >= 2:
            parts.append(f"{band} band {pts[0][1]:.3f} -> {pts[-1][1]:.3f}")
            if band == "high":
                hf_drop = (pts[0][1], pts[-1][1])
    if parts:
        sentences.append(
            f"Noise of RMS {options.noise_eps:g} (normalized-input units) costs this much val "
            f"mIoU from {_lam(lo)} to {_lam(hi)}: " + "; ".join(parts) + ".")
    if hf_drop is not None:
        d = hf_drop[1] - hf_drop[0]
        votes["band_reliance"] = 1 if d < -MIOU_TOL else -1 if d > MIOU_TOL else 0
    c = min(options.lowpass)
    pts = _by_lambda(runs, lambda r: drop(r, "lowpass", c))
    if len(pts) >= 2:
        sentences.append(
            f"Low-pass filtering the input to {c:g} cycles/px ({options.lowpass_kind}) costs "
            f"{pts[0][1]:.3f} mIoU at {_lam(lo)} and {pts[-1][1]:.3f} at {_lam(hi)}.")

    # 4. boundaries
    bi = _by_lambda(runs, lambda r: r["boundary"]["boundary_iou"])
    mi = _by_lambda(runs, lambda r: r["boundary"]["miou"])
    if len(bi) >= 2 and len(mi) >= 2:
        sentences.append(
            f"Boundary IoU {_move(bi[0][1], bi[-1][1], MIOU_TOL)} from {bi[0][1]:.3f} at "
            f"{_lam(lo)} to {bi[-1][1]:.3f} at {_lam(hi)}, while mIoU goes from "
            f"{mi[0][1]:.3f} to {mi[-1][1]:.3f}.")

    # 5. an underfitting largest lambda loses everything at once: compare with the best too
    if len(mi) >= 3:
        best, best_miou = max(mi, key=lambda p: p[1])
        if best not in (lo, hi) and mi[-1][1] < best_miou - UNDERFIT_GAP:
            def value(get) -> str:
                pts = dict(_by_lambda(runs, get))
                return f"{pts.get(lo, math.nan):.3f} -> {pts.get(best, math.nan):.3f}"

            first_key = keys[0] if keys else None
            sentences.append(
                f"{_lam(hi)} scores {best_miou - mi[-1][1]:.3f} mIoU below the best lambda "
                f"({best:g}, mIoU {best_miou:.3f}), so part of its change is underfitting. "
                f"From {_lam(lo)} to {_lam(best)}: "
                f"first-layer low-frequency fraction "
                f"{value(lambda r: _layer_fraction(r, first_key) if first_key else None)}, "
                f"prediction/truth high-frequency ratio "
                f"{value(lambda r: r['predictions']['high_energy_ratio'])}, mIoU lost to "
                f"high-band noise {value(lambda r: drop(r, 'noise', 'high'))}, boundary IoU "
                f"{value(lambda r: r['boundary']['boundary_iou'])}.")

    said = {"kernels": "the kernels", "predictions": "the predictions",
            "band_reliance": "the noise test"}
    pro = [said[k] for k, v in votes.items() if v > 0]
    con = [said[k] for k, v in votes.items() if v < 0]
    flat = [said[k] for k, v in votes.items() if v == 0]
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
    seeds = max(sum(r["weight_decay"] == v for r in runs) for v in lams)
    caveat = (" One run per lambda: differences smaller than seed-to-seed variation are not "
              "evidence." if seeds == 1 else "")
    mixed = [k for k in RECIPE_KEYS if any(
        len({str(r[k]) for r in runs if r["weight_decay"] == v}) > 1 for v in lams)]
    if mixed:
        caveat += (f" Runs at one lambda differ in {', '.join(mixed)} and are averaged "
                   "together; analyse such variants separately to compare them.")
    headline = (f"From {_lam(lo)} to {_lam(hi)} the measurements {word} the claim that weight "
                f"decay favours low-frequency features ({'; '.join(detail) or 'no measure'})."
                + caveat)
    return {"headline": headline, "sentences": sentences, "votes": votes}


# ----------------------------------------------------------------------------- entry point


def run_spectrum(paths: Sequence[str | Path], out: str | Path,
                 options: SpectrumOptions | None = None, quiet: bool = False) -> dict[str, Any]:
    """Analyse every run under ``paths``; write OUT/spectrum.json and OUT/report.html."""
    options = options or SpectrumOptions()
    options.validate()
    runs, skipped = find_runs(paths)
    say = (lambda *_: None) if quiet else print
    if options.data is None:
        from segdecay.config import load_config

        specs = {load_config(r / "config.yaml").data for r in runs}
        if len(specs) > 1:
            raise UserError("the runs were trained on different data ("
                            + ", ".join(sorted(specs)) + "); pass --data SPEC")
    torch.manual_seed(options.seed)
    cache: dict = {}
    results = []
    for i, run in enumerate(runs, 1):
        result = analyse_run(run, options, cache)
        results.append(result)
        br = result["band_reliance"]
        say(f"[{i}/{len(runs)}] {run}: lambda={result['weight_decay']:g} mIoU "
            f"{br['clean_miou']:.4f} boundary IoU {result['boundary']['boundary_iou']:.4f} "
            f"first-layer low fraction "
            f"{result['kernels']['layers'][0]['low_fraction']:.3f}"
            if result["kernels"]["layers"] else f"[{i}/{len(runs)}] {run}: done")
    results.sort(key=lambda r: (r["weight_decay"], r["run"]))
    settings = asdict(options)
    settings["bands"] = {k: list(v) for k, v in options.bands.items()}
    settings["noise_definition"] = ("per image, L2 norm over C x H x W = noise_eps * "
                                    "sqrt(C * H * W) in normalized-input units (RMS noise_eps)")
    payload = {"settings": settings, "runs": results, "skipped": skipped,
               "verdict": verdict(results, options)}
    out = Path(out)
    write_json(out / "spectrum.json", payload)
    from segdecay.spectrum_report import write_spectrum_report

    write_spectrum_report(out, payload)
    say(payload["verdict"]["headline"])
    for s in payload["verdict"]["sentences"]:
        say("  " + s)
    say(f"wrote {out / 'spectrum.json'}, {out / 'report.html'}")
    return payload
