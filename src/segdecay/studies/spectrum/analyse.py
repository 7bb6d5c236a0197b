"""The measurements of one trained run for ``segdecay spectrum``.

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

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segdecay.config import load_config
from segdecay.data import load_dataset_for
from segdecay.data.base import IGNORE_INDEX
from segdecay.errors import UserError
from segdecay.models import output_stride
from segdecay.runs.folder import is_finished, load_run, read_summary
from segdecay.studies.spectrum.measures import (
    BoundaryIoU,
    band_noise,
    kernel_spectra,
    lowpass,
    power_spectrum_2d,
    radial_profile,
    split_energy,
)
from segdecay.studies.spectrum.options import SpectrumOptions
from segdecay.training.evaluate import Scoring, evaluate_split

Perturb = Callable[[torch.Tensor, int], torch.Tensor]  # (normalized batch, batch index)


def perturbed_miou(model: nn.Module, split, num_classes: int, config, device: torch.device,
                   perturb: Perturb) -> float:
    """Val mIoU when ``perturb`` changes each normalized input batch before the forward."""
    return evaluate_split(model, split, num_classes, config, device,
                          scoring=Scoring(perturb=perturb))[0]["miou"]


def _noise_perturb(band: tuple[float, float], eps: float, seed: int) -> Perturb:
    """Adds band noise; the generator restarts per call site so every run gets the same noise."""
    gen = torch.Generator().manual_seed(seed)

    def apply(x: torch.Tensor, _batch: int) -> torch.Tensor:
        return x + band_noise(tuple(x.shape), band, eps, gen).to(x.device, x.dtype)

    return apply


def _lowpass_perturb(cutoff: float, kind: str) -> Perturb:
    return lambda x, _b: lowpass(x, cutoff, kind)


def clean_pass(model: nn.Module, split, num_classes: int, config, device: torch.device,
               cutoff: float, boundary_ratio: float) -> dict[str, Any]:
    """mIoU, Boundary IoU and prediction/ground-truth spectra in one pass over the split."""
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

    result, _ = evaluate_split(model, split, num_classes, config, device,
                               scoring=Scoring(on_batch=spectra))
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


def _load_split(spec: str, config, split: str, cache: dict, max_images: int | None):
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
    algorithm = None
    if is_finished(run):
        try:
            algorithm = read_summary(run).get("algorithm")
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


