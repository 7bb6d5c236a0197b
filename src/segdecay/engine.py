"""The training loop: flat and readable, in the manner of torchvision's reference script.

One run = one folder. Every epoch rewrites ``metrics.csv`` and ``last.pt`` atomically; the
checkpoint holds model, optimizer, scheduler, RNG states, history and clock, so ``--resume``
continues exactly where the last finished epoch left off. SIGINT/SIGTERM stop after the
current step with a checkpoint that also holds the position inside the epoch (the epoch's
permutation, the next batch, the running sums), so resuming it is exact too.

Under ``torchrun`` the same loop trains data-parallel (DDP): ``--batch-size`` is the global
batch, each rank takes its slice of every batch, counts are all-reduced, and only rank 0
writes the run folder (see :mod:`segdecay.distributed`).

A run that diverges (non-finite loss, or weights growing ``DIVERGENCE_NORM_FACTOR`` times
their initial norm) stops with ``"status": "diverged"`` and the reason in ``summary.json``,
and ``train`` returns that summary instead of raising, so a tuner can record the trial as
failed and go on.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segdecay import distributed
from segdecay.checkpoint import load_checkpoint, save_checkpoint
from segdecay.config import MINIMUM_COUNTS, TrainConfig, save_config
from segdecay.data import load_dataset_for
from segdecay.data.base import IGNORE_INDEX, SegData, SegSplit
from segdecay.data.transforms import augment_batch, get_preset, parse_size
from segdecay.errors import UserError
from segdecay.fileio import atomic_write_text, write_json
from segdecay.hardware import resolve_amp
from segdecay.inference import iterate_batches, logits_of_input, normalized_input
from segdecay.interrupt import StopRequest, TrainingInterrupted
from segdecay.losses import build_loss, class_weights
from segdecay.metrics import SegmentationMetrics, format_iou_table
from segdecay.models import build_model, output_stride
from segdecay.optim import (
    algorithm_name,
    build_optimizer,
    build_scheduler,
    decay_report,
    default_decay_mode,
)
from segdecay.regularization import describe_split, param_groups, regularization_term, weight_norm

METRIC_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "data_loss", "reg_term", "train_miou",
    "val_miou", "val_loss", "weight_norm", "decayed_norm", "seconds",
]


DIVERGENCE_NORM_FACTOR = 1e4
"""A run whose weight norm exceeds this multiple of its initial norm has diverged."""


def divergence_reason(
    epoch: int, loss: float, norm: float, initial_norm: float, config: TrainConfig
) -> str | None:
    """Why the run diverged at the end of ``epoch`` (1-based), or None if it is healthy."""
    advice = f"(lr {config.lr:g}, lambda {config.weight_decay:g}); lower --lr or --weight-decay"
    if not math.isfinite(loss):
        return f"train loss is {loss} at epoch {epoch} {advice}"
    if not math.isfinite(norm):
        return f"weight norm is {norm} at epoch {epoch} {advice}"
    if norm > DIVERGENCE_NORM_FACTOR * initial_norm:
        return (f"weight norm {norm:.4g} at epoch {epoch} exceeds {DIVERGENCE_NORM_FACTOR:g} x "
                f"its initial {initial_norm:.4g} {advice}")
    return None


def _oom_message(config: TrainConfig) -> str:
    """What to change when a batch does not fit on the GPU."""
    size = "x".join(map(str, config.crop or config.size or [])) or "native"
    total = ""
    if torch.cuda.is_available():
        dev = torch.cuda.current_device()
        total = f" ({torch.cuda.get_device_properties(dev).total_memory / 1024**3:.1f} GiB)"
    return (f"out of GPU memory{total} with --batch-size {config.batch_size} and input {size}; "
            f"try a smaller --batch-size, a smaller --size or --crop, --amp, or a smaller "
            f"--eval-size")


def _stoppable(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``train`` with SIGINT/SIGTERM turned into a flag (``_ACTIVE.stop``) that the loop checks
    between steps, and turn a CUDA out-of-memory error into a UserError that says what to
    change (raised outside the except block so the failed step's tensors are freed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        outer = getattr(_ACTIVE, "stop", None)
        _ACTIVE.stop = StopRequest()
        try:
            with _ACTIVE.stop:
                return fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            pass
        finally:
            _ACTIVE.stop = outer
        torch.cuda.empty_cache()
        raise UserError(_oom_message(args[0] if args else kwargs["config"]))

    return wrapper


_ACTIVE = threading.local()  # the StopRequest of the train() running in this thread


class Log:
    """Progress for people: tqdm bars on a terminal, plain lines otherwise, nothing if quiet."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, text: str) -> None:
        """One plain log line."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def bar(self, total: int, desc: str):
        """A tqdm bar on a terminal, else a silent stand-in with the same methods."""
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, file=self.stream,
                    disable=self.quiet or not self.tty, dynamic_ncols=True)


def library_versions() -> dict[str, str]:
    """Versions that decide the numbers of a run."""
    import numpy
    import segmentation_models_pytorch as smp

    import segdecay

    return {
        "segdecay": segdecay.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an unavailable CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device '{name}': {exc}") from exc


def resolve_train_size(config: TrainConfig, split: SegSplit, stride: int) -> tuple[int, int]:
    """Input size of training batches: crop, else size, else the images' common size."""
    hw = parse_size(config.crop, "--crop") or parse_size(config.size, "--size")
    if hw is None:
        hw = split.uniform_size()
        if hw is None:
            raise UserError("training images differ in size: pass --size HxW (and maybe --crop)")
    if hw[0] % stride or hw[1] % stride:
        fix = "x".join(str(max(stride, round(v / stride) * stride)) for v in hw)
        raise UserError(
            f"--size/--crop {hw[0]}x{hw[1]}: sides must be multiples of {stride} for "
            f"{config.arch}/{config.encoder}; try {fix}"
        )
    return hw


def _train_batch(
    split: SegSplit,
    idx: torch.Tensor,
    config: TrainConfig,
    hw: tuple[int, int],
    gen: torch.Generator,
    device: torch.device,
    rows: slice | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented batch ``idx``, or its ``rows`` (a data-parallel rank's share).

    Every rank augments the whole global batch, so ``gen`` advances on each rank exactly as
    in a single process (the next epoch's permutation agrees) and each image gets the random
    transform it would get there; the extra work is a resampling per image, small next to a
    training step.
    """
    preset = get_preset(config.augment)
    size = parse_size(config.size, "--size")
    crop = parse_size(config.crop, "--crop")
    frac = (crop[0] / size[0], crop[1] / size[1]) if crop and size else (1.0, 1.0)
    stacked = split.stacked()
    if stacked is not None:
        images, masks = stacked[0][idx].to(device), stacked[1][idx].to(device)
        x, m = augment_batch(images, masks, hw, preset, gen, frac)
    else:
        parts = [
            augment_batch(split.images[i][None].to(device), split.masks[i][None].to(device),
                          hw, preset, gen, frac)
            for i in idx.tolist()
        ]
        x, m = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if rows is not None:
        x, m = x[rows], m[rows]
    return x, m


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: SegSplit,
    num_classes: int,
    config: TrainConfig,
    device: torch.device,
    loss_fn: nn.Module | None = None,
    *,
    dist: distributed.DistContext | None = None,
    perturb: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """Metrics over the whole split at label resolution, and the mean loss per image.

    With a data-parallel ``dist``, rank r scores batches r, r+N, ... (each batch computed
    exactly as one process computes it) and the confusion counts and per-batch losses are
    summed over ranks, so every rank gets the single-process result. ``model`` is the bare
    model, not its DDP wrapper: ranks run different numbers of batches here.

    ``perturb(x, batch_index)`` changes each normalized input batch before the forward (the
    spectrum's filters and noise); ``on_batch(logits, target)`` sees each batch this rank
    scored (per-image scores, prediction spectra), so analyses share this one loop.
    """
    ctx = dist or distributed.DistContext()
    model.eval()
    metrics = SegmentationMetrics(num_classes, IGNORE_INDEX, device=device)
    eval_hw = parse_size(config.eval_size, "--eval-size")
    stride = output_stride(model)
    batch_losses: list[tuple[int, torch.Tensor]] = []
    k = 0
    for k, (images, masks) in enumerate(
        iterate_batches(split, max(1, config.batch_size), torch.device("cpu")), start=1
    ):
        if (k - 1) % ctx.world_size != ctx.rank:
            continue
        images, masks = images.to(device), masks.to(device)
        x = normalized_input(images, eval_hw)
        if perturb is not None:
            x = perturb(x, k - 1)
        logits = logits_of_input(model, x, tuple(masks.shape[-2:]), stride,
                                 channels_last=config.channels_last, amp=config.amp)
        target = masks.long()
        metrics.update(logits, target)
        if on_batch is not None:
            on_batch(logits, target)
        if loss_fn is not None:
            batch_losses.append((k - 1, loss_fn(logits, target).detach() * images.shape[0]))
    per_batch = torch.zeros(k, device=device)
    for slot, value in batch_losses:
        per_batch[slot] = value
    if ctx.enabled:
        ctx.all_reduce_sum(metrics.confusion)
        ctx.all_reduce_sum(per_batch)  # one non-zero entry per slot: exact
    loss_sum = torch.zeros((), device=device)
    for value in per_batch:  # in batch order, as one process adds them
        loss_sum += value
    return metrics.compute(), float(loss_sum) / max(1, len(split))


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """RNG states for an exact resume: CPU, batch generator, and the training GPU's only
    (reading every visible GPU's would create a CUDA context on each, from every process)."""
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["generator"].cpu())
    if device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"].cpu(), device)
    elif device.type == "cuda" and "cuda" in state:  # checkpoints of segdecay <= 0.1.0
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def compiled_or_eager(net: nn.Module, log: Log) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(net)``, falling back to eager (with one log line) if compiling fails.

    Compilation happens at the first call, so the fallback must wrap calls, not creation.
    """
    try:
        compiled = torch.compile(net)
    except Exception as exc:  # noqa: BLE001 - no compiler backend on this platform
        log.line(f"torch.compile unavailable ({type(exc).__name__}: {exc}); training eager")
        return net
    current = {"fn": compiled}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if current["fn"] is net:
            return net(x)
        try:
            return current["fn"](x)
        except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor
            log.line(f"torch.compile failed ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}); training eager")
            current["fn"] = net
            return net(x)

    return forward


@_stoppable
def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data: SegData | None = None,
    log: Log | None = None,
    stop_after_epochs: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    checkpoints: bool = True,
) -> dict[str, Any]:
    """Train one model into the run folder ``out`` and return its summary.

    ``stop_after_epochs`` ends this call early after that many epochs in total, as an
    interruption would (used to test ``resume``). ``on_epoch`` sees each finished epoch's
    metrics row after its checkpoint is written; it may raise to stop the run (a pruner).
    ``checkpoints=False`` writes no .pt files (cross-validation folds are not resumed).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; they train one model
    data-parallel with a global ``batch_size`` (see :mod:`segdecay.distributed`), only rank 0
    logs and writes ``out``, and every rank returns the same summary. ``on_epoch`` runs on
    every rank with the same row.

    Returns the summary, whose ``status`` is ``"completed"`` or ``"diverged"`` (with a
    ``reason``). SIGINT/SIGTERM raise :class:`TrainingInterrupted` after the current step,
    once ``last.pt`` can resume exactly; a CUDA out-of-memory error becomes a UserError.
    """
    out = Path(out)
    ctx = distributed.from_env()
    log = log if ctx.is_main else Log(quiet=True)
    log = log or Log()
    stop: StopRequest = getattr(_ACTIVE, "stop", None) or StopRequest()
    for name, low in MINIMUM_COUNTS.items():  # the API path gets the CLI's checks
        value = getattr(config, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be at least {low}")
    if resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"--resume: {out / 'last.pt'} does not exist; nothing to resume")
    elif (out / "last.pt").exists():
        raise UserError(
            f"--out {out}: holds a run already; pass --resume to continue it or choose "
            "another folder (nothing was overwritten)"
        )
    device = distributed.device_for_rank(resolve_device(config.device), config.device, ctx)
    config = replace(config, amp=resolve_amp(config.amp, device))  # config.yaml says which
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    if data is None:
        data = load_dataset_for(config)
    train_split = data.train
    if len(train_split) == 0:
        raise UserError(f"--data {config.data}: the training split is empty")
    n = len(train_split)
    batch_size = min(config.batch_size, n)  # global: images per step over all processes
    local_batch = distributed.local_batch_size(batch_size, config.batch_size, n,
                                               ctx.world_size)
    with distributed.process_group(ctx, device):
        return _fit(config, out, ctx, device, gen, data, batch_size, local_batch, log, stop,
                    resume=resume, stop_after_epochs=stop_after_epochs, on_epoch=on_epoch,
                    checkpoints=checkpoints)


def _fit(
    config: TrainConfig,
    out: Path,
    ctx: distributed.DistContext,
    device: torch.device,
    gen: torch.Generator,
    data: SegData,
    batch_size: int,
    local_batch: int,
    log: Log,
    stop: StopRequest,
    *,
    resume: bool,
    stop_after_epochs: int | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    checkpoints: bool,
) -> dict[str, Any]:
    """The body of :func:`train`, inside the process group of a data-parallel run."""
    info = data.info
    train_split = data.train
    n = len(train_split)
    main = ctx.is_main  # rank 0 writes the run folder; every rank computes the same numbers
    model = build_model(config.arch, config.encoder, info.num_classes, dropout=config.dropout,
                        encoder_weights=config.encoder_weights)
    stride = output_stride(model)
    hw = resolve_train_size(config, train_split, stride)
    if config.sync_bn and ctx.enabled:
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    # Fixed by the seed (and pretrained weights), so a resumed run computes the same value.
    initial_norm = weight_norm(p for p in model.parameters())
    if ctx.enabled:  # weights came from config.seed; dropout masks differ per rank
        torch.manual_seed(distributed.rank_seed(config.seed, ctx.rank))

    mode = config.decay_mode or default_decay_mode(config.optimizer)
    resolved = replace(config, decay_mode=mode)
    groups = param_groups(model, config.weight_decay, no_decay=config.no_decay,
                          rules=config.decay_rules)
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay, mode,
                                momentum=config.momentum, groups=groups)
    steps_per_epoch = max(1, n // batch_size)
    total_steps = config.steps or config.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = build_scheduler(optimizer, total_steps, config.schedule, warmup)

    weights = class_weights(train_split.masks, info.num_classes, config.class_weights,
                            IGNORE_INDEX)
    loss_fn = build_loss(config.loss, info.num_classes,
                         weights.to(device) if weights is not None else None, IGNORE_INDEX)
    decay = decay_report(optimizer, config.optimizer, total_steps=total_steps,
                         steps_per_epoch=steps_per_epoch, schedule=config.schedule,
                         warmup_steps=warmup, momentum=config.momentum)
    penalty_l2 = config.weight_decay if mode == "penalty" else 0.0
    dataset_meta = {"name": info.name, "num_classes": info.num_classes,
                    "class_names": list(info.class_names),
                    "palette": [list(c) for c in info.palette]}

    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(resolved, out / "config.yaml")
        write_json(out / "decay.json", {
            "algorithm": algorithm_name(config.optimizer, mode),
            "optimizer": config.optimizer,
            "decay_mode": mode,
            "weight_decay": config.weight_decay,
            "l1": config.l1,
            "no_decay": config.no_decay,
            "decay_rules": list(config.decay_rules),
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "batch_size": batch_size,
            "world_size": ctx.world_size,
            "class_weights": weights.tolist() if weights is not None else None,
            "groups": decay,
        })

    history: list[dict] = []
    start_epoch, step, best, train_seconds = 0, 0, -1.0, 0.0
    position: dict[str, Any] | None = None  # where inside an epoch an interruption stopped

    def resume_state(epoch_done: int, **inside: Any) -> dict[str, Any]:
        """What ``last.pt`` holds for an exact resume; ``inside`` adds a mid-epoch position.

        A collective under DDP (every rank calls it): ``rank_rng`` holds each rank's RNG
        states, since their dropout streams differ."""
        rng = _rng_state(gen, device)
        extra = {"rank_rng": ctx.gather(rng)} if ctx.enabled else {}
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng,
            "epoch": epoch_done, "step": step, "history": history, "best_miou": best,
            "train_seconds": train_seconds, "config": resolved.to_dict(),
            "dataset": dataset_meta, "world_size": ctx.world_size, **extra, **inside,
        }

    def run_summary(status: str, **results: Any) -> dict[str, Any]:
        """summary.json: what ran (shared by completed and diverged runs), then results."""
        return {
            "status": status, "run": str(out), "data": config.data, "seed": config.seed,
            "algorithm": algorithm_name(config.optimizer, mode), "decay_mode": mode,
            "weight_decay": config.weight_decay, "l1": config.l1, "epochs": epochs,
            "steps": step, "train_seconds": train_seconds, "world_size": ctx.world_size,
            **results, "versions": library_versions(),
        }

    if resume:
        # Every rank reads the checkpoint (the run folder must be on a filesystem they all
        # see). CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
        state = load_checkpoint(out / "last.pt", map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], gen, device)
        ranks_rng = state.get("rank_rng")
        if ctx.enabled:
            if ranks_rng is not None and len(ranks_rng) == ctx.world_size:
                _set_rng_state(ranks_rng[ctx.rank], gen, device)
            else:  # another number of processes: fresh per-rank dropout streams
                torch.manual_seed(distributed.rank_seed(config.seed + state["step"], ctx.rank))
        start_epoch, step = state["epoch"], state["step"]
        history, best = state["history"], state["best_miou"]
        train_seconds = state["train_seconds"]
        if state.get("next_batch") is not None:
            position = {k: state[k] for k in ("perm", "next_batch", "epoch_sums", "epoch_count",
                                              "epoch_confusion")}
            log.line(f"resuming {out} in epoch {start_epoch + 1}/{epochs} at batch "
                     f"{position['next_batch'] + 1}/{steps_per_epoch}")
        else:
            log.line(f"resuming {out} at epoch {start_epoch}/{epochs}")
    net = distributed.wrap_model(model, ctx, device)  # DDP for the training steps
    if config.compile:
        net = compiled_or_eager(net, log)
    rows = slice(ctx.rank * local_batch, (ctx.rank + 1) * local_batch) if ctx.enabled else None

    log.line(f"data {info.name}: {n} train / {len(data.val)} val images, "
             f"{info.num_classes} classes, input {hw[0]}x{hw[1]}, device {device}")
    if ctx.enabled:
        log.line(f"data-parallel: {ctx.world_size} processes x {local_batch} images = global "
                 f"batch {batch_size}"
                 + (", SyncBatchNorm" if config.sync_bn else ", BatchNorm per process"))
    log.line(f"optimizer: {algorithm_name(config.optimizer, mode)}, lr {config.lr:g}, "
             f"lambda {config.weight_decay:g}" + (f", l1 {config.l1:g}" if config.l1 else ""))
    log.line(describe_split(optimizer.param_groups))

    val_result: dict[str, Any] = {}
    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            return {"interrupted_at_epoch": epoch}
        t0 = time.perf_counter()
        model.train()  # net may be a DDP wrapper or a compiled function of model
        train_metrics = SegmentationMetrics(info.num_classes, IGNORE_INDEX, device=device)
        if position is not None:  # resuming inside this epoch
            perm, first_batch = position["perm"], position["next_batch"]
            sums, count = torch.zeros(2, device=device), position["epoch_count"]
            if main:  # the saved sums are over all ranks already: count them once
                sums = position["epoch_sums"].to(device)
                train_metrics.confusion = position["epoch_confusion"].to(device)
            position = None
        else:
            perm, first_batch = torch.randperm(n, generator=gen), 0
            sums, count = torch.zeros(2, device=device), 0
        bar = log.bar(steps_per_epoch, f"epoch {epoch + 1}/{epochs}")
        bar.update(first_batch)
        for b in range(first_batch, steps_per_epoch):
            if step >= total_steps:
                break
            # Between steps: every rank stops at the same step, if any rank got a signal.
            signum = ctx.agree_max(stop.signum or 0)
            if signum:  # save the exact position and stop
                bar.close()
                train_seconds += time.perf_counter() - t0
                saved = resume_state(
                    epoch, perm=perm, next_batch=b,
                    epoch_sums=ctx.all_reduce_sum(sums.clone()), epoch_count=count,
                    epoch_confusion=ctx.all_reduce_sum(train_metrics.confusion.clone()))
                if main:
                    if checkpoints:
                        save_checkpoint(saved, out / "last.pt")
                    _write_metrics_csv(out / "metrics.csv", history)
                ctx.barrier()  # no rank exits before last.pt is complete
                raise TrainingInterrupted(signum, str(out), f"in epoch {epoch + 1}/"
                                          f"{epochs} after step {step}", checkpoints)
            idx = perm[b * batch_size : (b + 1) * batch_size]
            x, target = _train_batch(train_split, idx, config, hw, gen, device, rows=rows)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
                logits = net(x)
            logits = logits.float()
            data_loss = loss_fn(logits, target)
            loss = data_loss
            if penalty_l2 or config.l1:
                # On every rank; DDP averages the gradients, so the decay counts once.
                loss = loss + regularization_term(l2=penalty_l2, l1=config.l1,
                                                  groups=optimizer.param_groups)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            count += 1
            step_losses = torch.stack([loss.detach(), data_loss.detach()])
            sums += step_losses / ctx.world_size if ctx.enabled else step_losses
            train_metrics.update(logits.detach(), target)
            bar.update(1)
            if log.tty and not log.quiet:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        bar.close()
        if ctx.enabled:  # loss sums (means over ranks) and pixel counts of the whole batch
            ctx.all_reduce_sum(sums)
            ctx.all_reduce_sum(train_metrics.confusion)
        loss_mean, data_mean = (sums / max(1, count)).tolist()  # one host sync per epoch
        norm_now = weight_norm(p for p in model.parameters())
        reason = divergence_reason(epoch + 1, loss_mean, norm_now, initial_norm, config)
        reason = ctx.broadcast(reason)  # rank 0 decides for all, so all stop together
        if reason is not None:
            train_seconds += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "step": step,
                            "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_mean,
                            "data_loss": data_mean, "weight_norm": norm_now,
                            "seconds": train_seconds})
            summary = run_summary(
                "diverged", reason=reason, lr=config.lr, diverged_at_epoch=epoch + 1,
                best_val_miou=best if best >= 0 else None, final_val_miou=None,
                weight_norm=norm_now, initial_weight_norm=initial_norm)
            if main:
                _write_metrics_csv(out / "metrics.csv", history)
                write_json(out / "summary.json", summary)
            return summary
        with torch.no_grad():
            reg_now = float(regularization_term(l2=config.weight_decay, l1=config.l1,
                                                groups=optimizer.param_groups))
        last_epoch = epoch + 1 == epochs
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_mean, "data_loss": data_mean, "reg_term": reg_now,
            "train_miou": train_metrics.compute()["miou"],
            "val_miou": None, "val_loss": None,
            "weight_norm": norm_now,
            "decayed_norm": weight_norm(
                p for g in optimizer.param_groups if g.get("decay_mult", 0) > 0
                for p in g["params"]),
        }
        if (epoch + 1) % max(1, config.eval_every) == 0 or last_epoch:
            val_result, val_loss = evaluate_split(model, data.val, info.num_classes, config,
                                                  device, loss_fn, dist=ctx)
            row["val_miou"], row["val_loss"] = val_result["miou"], val_loss
        train_seconds += time.perf_counter() - t0
        row["seconds"] = train_seconds
        history.append(row)
        improved = row["val_miou"] is not None and row["val_miou"] > best
        if improved:
            best = row["val_miou"]
        if improved and checkpoints and main:
            save_checkpoint({"model": model.state_dict(), "epoch": epoch + 1,
                             "val_miou": best, "config": resolved.to_dict(),
                             "dataset": dataset_meta}, out / "best.pt")
        if checkpoints:
            saved = resume_state(epoch + 1)  # every rank: it gathers their RNG states
            if main:
                save_checkpoint(saved, out / "last.pt")
        if main:
            _write_metrics_csv(out / "metrics.csv", history)
        val_text = f"{row['val_miou']:.4f}" if row["val_miou"] is not None else "-"
        log.line(f"epoch {epoch + 1}/{epochs} loss {loss_mean:.4f} (data {data_mean:.4f}, "
                 f"reg {reg_now:.4g}) train mIoU {row['train_miou']:.4f} val mIoU {val_text} "
                 f"lr {row['lr']:.3g} |w| {row['weight_norm']:.2f} {train_seconds:.0f}s")
        if on_epoch is not None:
            on_epoch(row)
        # After rank 0 wrote the epoch's checkpoint (it resumes exactly); agreed by all ranks.
        signum = ctx.agree_max(stop.signum or 0)
        if signum and epoch + 1 < epochs:
            raise TrainingInterrupted(signum, str(out), f"after epoch {epoch + 1}/{epochs}",
                                      checkpoints)

    if not val_result:  # resumed after the last epoch: evaluate the final weights again
        val_result, _ = evaluate_split(model, data.val, info.num_classes, config, device,
                                       dist=ctx)
    train_clean, _ = evaluate_split(model, train_split, info.num_classes,
                                    replace(config, eval_size=None), device, dist=ctx)
    summary = run_summary(
        "completed",
        best_val_miou=best,
        best_epoch=max(history, key=lambda r: r["val_miou"] or -1)["epoch"],
        final_val_miou=val_result["miou"],
        final_train_miou=train_clean["miou"],
        class_names=info.class_names,
        val=val_result,
        weight_norm=history[-1]["weight_norm"],
    )
    if main:
        write_json(out / "summary.json", summary)
        from segdecay.report import write_train_report

        write_train_report(out, history, summary, decay, info.class_names)
    log.line(format_iou_table(val_result, info.class_names))
    log.line(f"run folder: {out}")
    return summary


def load_run(run: str | Path, checkpoint: str = "best", device: str = "auto"):
    """(config, dataset metadata, model in eval mode, device) of a run folder."""
    from segdecay.config import from_dict

    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run folder {run}: does not exist")
    ckpt_path = run / f"{checkpoint}.pt"
    if not ckpt_path.is_file() and checkpoint == "best":
        ckpt_path = run / "last.pt"
    dev = resolve_device(device)
    state = load_checkpoint(ckpt_path)
    config = from_dict(state["config"], f"checkpoint {ckpt_path}")
    meta = state["dataset"]
    model = build_model(config.arch, config.encoder, meta["num_classes"],
                        dropout=config.dropout)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, meta, model, dev
