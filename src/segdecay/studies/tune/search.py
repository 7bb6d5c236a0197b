"""The search of ``segdecay tune`` on Optuna: samplers, pruners, and the objective that
trains every fold of a trial.

A trial is one point of the search space (lambda, optionally lr and decay mode). It trains
one model per fold of the training split and scores the final epoch's val mIoU on the held
out fold; the trial's value is the mean over folds. Intermediate values feed the pruner:
per epoch for median/Hyperband (step = fold x epochs + epoch, the same for every trial, so
comparisons are paired), per fit for race and Wilcoxon (step = fit: final-epoch scores of
whole folds, compared fit by fit).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.decay import lambda_for_tau
from segdecay.losses import WEIGHTED_LOSSES
from segdecay.studies.tune.folds import fold_plan
from segdecay.studies.tune.options import WILCOXON_P, TuneOptions
from segdecay.studies.tune.race import RacePruner
from segdecay.studies.tune.storage import open_storage
from segdecay.studies.tune.trials import trial_decay
from segdecay.studies.workers import dead_local_worker, worker_id
from segdecay.training import Log, train
from segdecay.training.defaults import steps_per_epoch


def _sampler(options: TuneOptions) -> optuna.samplers.BaseSampler:
    if options.search == "grid":
        space: dict[str, list] = ({"tau_epochs": list(options.tau_grid)} if options.tau_grid
                                  else {"weight_decay": list(options.grid)})
        if options.lr_grid:
            space["lr"] = list(options.lr_grid)
        space.update({name: list(values) for name, values in recipe_parts(options).items()})
        return optuna.samplers.GridSampler(space, seed=options.seed)
    if options.search == "random":
        return optuna.samplers.RandomSampler(seed=options.seed)
    return optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=min(5, options.trials))


def reports_per_fold(options: TuneOptions) -> bool:
    """Whether the pruner sees one score per fold (paired tests) instead of one per epoch."""
    return options.pruner in ("race", "wilcoxon", "screen")


def make_pruner(options: TuneOptions, epochs: int) -> optuna.pruners.BasePruner:
    """The study's pruner for fits of ``epochs`` epochs (the race's and Wilcoxon's compare
    whole-fold scores, median's and Hyperband's per-epoch ones)."""
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
        return optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P, n_startup_steps=2)
    if options.pruner == "race":
        return RacePruner(options.folds, options.folds * options.repeats)
    return optuna.pruners.NopPruner()


def _suggest(trial: optuna.Trial, options: TuneOptions, base: TrainConfig) -> dict[str, Any]:
    if options.search == "grid":  # GridSampler picks the value; the range must hold it
        name, grid = (("tau_epochs", options.tau_grid) if options.tau_grid
                      else ("weight_decay", options.grid))
        params: dict[str, Any] = {name: trial.suggest_float(name, min(grid), max(grid))}
        if options.lr_grid:
            params["lr"] = trial.suggest_float("lr", min(options.lr_grid), max(options.lr_grid))
    else:
        lo, hi = options.range
        params = {"weight_decay": trial.suggest_float("weight_decay", lo, hi, log=True)}
        if options.lr_grid:
            params["lr"] = trial.suggest_categorical("lr", list(options.lr_grid))
    for name, values in recipe_parts(options).items():
        params[name] = trial.suggest_categorical(name, list(values))
    return params


def recipe_parts(options: TuneOptions) -> dict[str, list[str]]:
    """The categorical parts of the recipe searched besides lambda (and lr)."""
    parts = {"decay_mode": options.modes, "loss": options.losses,
             "class_weights": options.weightings}
    return {name: list(values) for name, values in parts.items() if values}


def skip_reason(params: dict[str, Any], base: TrainConfig) -> str | None:
    """Why a grid point is not a recipe (class weights on a loss that takes none), or None."""
    weights = params.get("class_weights", base.class_weights) or "none"
    loss = params.get("loss", base.loss)
    if weights != "none" and loss not in WEIGHTED_LOSSES:
        return f"class weights {weights} apply to {' and '.join(WEIGHTED_LOSSES)}, not {loss}"
    return None


def config_overrides(params: dict[str, Any], base: TrainConfig,
                     steps_per_epoch: float) -> dict[str, Any]:
    """TrainConfig values of a trial: a searched tau becomes this optimizer's lambda."""
    overrides = {k: v for k, v in params.items() if k != "tau_epochs"}
    if "tau_epochs" in params:
        mode, lr = trial_decay(params, base)
        overrides["weight_decay"] = lambda_for_tau(params["tau_epochs"], steps_per_epoch,
                                                   base.optimizer, mode, lr, base.momentum)
    return overrides


def fit_steps_per_epoch(fits, batch_size: int) -> float:
    """Mean optimizer steps per epoch of the CV fits (as the training loop counts them)."""
    steps = [steps_per_epoch(len(d.train), batch_size) for _, _, d in fits]
    return sum(steps) / len(steps)


def fit_epochs(base: TrainConfig, data) -> int:
    """Epochs one CV fit runs, as the training loop counts them (``--steps`` included)."""
    per_epoch = steps_per_epoch(len(data.train), base.batch_size)
    return math.ceil((base.steps or base.epochs * per_epoch) / per_epoch)


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


@dataclass
class TrialProgress:
    """What a trial's fits have given so far; the lists are saved to the trial as they grow."""

    scores: list[float] = field(default_factory=list)
    train_scores: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    epochs_run: int = 0


class Objective:
    """Trains every fold for one trial's parameters and reports to the pruner."""

    def __init__(self, base: TrainConfig, options: TuneOptions, fits, run_dir: Path,
                 quiet: bool = True, progress: bool = False, lambda_scale: float = 1.0) -> None:
        self.base, self.options, self.fits, self.run_dir = base, options, fits, run_dir
        self.lambda_scale = lambda_scale  # the screen's short runs train lambda x this
        self.steps_per_epoch = fit_steps_per_epoch(fits, base.batch_size)
        self.fit_epochs = [fit_epochs(base, d) for _, _, d in fits]
        self.quiet = quiet
        self.progress = progress

    def say(self, text: str) -> None:
        """One progress line per fold and per trial (the fits themselves stay quiet)."""
        if self.progress:
            print(text, flush=True)

    def __call__(self, trial: optuna.Trial) -> float:
        params = _suggest(trial, self.options, self.base)
        self.admit(trial, params)
        trial.set_user_attr("worker", worker_id())
        config = replace(self.base, **self.overrides(trial, params))
        progress = TrialProgress()
        for i in range(len(self.fits)):
            summary = self.fit_fold(trial, params, config, i, progress)
            self.record(trial, params, i, summary, progress)
        return sum(progress.scores) / len(progress.scores)

    def admit(self, trial: optuna.Trial, params: dict[str, Any]) -> None:
        """Prune a grid point another trial already ran (the grid's end-game, reruns), or one
        that is not a recipe, before it trains anything."""
        dup = _duplicate_of(trial.study, trial, params) if self.options.search == "grid" else None
        if dup is not None:
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"parameters already evaluated by trial {dup}")
        skip = skip_reason(params, self.base)
        if skip is not None:
            trial.set_user_attr("skipped", skip)
            raise optuna.TrialPruned(skip)

    def overrides(self, trial: optuna.Trial, params: dict[str, Any]) -> dict[str, Any]:
        """The trial's TrainConfig values: a searched tau as this optimizer's lambda, and
        lambda x the screen's scale in its short runs (tau kept as a fraction of the run)."""
        overrides = config_overrides(params, self.base, self.steps_per_epoch)
        if "tau_epochs" in params:  # the lambda it converted to (a lambda grid has it in params)
            trial.set_user_attr("weight_decay", overrides["weight_decay"])
        if self.lambda_scale != 1:
            overrides["weight_decay"] = overrides.get(
                "weight_decay", self.base.weight_decay) * self.lambda_scale
            trial.set_user_attr("trained_weight_decay", overrides["weight_decay"])
        return overrides

    def fit_fold(self, trial: optuna.Trial, params: dict[str, Any], config: TrainConfig,
                 i: int, progress: TrialProgress) -> dict[str, Any]:
        """Train fit ``i`` of the trial, reporting to a per-epoch pruner as it goes; its
        summary. Per-epoch pruners need a val score every epoch; the others use a fit's
        final score alone, so their fits validate once, at the end (the weights are the
        same either way)."""
        r, f, data = self.fits[i]
        out = self.run_dir / "trials" / f"{trial.number:04d}" / f"r{r}f{f}"
        every = self.fit_epochs[i] if reports_per_fold(self.options) else 1
        try:
            # a fit is scored by its val mIoU at argmax: the decision and the test-time
            # augmentation are chosen for the refit, not per fit
            summary = train(replace(config, seed=self.base.seed + r, eval_every=every,
                                    decision="argmax", tta="none"),
                            out, data=data, log=Log(quiet=self.quiet),
                            on_epoch=self.epoch_reporter(trial, i, progress),
                            checkpoints=False)
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("fold_scores", progress.scores)
            self.say(f"  trial {trial.number} {_describe(params)}: {pruned}")
            raise
        if summary.get("status", "completed") != "completed":
            trial.set_user_attr("failure", summary.get("reason", "run failed"))
            raise RuntimeError(summary.get("reason", "run failed"))
        return summary

    def epoch_reporter(self, trial: optuna.Trial, i: int, progress: TrialProgress):
        """The per-epoch hook of fit ``i``: counts its epochs, and feeds a per-epoch pruner
        at step i x the longest fit's epochs + epoch (the same steps in every trial)."""
        per_fold = reports_per_fold(self.options)
        offset = i * max(self.fit_epochs)

        def report(row: dict) -> None:
            progress.epochs_run += 1
            trial.set_user_attr("epochs_run", progress.epochs_run)
            if per_fold or row["val_miou"] is None:
                return
            trial.report(row["val_miou"], offset + row["epoch"] - 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at fold {i + 1} epoch {row['epoch']}")

        return report

    def record(self, trial: optuna.Trial, params: dict[str, Any], i: int,
               summary: dict[str, Any], progress: TrialProgress) -> None:
        """Keep fit ``i``'s scores on the trial; a per-fold pruner sees its score."""
        self.say(f"  trial {trial.number} {_describe(params)} fold {i + 1}/"
                 f"{len(self.fits)}: val mIoU {summary['final_val_miou']:.4f} "
                 f"(train {summary['final_train_miou']:.4f})")
        progress.scores.append(summary["final_val_miou"])
        progress.train_scores.append(summary["final_train_miou"])
        progress.norms.append(summary["weight_norm"])
        trial.set_user_attr("fold_scores", progress.scores)
        trial.set_user_attr("train_scores", progress.train_scores)
        trial.set_user_attr("weight_norms", progress.norms)
        if reports_per_fold(self.options):
            trial.report(progress.scores[-1], i)
            # never after the last fit: a finished trial stays in the curve
            if i + 1 < len(self.fits) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {i + 1} ({self.options.pruner})")


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{'lambda' if k == 'weight_decay' else k}={v:g}" if isinstance(v, float)
                    else f"{k}={v}" for k, v in params.items())


def _n_trials(options: TuneOptions) -> int:
    if options.search == "grid":
        n = len(options.tau_grid or options.grid) * len(options.lr_grid or [0])
        for values in recipe_parts(options).values():
            n *= len(values)
        return n
    return int(options.trials)


def _done_count(study: optuna.Study) -> int:
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in finished and t.user_attrs.get("duplicate_of") is None)


def retry_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail and re-enqueue RUNNING trials whose worker process on this host is gone.

    Optuna's heartbeat does this for RDB storages after a grace period; journal files have
    no heartbeat, and their workers share one machine, so a dead PID is proof enough. The
    retry records why (``retry_reason``); the failed trial's row shows it.
    """
    retried = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not dead_local_worker(t.user_attrs.get("worker", "")):
            continue
        try:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number,
                                                  "retry_reason": "worker process died"})
        retried.append(t.number)
    return retried


def run_worker(base: TrainConfig, options: TuneOptions, run_dir: Path, storage_url: str,
               quiet: bool = True, threads: int | None = None, progress: bool = False,
               lambda_scale: float = 1.0) -> None:
    """One worker: join the study and run trials until the search is exhausted; its fits
    train lambda x ``lambda_scale``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset_for(base)
    fits, facts = fold_plan(data, options)
    objective = Objective(base, options, fits, run_dir, quiet=quiet, progress=progress,
                          lambda_scale=lambda_scale)
    facts["steps_per_epoch"] = objective.steps_per_epoch
    facts["fit_epochs"] = objective.fit_epochs
    study = optuna.create_study(
        study_name=options.study, storage=open_storage(storage_url, options.heartbeat),
        sampler=_sampler(options), pruner=make_pruner(options, max(objective.fit_epochs)),
        direction="maximize", load_if_exists=True,
    )
    for key, value in facts.items():  # the summary reads them back (same for every worker)
        study.set_user_attr(key, value)
    distinct = facts["distinct_assignments"]  # None with --holdout (one split, new seeds)
    if progress and distinct is not None and options.repeats > distinct:
        print(f"  note: the {facts['groups']} groups allow only "
              f"{distinct} distinct {options.folds}-fold assignment(s); "
              f"{options.repeats} repeats reuse them and add no new evidence", flush=True)
    retry_dead_local_trials(study)
    target = _n_trials(options)
    if _done_count(study) >= target and not any(
            t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        return
    _run_trials(study, objective, options, target)


def _run_trials(study: optuna.Study, objective: Objective, options: TuneOptions,
                target: int) -> None:
    """Trials until ``target`` are done. A full collection after each trial frees its model
    and optimizer state before the next one starts (reference cycles would hold them, on a
    GPU their memory too); freezing the objects that existed before the trials keeps each
    collection to the trials' own garbage, where scanning a process that has torch loaded
    takes a quarter of a second."""
    stop_when_done = optuna.study.MaxTrialsCallback(
        target, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    gc.freeze()
    try:
        study.optimize(objective, n_trials=None if options.search == "grid" else target * 2,
                       callbacks=[stop_when_done, _stop_on_duplicate], catch=(RuntimeError,),
                       gc_after_trial=True)
    finally:
        gc.unfreeze()


def _stop_on_duplicate(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("duplicate_of") is not None:
        study.stop()


def worker_entry(base: dict, options: dict, run_dir: str, url: str, progress: bool,
                 lambda_scale: float, threads: int) -> None:
    """A spawned worker process (plain arguments: they cross the process boundary)."""
    run_worker(TrainConfig(**base), TuneOptions(**options), Path(run_dir), url, True, threads,
               progress, lambda_scale)
