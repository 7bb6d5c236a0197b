"""The trial record of a tune: one :class:`TrialRow` per Optuna trial, read back from the
study, and the helpers every later step (the screen, the choice, the summary, the check on
the rule) reads rows with.

A row stays typed until it is written: :meth:`TrialRow.as_dict` is tune.json's form of it,
:func:`write_trials_csv` trials.csv's.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.decay import resolved_decay_mode, tau_for_lambda
from segdecay.fileio import atomic_write_text
from segdecay.studies.tune.selection import summarize
from segdecay.studies.tune.storage import open_storage


@dataclass(frozen=True)
class TrialRow:
    """One trial: its recipe, its fold scores and what it cost, or why it has none."""

    number: int
    state: str  # Optuna's TrialState name
    weight_decay: float | None  # searched, or converted from a searched tau
    tau_epochs: float | None  # searched, or the timescale of its lambda (epochs of the fits)
    lr: float
    decay_mode: str | None  # as searched or configured (None: the optimizer's default)
    loss: str
    class_weights: str | None
    cv_mean: float
    cv_se: float
    folds_done: int
    fold_scores: list[float]
    train_miou: float | None
    weight_norm: float | None
    epochs_run: int
    pruned: bool
    duplicate_of: int | None  # the trial that already ran these parameters
    skipped: str | None  # why a grid point is not a recipe
    failure: str | None

    def as_dict(self) -> dict[str, Any]:
        """The row as tune.json lists it (the fields in order)."""
        return asdict(self)


TRIAL_COLUMNS = [f.name for f in fields(TrialRow)]  # trials.csv's header
SETTING = ("lr", "decay_mode", "loss", "class_weights")  # a recipe, lambda aside


def setting_of(row: TrialRow) -> tuple:
    """The recipe of a trial row, lambda aside."""
    return tuple(getattr(row, k) for k in SETTING)


def counted(rows: list[TrialRow]) -> list[TrialRow]:
    """The trials that count (a duplicate reran another's parameters and trained nothing)."""
    return [r for r in rows if r.duplicate_of is None]


def complete_rows(rows: list[TrialRow], n_fits: int) -> list[TrialRow]:
    """Trials with a score on every fit (not duplicates, not skipped)."""
    return [r for r in rows if r.state == "COMPLETE" and r.duplicate_of is None
            and r.folds_done == n_fits]


def trial_decay(params: dict[str, Any], base: TrainConfig) -> tuple[str, float]:
    """(decay mode, lr) a trial trains with: its searched values, else the base config's."""
    return (resolved_decay_mode(base.optimizer, params.get("decay_mode"), base.decay_mode),
            params.get("lr", base.lr))


def read_study(url: str, name: str, base: TrainConfig
               ) -> tuple[list[TrialRow], dict[str, Any]]:
    """A study's trial rows and the facts its workers recorded (steps per epoch and epochs
    of the fits, groups, distinct fold assignments)."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return trial_rows(study, base), dict(study.user_attrs)


def trial_rows(study: optuna.Study, base: TrainConfig) -> list[TrialRow]:
    """One row per trial, in the study's order."""
    trials = study.get_trials(deepcopy=False)
    spe = study.user_attrs.get("steps_per_epoch")
    retry_reasons = {t.user_attrs["retry_of"]: t.user_attrs.get("retry_reason")
                     for t in trials if t.user_attrs.get("retry_of") is not None}
    return [_row(t, base, spe, retry_reasons.get(t.number)) for t in trials]


def _row(t: optuna.trial.FrozenTrial, base: TrainConfig, spe: float | None,
         retry_reason: str | None) -> TrialRow:
    scores = list(t.user_attrs.get("fold_scores", []))
    mean, se = summarize(scores)
    trains = t.user_attrs.get("train_scores", [])
    norms = t.user_attrs.get("weight_norms", [])
    return TrialRow(
        number=t.number,
        state=t.state.name,
        weight_decay=t.params.get("weight_decay", t.user_attrs.get("weight_decay")),
        tau_epochs=_tau(t, base, spe),
        lr=t.params.get("lr", base.lr),
        decay_mode=t.params.get("decay_mode", base.decay_mode),
        loss=t.params.get("loss", base.loss),
        class_weights=t.params.get("class_weights", base.class_weights),
        cv_mean=mean, cv_se=se, folds_done=len(scores),
        fold_scores=scores,
        train_miou=sum(trains) / len(trains) if trains else None,
        weight_norm=sum(norms) / len(norms) if norms else None,
        epochs_run=t.user_attrs.get("epochs_run", 0),
        pruned=t.state == optuna.trial.TrialState.PRUNED,
        duplicate_of=t.user_attrs.get("duplicate_of"),
        skipped=t.user_attrs.get("skipped"),
        failure=t.user_attrs.get("failure") or retry_reason,
    )


def _tau(t: optuna.trial.FrozenTrial, base: TrainConfig, spe: float | None) -> float | None:
    """A trial's decay timescale in epochs of the CV fits (searched, or from its lambda)."""
    if "tau_epochs" in t.params:
        return t.params["tau_epochs"]
    lam = t.params.get("weight_decay")
    if lam is None or not spe:
        return None
    mode, lr = trial_decay(t.params, base)
    tau = tau_for_lambda(lam, spe, base.optimizer, mode, lr, base.momentum)
    return tau if math.isfinite(tau) else None


def write_trials_csv(path: Path, rows: list[TrialRow]) -> None:
    """trials.csv: one line per row, fold scores joined by ';', None as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS)
    writer.writeheader()
    for row in rows:
        r = row.as_dict()
        writer.writerow({k: (";".join(f"{v:.6g}" for v in r[k]) if k == "fold_scores"
                             else ("" if r[k] is None else r[k])) for k in TRIAL_COLUMNS})
    atomic_write_text(path, buf.getvalue())
