"""The training loop, as a sequence of named steps (nnU-Net's ``run_training``, torchvision's
reference ``main``): build the run, restore or start its state, then per epoch train, check
for divergence, write the metrics row and the checkpoint; at the end, score and report.

One run = one folder. Every epoch rewrites ``metrics.csv`` and ``last.pt`` atomically; the
checkpoint holds model, optimizer, scheduler, RNG states, history and clock, so ``--resume``
continues exactly where the last finished epoch left off. SIGINT/SIGTERM stop after the
current step with a checkpoint that also holds the position inside the epoch, so resuming it
is exact too (:mod:`segdecay.training.epoch`).

Under ``torchrun`` the same loop trains data-parallel (DDP): ``--batch-size`` is the global
batch, each rank takes its slice of every batch, counts are all-reduced, and only rank 0
writes the run folder (see :mod:`segdecay.training.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from segdecay.config import COMMAND_LINE, TrainConfig, check_value
from segdecay.data import load_dataset_for
from segdecay.data.base import SegData
from segdecay.decay import regularization_term, weight_norm
from segdecay.decision import DECISION_FILE, TAUS
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.metrics import format_iou_table
from segdecay.models import upgrade_state_dict
from segdecay.report.train import write_train_report
from segdecay.training import distributed
from segdecay.training.defaults import resolve_defaults
from segdecay.training.divergence import divergence_reason
from segdecay.training.epoch import EpochResult, train_one_epoch
from segdecay.training.evaluate import (
    Scoring,
    choose_checkpoint,
    choose_decision,
    evaluate_split,
)
from segdecay.training.hardware import compiled_or_eager, resolve_amp, resolve_device
from segdecay.training.interrupt import TrainingInterrupted, active_stop, stoppable
from segdecay.training.lock import run_folder_lock
from segdecay.training.log import Log, epoch_line, write_metrics_csv
from segdecay.training.setup import (
    Execution,
    TrainingRun,
    build_run,
    log_start,
    write_header,
)
from segdecay.training.state import (
    Progress,
    load_checkpoint,
    progress_of,
    save_checkpoint,
    set_rng_state,
)

EpochHook = Callable[[dict[str, Any]], None]


@stoppable
def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data: SegData | None = None,
    log: Log | None = None,
    on_epoch: EpochHook | None = None,
    checkpoints: bool = True,
) -> dict[str, Any]:
    """Train one model into the run folder ``out`` and return its summary.

    ``on_epoch`` sees each finished epoch's metrics row after its checkpoint is written; it
    may raise to stop the run (a pruner). ``checkpoints=False`` writes no .pt files
    (cross-validation folds are not resumed). ``data`` is the loaded dataset, if the caller
    has it.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; they train one model
    data-parallel with a global ``batch_size``, only rank 0 logs and writes ``out``, and
    every rank returns the same summary. ``on_epoch`` runs on every rank with the same row.

    Returns the summary, whose ``status`` is ``"completed"`` or ``"diverged"`` (with a
    ``reason``). SIGINT/SIGTERM raise :class:`TrainingInterrupted` after the current step,
    once ``last.pt`` can resume exactly; a CUDA out-of-memory error becomes a UserError.
    """
    out = Path(out)
    ctx = distributed.from_env()
    log = log if ctx.is_main else Log(quiet=True)
    log = log or Log()
    _check_counts(config)
    _check_out(out, resume)
    device = distributed.device_for_rank(resolve_device(config.device), config.device, ctx)
    config = replace(config, amp=resolve_amp(config.amp, device))  # config.yaml says which
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    data = data if data is not None else load_dataset_for(config)
    n = len(data.train)
    if n == 0:
        raise UserError(f"--data {config.data}: the training split is empty")
    requested_batch = config.batch_size
    config, defaults = resolve_defaults(config, data, ctx.world_size)
    batch_size = config.batch_size  # global: images per step over all processes
    local_batch = distributed.local_batch_size(batch_size, requested_batch or batch_size, n,
                                               ctx.world_size)
    with distributed.process_group(ctx, device):
        execution = Execution(ctx=ctx, device=device, generator=generator,
                              batch_size=batch_size, local_batch=local_batch, log=log,
                              stop=active_stop(), checkpoints=checkpoints)
        run = build_run(config, out, data, execution, defaults)
        with run_folder_lock(out, ctx.is_main):  # built and checked: now it may write
            _check_out(out, resume)  # again, under the lock: a run may have finished
            return fit(run, resume=resume, on_epoch=on_epoch)


def fit(run: TrainingRun, *, resume: bool, on_epoch: EpochHook | None) -> dict[str, Any]:
    """Train a built run to its last epoch (or divergence); the body of :func:`train`."""
    execution = run.execution
    write_header(run)
    progress = restore(run) if resume else Progress()
    net = distributed.wrap_model(run.model, execution.ctx, execution.device)  # DDP for the steps
    if run.config.compile:
        net = compiled_or_eager(net, execution.log.line)
    log_start(run)
    val_result: dict[str, Any] = {}
    for epoch in range(progress.epoch, run.epochs):
        started = time.perf_counter()
        result = train_one_epoch(run, progress, net, epoch, started)
        norm = weight_norm(p for p in run.model.parameters())
        reason = divergence_reason(epoch + 1, result.loss, norm, run.initial_norm, run.config)
        reason = execution.ctx.broadcast(reason)  # rank 0 decides for all, so all stop together
        if reason is not None:
            return finish_diverged(run, progress, epoch, result, norm, reason, started)
        row = metrics_row(run, progress, epoch, result, norm)
        if validation_due(run, epoch):
            val_result, row["val_miou"], row["val_loss"] = validate(run)
        progress.train_seconds += time.perf_counter() - started
        row["seconds"] = progress.train_seconds
        progress.history.append(row)
        save_epoch(run, progress, row)
        execution.log.line(epoch_line(row, run.epochs))
        if on_epoch is not None:
            on_epoch(row)
        stop_if_signalled(run, epoch)
    return finish(run, progress, val_result)


def _check_counts(config: TrainConfig) -> None:
    """The API path gets the CLI's range checks."""
    for name in TrainConfig.fields():
        check_value(name, getattr(config, name), COMMAND_LINE)


def _check_out(out: Path, resume: bool) -> None:
    """A new run never overwrites a finished one; a resume needs something to resume."""
    if resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"--resume: {out / 'last.pt'} does not exist; nothing to resume")
    elif (out / "last.pt").exists():
        raise UserError(
            f"--out {out}: holds a run already; pass --resume to continue it or choose "
            "another folder (nothing was overwritten)"
        )


def restore(run: TrainingRun) -> Progress:
    """Model, optimizer, scheduler, RNG and progress from ``last.pt``.

    Every rank reads the checkpoint (the run folder must be on a filesystem they all see).
    CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
    """
    state = load_checkpoint(run.out / "last.pt", map_location="cpu")
    run.model.load_state_dict(upgrade_state_dict(state.get("trained_model", state["model"])))
    if run.average is not None:
        if "average" not in state:
            raise UserError(f"--resume: {run.out / 'last.pt'} was trained without --ema; "
                            "resume it without --ema, or start a new run")
        run.average.load_state_dict(upgrade_state_dict(state["model"]), state["average"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    execution = run.execution
    set_rng_state(state["rng"], execution.generator, execution.device)
    ctx, ranks_rng = execution.ctx, state.get("rank_rng")
    if ctx.enabled:
        if ranks_rng is not None and len(ranks_rng) == ctx.world_size:
            set_rng_state(ranks_rng[ctx.rank], execution.generator, execution.device)
        else:  # another number of processes: fresh per-rank dropout streams
            torch.manual_seed(distributed.rank_seed(run.config.seed + state["step"], ctx.rank))
    progress = progress_of(state)
    if run.config.checkpoint != "last" and (run.out / "best.pt").is_file():
        best = load_checkpoint(run.out / "best.pt", map_location="cpu")
        progress.best_weights = upgrade_state_dict(best["model"])
    if progress.position is not None:
        execution.log.line(f"resuming {run.out} in epoch {progress.epoch + 1}/{run.epochs} "
                           f"at batch {progress.position['next_batch'] + 1}/"
                           f"{run.steps_per_epoch}")
    else:
        execution.log.line(f"resuming {run.out} at epoch {progress.epoch}/{run.epochs}")
    return progress


def metrics_row(run: TrainingRun, progress: Progress, epoch: int, result: EpochResult,
                norm: float) -> dict[str, Any]:
    """The epoch's metrics.csv row, before validation and the clock fill it in."""
    groups = run.optimizer.param_groups
    with torch.no_grad():
        reg = float(regularization_term(l2=run.config.weight_decay, l1=run.config.l1,
                                        groups=groups))
    return {
        "epoch": epoch + 1, "step": progress.step, "lr": groups[0]["lr"],
        "train_loss": result.loss, "data_loss": result.data_loss, "reg_term": reg,
        "train_miou": result.metrics.compute()["miou"],
        "val_miou": None, "val_loss": None,
        "weight_norm": norm,
        "decayed_norm": weight_norm(
            p for g in groups if g.get("decay_mult", 0) > 0 for p in g["params"]),
    }


def validation_due(run: TrainingRun, epoch: int) -> bool:
    """Every ``eval_every`` epochs, and always after the last."""
    return (epoch + 1) % max(1, run.config.eval_every) == 0 or epoch + 1 == run.epochs


def validate(run: TrainingRun) -> tuple[dict[str, Any], float, float]:
    """(val metrics, val mIoU, val loss) of the current weights."""
    result, loss = evaluate_split(run.eval_model, run.data.val, run.data.info.num_classes,
                                  run.config, run.execution.device, run.loss_fn,
                                  scoring=Scoring(dist=run.execution.ctx))
    return result, result["miou"], loss


def save_epoch(run: TrainingRun, progress: Progress, row: dict[str, Any]) -> None:
    """best.pt when val improved, last.pt, metrics.csv (rank 0 writes)."""
    improved = row["val_miou"] is not None and row["val_miou"] > progress.best
    if improved:
        progress.best = row["val_miou"]
    if improved and run.config.checkpoint != "last":  # every rank: each scores with them
        progress.best_weights = {k: v.detach().to("cpu", copy=True)
                                 for k, v in run.eval_model.state_dict().items()}
    if improved and run.execution.checkpoints and run.main:
        save_checkpoint(run.best_state(row["epoch"], progress.best), run.out / "best.pt")
    if run.execution.checkpoints:
        saved = run.checkpoint_state(progress, row["epoch"])  # every rank: gathers RNG states
        if run.main:
            save_checkpoint(saved, run.out / "last.pt")
    if run.main:
        write_metrics_csv(run.out / "metrics.csv", progress.history)


def stop_if_signalled(run: TrainingRun, epoch: int) -> None:
    """After rank 0 wrote the epoch's checkpoint (it resumes exactly); agreed by all ranks."""
    execution = run.execution
    signum = execution.ctx.agree_max(execution.stop.signum or 0)
    if signum and epoch + 1 < run.epochs:
        raise TrainingInterrupted(signum, str(run.out), f"after epoch {epoch + 1}/{run.epochs}",
                                  execution.checkpoints)


def finish_diverged(run: TrainingRun, progress: Progress, epoch: int, result: EpochResult,
                    norm: float, reason: str, started: float) -> dict[str, Any]:
    """Record the diverged epoch and write summary.json with the reason."""
    progress.train_seconds += time.perf_counter() - started
    progress.history.append({
        "epoch": epoch + 1, "step": progress.step, "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": result.loss, "data_loss": result.data_loss, "weight_norm": norm,
        "seconds": progress.train_seconds})
    summary = run.summary(
        progress, "diverged", reason=reason, lr=run.config.lr, diverged_at_epoch=epoch + 1,
        best_val_miou=progress.best if progress.best >= 0 else None, final_val_miou=None,
        weight_norm=norm, initial_weight_norm=run.initial_norm)
    if run.main:
        write_metrics_csv(run.out / "metrics.csv", progress.history)
        write_json(run.out / "summary.json", summary)
    return summary


def finish(run: TrainingRun, progress: Progress, val_result: dict[str, Any]) -> dict[str, Any]:
    """Score the final weights (val, and a clean pass over train), then the weights the run
    answers with (``--checkpoint``) on val, choose their decision, write summary and report."""
    info, device, log = run.data.info, run.execution.device, run.execution.log
    over_ranks = Scoring(dist=run.execution.ctx)
    if not val_result:  # resumed after the last epoch: evaluate the final weights again
        val_result, _ = evaluate_split(run.eval_model, run.data.val, info.num_classes,
                                       run.config, device, scoring=over_ranks)
    train_clean, _ = evaluate_split(run.eval_model, run.train_split, info.num_classes,
                                    replace(run.config, eval_size=None), device, scoring=over_ranks)
    final_val = val_result["miou"]
    answer = answer_weights(run, progress)
    if answer is not None:
        val_result = answer.pop("val")
    decision = decide(run)
    history = progress.history
    summary = run.summary(
        progress, "completed",
        best_val_miou=progress.best,
        best_epoch=best_epoch(history),
        final_val_miou=final_val,
        final_train_miou=train_clean["miou"],
        checkpoint=run.config.checkpoint,
        answer_checkpoint="best" if answer and answer["best"] else "last",
        answer_epoch=answer["epoch"] if answer and answer["best"] else run.epochs,
        val_miou=val_result["miou"],
        **({"checkpoint_evidence": answer} if answer else {}),
        class_names=info.class_names,
        val=val_result,
        weight_norm=history[-1]["weight_norm"],
        **({"decision": decision} if decision else {}),
    )
    if run.main:
        if decision:
            write_json(run.out / DECISION_FILE, decision)
        write_json(run.out / "summary.json", summary)
        write_train_report(run.out, history, summary, run.decay_by_group, info.class_names)
    if answer:
        log.line(checkpoint_line(answer, run.epochs))
    log.line(format_iou_table(val_result, info.class_names))
    if decision:
        log.line(decision_line(decision))
    log.line(f"run folder: {run.out}")
    return summary


def best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch of the highest val mIoU (the first of equal ones: the one best.pt holds)."""
    return max(history, key=lambda r: r["val_miou"] or -1)["epoch"]


def answer_weights(run: TrainingRun, progress: Progress) -> dict[str, Any] | None:
    """Under ``--checkpoint best|auto``, when the best validation was not the last one: put
    the weights the run answers with into the model it scores with (:func:`choose_checkpoint`)
    and say which, with the evidence and their val metrics (None: the final weights, with
    nothing to choose)."""
    if run.config.checkpoint == "last" or progress.best_weights is None:
        return None
    epoch = best_epoch(progress.history)
    if epoch == run.epochs:
        return None
    best, val, evidence = choose_checkpoint(
        run.eval_model, progress.best_weights, run.data.val, run.data.info.num_classes,
        run.config, run.execution.device, dist=run.execution.ctx)
    return {"best": best, "epoch": epoch, **evidence, "val": val}


def checkpoint_line(answer: dict[str, Any], epochs: int) -> str:
    """Which weights the run answers with, and what val said of the best validation's."""
    se = answer["val_gain_se"]
    ses = f"{answer['val_gain'] / se:.1f}" if se else "no"
    gain = (f"{100 * answer['val_gain']:+.2f} val mIoU over the final weights, {ses} "
            f"bootstrap SEs over {answer['val_images']} val images")
    if answer["best"]:
        return (f"checkpoint: the weights of epoch {answer['epoch']}, the best validation "
                f"({gain}); evaluate and predict use them")
    return (f"checkpoint: the final weights of epoch {epochs}; the best validation, epoch "
            f"{answer['epoch']}, is within the noise ({gain})")


def decide(run: TrainingRun) -> dict[str, Any] | None:
    """t of ``--decision adjusted`` and the test-time augmentation of ``--tta auto``, chosen
    on val for the weights the run answers with (None: argmax without test-time
    augmentation)."""
    if len(run.data.val) == 0:
        return None
    return choose_decision(run.eval_model, run.data.val, run.data.train.masks,
                           run.data.info.num_classes, run.config, run.execution.device,
                           dist=run.execution.ctx)


def decision_line(decision: dict[str, Any]) -> str:
    """What the chosen decision bought on val (where it was chosen: an optimistic figure)."""
    edge = " (the grid's edge: a larger |t| might do better)" if abs(decision["tau"]) == max(
        TAUS) else ""
    rule = (f"argmax(logit - t*log prior) with t = {decision['tau']:g}{edge}"
            if decision.get("rule", "adjusted") == "adjusted" else "argmax")
    tta = decision.get("tta", "none")
    by_tta = decision.get("val_miou_by_tta", {})
    count = decision.get("tta_passes", 1)
    passes = f"{count} pass{'' if count == 1 else 'es'}"
    if len(by_tta) > 1:
        other = next(g for g in by_tta if g != tta)
        rule += (f", test-time augmentation {tta} ({passes} per image; "
                 f"{other}: {100 * by_tta[other]:.2f})")
    elif tta != "none":
        rule += f", test-time augmentation {tta} ({passes} per image)"
    return (f"decision: {rule}, chosen on val: val mIoU {100 * decision['val_miou']:.2f} "
            f"(argmax {100 * decision['val_miou_argmax']:.2f}); evaluate and predict use it")
