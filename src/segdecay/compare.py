"""``segdecay compare``: variants of one training recipe, over seeds, on the same data.

A variant is a name and a set of train options merged over the base config, so every
variant gets the same data, split, seeds, epochs and augmentation and differs only where it
says so. Each (variant, seed) is an ordinary run folder under ``OUT/runs/NAME/seedS``, so a
rerun skips finished runs and resumes interrupted ones, and ``--workers N`` processes share
the list by claiming runs with a lock file each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig, from_dict, load_yaml
from segdecay.errors import UserError
from segdecay.interrupt import TrainingInterrupted
from segdecay.resources import pid_alive

PRESETS = ("regularizers", "imbalance")
DROPOUT = 0.2  # the regularizers preset's dropout probability


@dataclass
class Variant:
    """A named set of train options; ``options`` are TrainConfig keys."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def config(self, base: TrainConfig) -> TrainConfig:
        """The base config with this variant's options merged over it."""
        return from_dict(self.options, f"--variant '{self.name}'", base)


@dataclass
class CompareOptions:
    """What to compare and how."""

    variants: list[Variant]
    seeds: list[int]
    baseline: str | None = None
    retune_lr: list[float] | None = None
    retune_epochs: int | None = None
    workers: int = 1
    per_image: bool = True


class _Raising(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit; a variant is user input
        raise UserError(message)


def _option_parser() -> argparse.ArgumentParser:
    from segdecay.cli import add_train_options

    parser = _Raising(prog="--variant", add_help=False)
    add_train_options(parser)
    return parser


def parse_variant(text: str) -> Variant:
    """``'name: --weight-decay 1e-3 --dropout 0.2'`` -> Variant (options checked)."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UserError(f"--variant '{text}': expected 'NAME: --option value ...' with a "
                        "plain name")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise UserError(f"--variant '{text}': {exc}") from exc
    try:
        parsed = _option_parser().parse_args(words)
    except UserError as exc:
        raise UserError(f"--variant '{name}': {exc}") from exc
    variant = Variant(name, {k: v for k, v in vars(parsed).items()})
    variant.config(TrainConfig())  # values checked now, not after hours of other runs
    return variant


def load_variants(path: str | Path) -> list[Variant]:
    """Variants from YAML: ``variants: {NAME: {option: value}}`` or a list of strings."""
    values = load_yaml(path).get("variants")
    if isinstance(values, dict):
        out = []
        for name, options in values.items():
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise UserError(f"--variants {path}: variant '{name}' must map options to "
                                "values")
            v = Variant(str(name), {str(k).replace("-", "_"): o for k, o in options.items()})
            v.config(TrainConfig())
            out.append(v)
        return out
    if isinstance(values, list):
        return [parse_variant(str(v)) for v in values]
    raise UserError(f"--variants {path}: expected a 'variants:' mapping or list")


def initial_abs_weight(config: TrainConfig, num_classes: int) -> float:
    """Mean |w| over the decayed tensors of a fresh model (L1 strength matching L2)."""
    import torch

    from segdecay.models import build_model
    from segdecay.regularization import param_groups

    torch.manual_seed(config.seed)
    model = build_model(config.arch, config.encoder, num_classes)
    groups = param_groups(model, config.weight_decay or 1.0, config.no_decay,
                          config.decay_rules)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    total = sum(p.detach().abs().sum().item() for p in decayed)
    return total / max(1, sum(p.numel() for p in decayed))


def preset_variants(preset: str, base: TrainConfig, lam: float, num_classes: int) -> list[Variant]:
    """The built-in comparisons at decay strength ``lam``, each regularizer as strong per step.

    L1's alpha is set so its initial shrinkage per step equals L2's: alpha = lam * mean|w0|.
    Under SGD momentum beta a coupled decay passes through the momentum buffer and shrinks
    by lr·lam/(1-beta) per step, a decoupled one by lr·lam: the decoupled variants get
    lam/(1-beta), the same timescale tau (see decay.json), or they would be 1/(1-beta)
    times weaker (10x at beta 0.9) and the comparison would be of strengths, not kinds.
    """
    if preset == "regularizers":
        alpha = lam * initial_abs_weight(base, num_classes)
        sgd_momentum = base.momentum if base.optimizer.startswith("sgd") else 0.0
        lam_decoupled = float(f"{lam / (1.0 - sgd_momentum):.12g}")  # 0.1, not 0.10000000000000002
        off = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0}
        return [
            Variant("none", dict(off)),
            Variant("l2-coupled", {**off, "weight_decay": lam, "decay_mode": "coupled"}),
            Variant("decoupled", {**off, "weight_decay": lam_decoupled,
                                  "decay_mode": "decoupled"}),
            Variant("l1", {**off, "l1": alpha}),
            Variant("dropout", {**off, "dropout": DROPOUT}),
            Variant("decoupled+dropout", {**off, "weight_decay": lam_decoupled,
                                          "decay_mode": "decoupled", "dropout": DROPOUT}),
        ]
    if preset == "imbalance":
        same = {"weight_decay": lam}
        return ([Variant(f"ce-{w}", {**same, "loss": "ce", "class_weights": w})
                 for w in ("none", "inverse", "median", "enet")]
                + [Variant(loss, {**same, "loss": loss, "class_weights": "none"})
                   for loss in ("dice", "focal", "ce+dice")])
    raise UserError(f"--preset '{preset}': choose one of {', '.join(PRESETS)}")


def lambda_from_tune(run: str | Path) -> float:
    """The lambda a finished ``segdecay tune`` chose."""
    path = Path(run) / "tune.json"
    if not path.is_file():
        raise UserError(f"--from-tune {run}: no tune.json there (run segdecay tune first)")
    try:
        chosen = json.loads(path.read_text(encoding="utf-8")).get("chosen")
    except ValueError as exc:
        raise UserError(f"--from-tune {path}: not valid JSON") from exc
    if not isinstance(chosen, (int, float)):
        raise UserError(f"--from-tune {path}: the study has not chosen a lambda yet")
    return float(chosen)


# ------------------------------------------------------------------ running


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Where one (variant, seed) run lives."""
    return out / "runs" / variant / f"seed{seed}"


def _finished(folder: Path) -> bool:
    return (folder / "summary.json").is_file()


def _claim(folder: Path) -> bool:
    """Take the run for this process (a lock file); a dead local owner's claim is taken over."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.claim"
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = lock.read_text().strip().rsplit(":", 1)
            except (OSError, ValueError):
                return False
            if host == socket.gethostname() and not pid_alive(int(pid)):
                lock.unlink(missing_ok=True)
                continue
            return host == socket.gethostname() and int(pid) == os.getpid()
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def _release(folder: Path) -> None:
    (folder.parent / f".{folder.name}.claim").unlink(missing_ok=True)


def retuned_lr(base: TrainConfig, variant: Variant, options: CompareOptions, out: Path,
               data) -> float:
    """The best lr of a short grid for this variant (first seed, val split)."""
    from segdecay.engine import Log, train

    best, best_lr = -1.0, base.lr
    epochs = options.retune_epochs or max(1, base.epochs // 3)
    for lr in options.retune_lr or []:
        folder = out / "lr-retune" / variant.name / f"lr{lr:g}"
        config = replace(variant.config(base), lr=lr, epochs=epochs, seed=options.seeds[0])
        while not _finished(folder):  # another worker may be training this one: wait
            if _claim(folder):
                try:
                    if not _finished(folder):
                        train(config, folder, resume=(folder / "last.pt").is_file(),
                              data=data, log=Log(quiet=True))
                finally:
                    _release(folder)
            else:
                time.sleep(5)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
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
    from segdecay.engine import Log, train

    if threads:
        torch.set_num_threads(threads)
    if data is None:
        data = load_dataset_for(base)
    lrs: dict[str, float] = {}
    for variant, seed in jobs(options):
        folder = run_dir(out, variant.name, seed)
        if _finished(folder) or not _claim(folder):
            continue
        try:
            if _finished(folder):
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
            _release(folder)


def _worker_entry(base: dict, options: dict, out: str, threads: int, progress: bool) -> None:
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
    from segdecay.data import load_dataset_for

    data = data if data is not None else load_dataset_for(base)  # checked up front, once
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    say(f"compare: {len(names)} variants x {len(options.seeds)} seeds into {out}")
    if options.workers == 1:
        run_worker(base, options, out, quiet=True, progress=not quiet, data=data)
    else:
        threads = max(1, (os.cpu_count() or 1) // options.workers)
        ctx = multiprocessing.get_context("spawn")
        payload = asdict(options)
        procs = [ctx.Process(target=_worker_entry,
                             args=(asdict(base), payload, str(out), threads, not quiet))
                 for _ in range(options.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    from segdecay.compare_report import summarize_compare

    return summarize_compare(base, options, out, say, data)
