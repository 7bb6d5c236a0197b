"""``segdecay compare``: variants of one training recipe, over seeds, on the same data.

Each (variant, seed) is an ordinary run folder under ``OUT/runs/NAME/seedS``, so a rerun
skips finished runs and resumes interrupted ones, and ``--workers N`` processes share the
list by claiming runs with a lock file each (:mod:`segdecay.studies.workers`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.errors import UserError
from segdecay.runs.folder import is_finished, read_summary
from segdecay.studies.compare.options import CompareOptions, Variant
from segdecay.studies.compare.summary import summarize_compare
from segdecay.studies.compare.variants import run_dir
from segdecay.studies.workers import claim, printer, release, spawn_workers
from segdecay.training import Log, train
from segdecay.training.interrupt import TrainingInterrupted


def retuned_lr(base: TrainConfig, variant: Variant, options: CompareOptions, out: Path,
               data) -> float:
    """The best lr of a short grid for this variant (first seed, val split)."""
    best, best_lr = -1.0, base.lr
    epochs = options.retune_epochs or max(1, base.epochs // 3)
    for lr in options.retune_lr or []:
        folder = out / "lr-retune" / variant.name / f"lr{lr:g}"
        config = replace(variant.config(base), lr=lr, epochs=epochs, seed=options.seeds[0])
        while not is_finished(folder):  # another worker may be training this one: wait
            if claim(folder):
                try:
                    if not is_finished(folder):
                        train(config, folder, resume=(folder / "last.pt").is_file(),
                              data=data, log=Log(quiet=True))
                finally:
                    release(folder)
            else:
                time.sleep(5)
        summary = read_summary(folder)
        score = summary.get("final_val_miou") if summary.get("status", "completed") == \
            "completed" else None
        if score is not None and score > best:
            best, best_lr = score, lr
    return best_lr


def jobs(options: CompareOptions) -> list[tuple[Variant, int]]:
    """Every (variant, seed), seeds outermost so a partial study is balanced."""
    return [(v, s) for s in options.seeds for v in options.variants]


def run_worker(base: TrainConfig, options: CompareOptions, out: Path, quiet: bool = True,
               threads: int | None = None, progress: bool = False, data=None) -> None:
    """Train every unclaimed, unfinished (variant, seed) run (``data``: the loaded base)."""
    import torch

    from segdecay.data import load_dataset_for
    if threads:
        torch.set_num_threads(threads)
    if data is None:
        data = load_dataset_for(base)
    lrs: dict[str, float] = {}
    for variant, seed in jobs(options):
        folder = run_dir(out, variant.name, seed)
        if is_finished(folder) or not claim(folder):
            continue
        try:
            if is_finished(folder):
                continue
            config = variant.config(base)
            if options.retune_lr:
                if variant.name not in lrs:
                    lrs[variant.name] = retuned_lr(base, variant, options, out, data)
                config = replace(config, lr=lrs[variant.name])
            config = replace(config, seed=seed)
            started = time.perf_counter()
            try:
                summary = train(config, folder, resume=(folder / "last.pt").is_file(),
                                data=data, log=Log(quiet=quiet))
            except TrainingInterrupted as stop:
                raise TrainingInterrupted(stop.signum, stop.out, stop.where, stop.saved,
                                          "the same segdecay compare command") from None
            if progress:
                score = summary.get("final_val_miou")
                state = (f"val mIoU {score:.4f}" if summary.get("status", "completed")
                         == "completed" else f"{summary.get('status')}: {summary.get('reason')}")
                print(f"  {variant.name} seed {seed}: {state} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        finally:
            release(folder)


def worker_entry(base: dict, options: dict, out: str, progress: bool, threads: int) -> None:
    """A spawned worker process (plain arguments: they cross the process boundary)."""
    options["variants"] = [Variant(**v) for v in options["variants"]]
    run_worker(TrainConfig(**base), CompareOptions(**options), Path(out), True, threads,
               progress)


def run_compare(base: TrainConfig, options: CompareOptions, out: str | Path,
                quiet: bool = False, data=None) -> dict[str, Any]:
    """Run (or resume) every variant x seed with ``options.workers`` processes, then report.

    ``data`` is the base config's dataset if the caller has loaded it already.
    """
    out = Path(out)
    names = [v.name for v in options.variants]
    if not names:
        raise UserError("compare needs at least one --variant, --variants FILE or --preset")
    if len(set(names)) != len(names):
        raise UserError(f"variant names must differ: {', '.join(names)}")
    if options.baseline is not None and options.baseline not in names:
        raise UserError(f"--baseline '{options.baseline}' is not a variant "
                        f"({', '.join(names)})")
    if not options.seeds:
        raise UserError("--seeds: need at least one seed")
    if options.workers < 1:
        raise UserError(f"--workers {options.workers}: must be at least 1")
    data = data if data is not None else load_dataset_for(base)  # checked up front, once
    out.mkdir(parents=True, exist_ok=True)
    say = printer(quiet)
    say(f"compare: {len(names)} variants x {len(options.seeds)} seeds into {out}")
    if options.workers == 1:
        run_worker(base, options, out, quiet=True, progress=not quiet, data=data)
    else:
        spawn_workers(worker_entry, (asdict(base), asdict(options), str(out), not quiet),
                      options.workers)
    return summarize_compare(base, options, out, say, data)
