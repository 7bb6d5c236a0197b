"""The refit: retrain on the whole training split with the chosen recipe and score it.

Tune short, train long: with ``--refit-steps``, ``--refit-epochs`` or ``--refit-size`` the
refit runs at another budget than the fold fits, and the chosen lambda is carried over by
holding the decay timescale tau as a fraction of the run (Wang & Aitchison 2024), not as a
raw number: lambda x fold-fit steps / refit steps (all of a refit's steps, on every image).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from segdecay.config import TrainConfig, load_config
from segdecay.data import load_dataset_for
from segdecay.decay import resolved_decay_mode, tau_for_lambda
from segdecay.runs import evaluate_run
from segdecay.runs.folder import is_finished, read_summary
from segdecay.studies.tune.trials import trial_decay
from segdecay.training import Log, train
from segdecay.training.defaults import steps_per_epoch

REFIT_NOTE = ("The refit trains on all K folds' images with the fold fits' lambda, epochs "
              "and batch size, so it takes about K/(K-1) times their optimizer steps per "
              "epoch and its decay timescale tau in epochs is shorter by that ratio: each "
              "image is seen as often as in a fold fit, but the weights decay over more "
              "steps.")
HOLDOUT_REFIT_NOTE = ("With --holdout every fit already trained on the whole training split: "
                      "at the fits' budget the refit is the chosen recipe's first-seed fit "
                      "again (the fits keep no weights), kept and scored on test.")
TRANSFER_NOTE = ("Refit at its own budget (--refit-steps, --refit-epochs, --refit-size): "
                 "lambda is multiplied by fold-fit steps / refit steps, so tau = 1/(lr_eff x "
                 "lambda) steps stays the same fraction of the run; --refit-lambda same keeps "
                 "the CV's lambda instead.")


REFIT_KEYS = ("optimizer", "weight_decay", "lr", "loss", "class_weights", "epochs", "steps",
              "size", "eval_size", "seed")


def refit_folder(run_dir: Path, config: TrainConfig) -> Path:
    """Where this refit lives: ``refit``, unless that holds a refit of another recipe (a
    rerun with another ``--select`` or budget), then ``refit-2``, ``refit-3``, ...: a kept
    refit is reused only when its recipe is this one, and never overwritten by another."""
    for n in range(1, 1000):
        out = run_dir / ("refit" if n == 1 else f"refit-{n}")
        saved = out / "config.yaml"
        if not saved.is_file() or _same_recipe(load_config(saved), config):
            return out
    raise RuntimeError(f"{run_dir}: no free refit folder")


def _same_recipe(kept: TrainConfig, config: TrainConfig) -> bool:
    """The keys that decide what a refit trains and scores (an unset decay mode is the
    optimizer's default, as training resolves it)."""
    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    def mode(c: TrainConfig) -> str:
        return resolved_decay_mode(c.optimizer, c.decay_mode)
    return mode(kept) == mode(config) and all(
        norm(getattr(kept, k)) == norm(getattr(config, k)) for k in REFIT_KEYS)


def run_steps(config: TrainConfig, steps_per_epoch: float) -> float:
    """Optimizer steps of a whole run: ``--steps``, else epochs x steps per epoch."""
    return float(config.steps or config.epochs * steps_per_epoch)


def transferred_lambda(lam: float, fit_steps: float, refit_steps: float) -> float:
    """The lambda whose timescale is the same fraction of a ``refit_steps`` run as ``lam``'s
    is of a ``fit_steps`` run, at the same lr: tau_steps = 1/(lr_eff x lambda) scales with
    the run, so lambda scales with its inverse."""
    return lam * fit_steps / refit_steps


def refit_budget(base: TrainConfig, options) -> TrainConfig:
    """The base config at the refit's budget: ``--refit-steps``, else ``--refit-epochs``,
    else the fits'; at ``--refit-size`` inputs (evaluated at that size) when given."""
    if options.refit_steps:
        base = replace(base, steps=options.refit_steps)
    elif options.refit_epochs:
        base = replace(base, steps=None, epochs=options.refit_epochs)
    if options.refit_size:
        base = replace(base, size=list(options.refit_size), eval_size=list(options.refit_size))
    return base


def refit_timescale(base: TrainConfig, choice: dict, lam_fit: float, lam_refit: float,
                    fold_steps: float | None, refit_steps: int,
                    note: str = REFIT_NOTE) -> dict[str, Any]:
    """Steps per epoch and tau in epochs of a fold fit and of the refit: at the fold fits'
    budget the refit keeps lambda, so its decay per epoch is stronger by the ratio of their
    steps (REFIT_NOTE)."""
    mode, lr = trial_decay({"decay_mode": choice["decay_mode"], "lr": choice["lr"]}, base)

    def tau(lam: float, steps: float | None) -> float | None:
        if not steps:
            return None
        value = tau_for_lambda(lam, steps, base.optimizer, mode, lr, base.momentum)
        return value if math.isfinite(value) else None

    return {"steps_per_epoch_fold_fit": fold_steps, "steps_per_epoch_refit": refit_steps,
            "steps_ratio": refit_steps / fold_steps if fold_steps else None,
            "tau_epochs_fold_fit": tau(lam_fit, fold_steps),
            "tau_epochs_refit": tau(lam_refit, refit_steps), "note": note}


def _budget_transfer(base: TrainConfig, config: TrainConfig, choice: dict, lam: float,
                     options, fold_steps: float | None, n_train: int) -> dict[str, Any] | None:
    """How lambda moves to the refit's budget; None when the refit keeps the fits'. Input
    size leaves the steps, so tau, unchanged: only steps move lambda."""
    if not (options.refit_steps or options.refit_epochs or options.refit_size) or not fold_steps:
        return None
    fit_total = run_steps(base, fold_steps)
    refit_total = run_steps(config, steps_per_epoch(n_train, config.batch_size))
    moved = transferred_lambda(lam, fit_total, refit_total)
    used = moved if options.refit_lambda == "transfer" else lam
    mode, lr = trial_decay({"decay_mode": choice["decay_mode"], "lr": choice["lr"]}, base)
    tau_steps = tau_for_lambda(used, 1, base.optimizer, mode, lr, base.momentum)  # 1 step/epoch
    return {"rule": options.refit_lambda, "fit_steps": fit_total, "refit_steps": refit_total,
            "lambda_cv": lam, "lambda_transferred": moved, "lambda_used": used,
            "tau_fraction_of_run": (tau_steps / refit_total if math.isfinite(tau_steps)
                                    else None), "note": TRANSFER_NOTE}


def refit_chosen(base: TrainConfig, options, run_dir: Path, payload: dict[str, Any],
                 say) -> dict[str, Any]:
    """The refit of the recipe tune.json's payload chose (its selection and chosen lambda,
    at the fits' steps per epoch), and its score, said."""
    result = refit(base, payload["selection"], payload["chosen"], options, run_dir, say,
                   payload["steps_per_epoch_of_fits"])
    decided = result.get("decision", "argmax")
    say(f"refit {result['split']} mIoU {result['miou']:.4f}"
        + ("" if decided == "argmax" else f" (decision {decided})"))
    return result


def refit(base: TrainConfig, choice: dict, lam: float, options, run_dir: Path, say,
          fold_steps: float | None = None) -> dict[str, Any]:
    """Retrain on the whole training split with the chosen recipe (at the refit budget, its
    lambda transferred by tau) and score it, recording its decay timescale."""
    config = replace(refit_budget(base, options),
                     lr=choice["lr"], decay_mode=choice["decay_mode"],
                     loss=choice.get("loss", base.loss),
                     class_weights=choice.get("class_weights", base.class_weights))
    data = load_dataset_for(config)
    transfer = _budget_transfer(base, config, choice, lam, options, fold_steps,
                                len(data.train))
    used = transfer["lambda_used"] if transfer else lam
    if transfer:
        say(f"refit budget {transfer['refit_steps']:.0f} steps (fold fits "
            f"{transfer['fit_steps']:.0f}): lambda {lam:g} -> {transfer['lambda_transferred']:g}"
            f" holds tau as a fraction of the run; using {used:g} (--refit-lambda "
            f"{options.refit_lambda})")
    config = replace(config, weight_decay=used)
    out = refit_folder(run_dir, config)
    if is_finished(out):
        summary = read_summary(out)
    else:
        if out.exists():
            shutil.rmtree(out)
        say(f"refit on the whole training split with lambda={used:g}")
        summary = train(config, out, log=Log(quiet=True), data=data)
    result = evaluate_run(out, split=None, quiet=True)  # test, else val
    return {"run": str(out), "weight_decay": used, "lambda_cv": lam, "transfer": transfer,
            "split": result["split"], "miou": result["miou"], "decision": result["decision"],
            "iou": result["iou"], "class_names": result["class_names"],
            "val_miou": summary["final_val_miou"], "train_seconds": summary["train_seconds"],
            "timescale": refit_timescale(base, choice, lam, used, fold_steps, _run_steps(out),
                                         HOLDOUT_REFIT_NOTE if options.holdout else REFIT_NOTE)}


def _run_steps(out: Path) -> int:
    """Optimizer steps per epoch a finished run took, as its decay.json records them."""
    return int(json.loads((out / "decay.json").read_text())["steps_per_epoch"])
