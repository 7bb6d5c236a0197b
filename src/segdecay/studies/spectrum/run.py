"""``segdecay spectrum``: test "weight decay favours low-frequency features" on trained runs.

Analyse every run under the given folders (:mod:`.analyse`), compute the verdict from the
numbers (:mod:`.verdict`), and write OUT/spectrum.json and OUT/report.html.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from segdecay.config import load_config
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.runs.folder import find_runs
from segdecay.studies.spectrum.analyse import analyse_run
from segdecay.studies.spectrum.options import SpectrumOptions
from segdecay.studies.spectrum.report import write_spectrum_report
from segdecay.studies.spectrum.verdict import verdict
from segdecay.studies.workers import printer


def run_spectrum(paths: Sequence[str | Path], out: str | Path,
                 options: SpectrumOptions | None = None, quiet: bool = False) -> dict[str, Any]:
    """Analyse every run under ``paths``; write OUT/spectrum.json and OUT/report.html."""
    options = options or SpectrumOptions()
    options.validate()
    runs, skipped = find_runs(paths)
    say = printer(quiet)
    if options.data is None:
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
    write_spectrum_report(out, payload)
    say(payload["verdict"]["headline"])
    for s in payload["verdict"]["sentences"]:
        say("  " + s)
    say(f"wrote {out / 'spectrum.json'}, {out / 'report.html'}")
    return payload
