"""``segdecay tune``: choose lambda by (group, repeated) k-fold cross-validation on Optuna.

A trial is one point of the search space (lambda, optionally lr and decay mode). It trains
one model per fold of the training split and scores the final epoch's val mIoU on the held
out fold; the trial's value is the mean over folds. Intermediate values feed the pruner:
per epoch for median/Hyperband (step = fold x epochs + epoch, the same for every trial, so
comparisons are paired), per fold for Wilcoxon (step = fold, Optuna's paired test).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.data.base import SegData
from segdecay.errors import UserError
from segdecay.folds import group_keys, group_kfold
from segdecay.resources import pid_alive
from segdecay.storage import open_storage, redact, resolve_storage_url

SEARCHES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband", "wilcoxon")


@dataclass
class TuneOptions:
    """What to search, how to score it, where the study lives."""

    grid: list[float] | None = None
    range: tuple[float, float] | None = None
    search: str = "grid"
    trials: int | None = None
    lr_grid: list[float] | None = None
    modes: list[str] | None = None
    folds: int = 3
    group_by: str | None = None
    repeats: int = 1
    pruner: str = "median"
    storage: str | None = None
    study: str = "segdecay"
    workers: int = 1
    select: str = "1se"
    refit: bool = False
    seed: int = 0
    heartbeat: int = 10


def parse_grid(text: str, option: str = "--grid") -> list[float]:
    """'0,1e-5,1e-4' -> sorted unique floats >= 0."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise UserError(f"{option} '{text}': expected comma-separated numbers") from exc
    if not values or min(values) < 0 or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} '{text}': need finite values >= 0")
    return values


def parse_range(text: str) -> tuple[float, float]:
    """'1e-6:1e-1' -> (1e-6, 1e-1), a log-uniform range (so both ends must be > 0)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError as exc:
        raise UserError(f"--range '{text}': expected LOW:HIGH, e.g. 1e-6:1e-1") from exc
    if not 0 < lo < hi:
        raise UserError(f"--range '{text}': need 0 < LOW < HIGH (log-uniform; use --grid to "
                        "include lambda = 0)")
    return lo, hi


def validate(options: TuneOptions) -> None:
    """Refuse inconsistent options before any work starts."""
    if options.search not in SEARCHES:
        raise UserError(f"--search '{options.search}': choose one of {', '.join(SEARCHES)}")
    if options.pruner not in PRUNERS:
        raise UserError(f"--pruner '{options.pruner}': choose one of {', '.join(PRUNERS)}")
    if options.select not in ("min", "1se"):
        raise UserError(f"--select '{options.select}': choose min or 1se")
    if options.search == "grid" and not options.grid:
        raise UserError("--search grid needs --grid L1,L2,... (e.g. 0,1e-5,1e-4,1e-3,1e-2)")
    if options.search != "grid" and options.range is None:
        raise UserError(f"--search {options.search} needs --range LOW:HIGH")
    if options.search != "grid" and not options.trials:
        raise UserError(f"--search {options.search} needs --trials N")
    for name in ("folds", "repeats", "workers"):
        if getattr(options, name) < 1:
            raise UserError(f"--{name} {getattr(options, name)}: must be at least 1")


def fold_splits(data: SegData, options: TuneOptions) -> list[tuple[int, int, SegData]]:
    """(repeat, fold, data) for every CV fit: train/val are parts of the training split."""
    train = data.train
    keys = group_keys(train.names, train.groups, options.group_by)
    fits = []
    for r in range(options.repeats):
        for f, (tr, va) in enumerate(group_kfold(keys, options.folds, seed=options.seed + r)):
            fits.append((r, f, SegData(info=data.info, train=train.subset(tr),
                                       val=train.subset(va), test=None)))
    return fits


def _sampler(options: TuneOptions) -> optuna.samplers.BaseSampler:
    if options.search == "grid":
        space: dict[str, list] = {"weight_decay": list(options.grid)}
        if options.lr_grid:
            space["lr"] = list(options.lr_grid)
        if options.modes:
            space["decay_mode"] = list(options.modes)
        return optuna.samplers.GridSampler(space, seed=options.seed)
    if options.search == "random":
        return optuna.samplers.RandomSampler(seed=options.seed)
    return optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=min(5, options.trials))


def reports_per_fold(options: TuneOptions) -> bool:
    """Whether the pruner sees one score per fold (paired tests) instead of one per epoch."""
    return options.pruner == "wilcoxon"


def _pruner(options: TuneOptions, epochs: int) -> optuna.pruners.BasePruner:
    if options.pruner == "median":
        # One finished trial is the yardstick; from a quarter of the first fold on, a trial
        # below the median of finished ones at the same epoch stops. Measured on the demo
        # grid (benchmarks/tune_pruning.py, 3 seeds): 0.24-0.49 of the compute, lambda.min
        # the same or one grid step smaller (early epochs favour lighter decay).
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=max(1, epochs // 4))
    if options.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 4),
                                              max_resource=epochs * options.folds
                                              * options.repeats)
    if options.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def _suggest(trial: optuna.Trial, options: TuneOptions, base: TrainConfig) -> dict[str, Any]:
    if options.search == "grid":  # GridSampler picks the value; the range must hold it
        grid = options.grid
        params: dict[str, Any] = {
            "weight_decay": trial.suggest_float("weight_decay", min(grid), max(grid))}
        if options.lr_grid:
            params["lr"] = trial.suggest_float("lr", min(options.lr_grid), max(options.lr_grid))
    else:
        lo, hi = options.range
        params = {"weight_decay": trial.suggest_float("weight_decay", lo, hi, log=True)}
        if options.lr_grid:
            params["lr"] = trial.suggest_categorical("lr", list(options.lr_grid))
    if options.modes:
        params["decay_mode"] = trial.suggest_categorical("decay_mode", list(options.modes))
    return params


def _duplicate_of(study: optuna.Study, trial: optuna.Trial, params: dict) -> int | None:
    """Number of another live or finished trial with these params (grid end-game, reruns)."""
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.params != params:
            continue
        if other.user_attrs.get("duplicate_of") is not None:
            continue
        if other.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                           optuna.trial.TrialState.RUNNING):
            return other.number
    return None


class Objective:
    """Trains every fold for one trial's parameters and reports to the pruner."""

    def __init__(self, base: TrainConfig, options: TuneOptions, fits, run_dir: Path,
                 quiet: bool = True, progress: bool = False) -> None:
        self.base, self.options, self.fits, self.run_dir = base, options, fits, run_dir
        self.quiet = quiet
        self.progress = progress

    def say(self, text: str) -> None:
        """One progress line per fold and per trial (the fits themselves stay quiet)."""
        if self.progress:
            print(text, flush=True)

    def __call__(self, trial: optuna.Trial) -> float:
        from segdecay.engine import Log, train

        params = _suggest(trial, self.options, self.base)
        dup = _duplicate_of(trial.study, trial, params) if self.options.search == "grid" else None
        if dup is not None:
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"parameters already evaluated by trial {dup}")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        config = replace(self.base, eval_every=1, **params)
        epochs_per_fit = config.epochs
        scores, train_scores, norms, epochs_run = [], [], [], 0
        per_fold = reports_per_fold(self.options)
        for i, (r, f, data) in enumerate(self.fits):
            out = self.run_dir / "trials" / f"{trial.number:04d}" / f"r{r}f{f}"

            def report(row: dict, i: int = i) -> None:
                nonlocal epochs_run
                epochs_run += 1
                trial.set_user_attr("epochs_run", epochs_run)
                if per_fold or row["val_miou"] is None:
                    return
                trial.report(row["val_miou"], i * epochs_per_fit + row["epoch"] - 1)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fold {i + 1} epoch {row['epoch']}")

            try:
                summary = train(replace(config, seed=self.base.seed + r), out, data=data,
                                log=Log(quiet=self.quiet), on_epoch=report, checkpoints=False)
            except optuna.TrialPruned as pruned:
                trial.set_user_attr("fold_scores", scores)
                self.say(f"  trial {trial.number} {_describe(params)}: {pruned}")
                raise
            if summary.get("status", "completed") != "completed":
                trial.set_user_attr("failure", summary.get("reason", "run failed"))
                raise RuntimeError(summary.get("reason", "run failed"))
            self.say(f"  trial {trial.number} {_describe(params)} fold {i + 1}/"
                     f"{len(self.fits)}: val mIoU {summary['final_val_miou']:.4f} "
                     f"(train {summary['final_train_miou']:.4f})")
            scores.append(summary["final_val_miou"])
            train_scores.append(summary["final_train_miou"])
            norms.append(summary["weight_norm"])
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("train_scores", train_scores)
            trial.set_user_attr("weight_norms", norms)
            if per_fold:
                trial.report(scores[-1], i)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {i + 1} ({self.options.pruner})")
        return sum(scores) / len(scores)


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{'lambda' if k == 'weight_decay' else k}={v:g}" if isinstance(v, float)
                    else f"{k}={v}" for k, v in params.items())


def _threads_for(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _n_trials(options: TuneOptions) -> int:
    if options.search == "grid":
        n = len(options.grid) * len(options.lr_grid or [0]) * len(options.modes or [0])
        return n
    return int(options.trials)


def _done_count(study: optuna.Study) -> int:
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in finished and t.user_attrs.get("duplicate_of") is None)


def retry_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue RUNNING trials whose worker process on this host is gone.

    Optuna's heartbeat does this for RDB storages after a grace period; journal files have
    no heartbeat, and their workers share one machine, so a dead PID is proof enough.
    """
    host = socket.gethostname()
    retried = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        w_host, _, pid = worker.rpartition(":")
        if w_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failure", "worker process died")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):  # another worker won
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        retried.append(t.number)
    return retried


def run_worker(base: TrainConfig, options: TuneOptions, run_dir: Path, storage_url: str,
               quiet: bool = True, threads: int | None = None, progress: bool = False) -> None:
    """One worker: join the study and run trials until the search is exhausted."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset_for(base)
    fits = fold_splits(data, options)
    study = optuna.create_study(
        study_name=options.study, storage=open_storage(storage_url, options.heartbeat),
        sampler=_sampler(options), pruner=_pruner(options, base.epochs),
        direction="maximize", load_if_exists=True,
    )
    retry_dead_local_trials(study)
    target = _n_trials(options)
    if _done_count(study) >= target and not any(
            t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        return
    stop_when_done = optuna.study.MaxTrialsCallback(
        target, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    study.optimize(Objective(base, options, fits, run_dir, quiet=quiet, progress=progress),
                   n_trials=None if options.search == "grid" else target * 2,
                   callbacks=[stop_when_done, _stop_on_duplicate], catch=(RuntimeError,),
                   gc_after_trial=True)


def _stop_on_duplicate(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("duplicate_of") is not None:
        study.stop()


def _worker_entry(base: dict, options: dict, run_dir: str, url: str, threads: int,
                  progress: bool) -> None:
    run_worker(TrainConfig(**base), TuneOptions(**options), Path(run_dir), url, True, threads,
               progress)


def run_tune(base: TrainConfig, options: TuneOptions, run_dir: str | Path,
             quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the study with ``options.workers`` local processes, then summarize."""
    validate(options)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(options.storage, run_dir, options.workers)
    say = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    say(f"study '{options.study}' in {redact(url)}: {options.search} search, "
        f"{options.folds}-fold CV x {options.repeats}, pruner {options.pruner}, "
        f"{options.workers} worker(s)")
    started = time.perf_counter()
    if options.workers == 1:
        run_worker(base, options, run_dir, url, quiet=True, progress=not quiet)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry,
                             args=(asdict(base), asdict(options), str(run_dir), url,
                                   _threads_for(options.workers), not quiet))
                 for _ in range(options.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    from segdecay.tune_report import summarize_study

    return summarize_study(base, options, run_dir, url, time.perf_counter() - started, say)
