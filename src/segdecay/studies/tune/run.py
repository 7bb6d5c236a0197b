"""``segdecay tune``: choose lambda by (group, repeated) k-fold cross-validation on Optuna.

Run (or resume) the study with local worker processes, then summarize it: tune.json,
trials.csv, report.html and, with ``--refit``, a run on the whole training split.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.studies.tune.options import (
    MID_SCHEDULE_BIAS,
    TuneOptions,
    design_words,
    resolve_pruner,
    validate,
    validate_against,
)
from segdecay.studies.tune.rule import rule_of_study, rule_params, with_rule
from segdecay.studies.tune.screen import (
    full_options,
    promoted,
    screen_budget,
    screen_options,
    screen_payload,
)
from segdecay.studies.tune.search import run_worker, worker_entry
from segdecay.studies.tune.storage import open_storage, redact, resolve_storage_url
from segdecay.studies.tune.summary import summarize_study, trial_rows
from segdecay.studies.workers import printer, spawn_workers
from segdecay.training.defaults import resolve_defaults


def study_base(base: TrainConfig, options: TuneOptions, say) -> tuple[TrainConfig, float | None]:
    """The base config with its data defaults resolved once on the whole training split, so
    every fold fit and the refit share one loss, one input normalization and one lr; and
    the default rule's point at the fits' budget (None with ``--no-rule-point``)."""
    data = load_dataset_for(base)
    resolved, notes = resolve_defaults(base, data)
    for line in notes:
        if not line.startswith(("lambda", "validation")):  # the study sets both per fit
            say(f"default {line}")
    resolved = replace(resolved, weight_decay=base.weight_decay, eval_every=base.eval_every)
    return resolved, rule_of_study(resolved, options, data)


def run_tune(base: TrainConfig, options: TuneOptions, run_dir: str | Path,
             quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the study with ``options.workers`` local processes, then summarize."""
    chosen_by_default = options.pruner == "auto"
    options = resolve_pruner(options, base.epochs, base.steps)
    validate(options)
    say = printer(quiet)
    if (options.losses or options.weightings) and base.class_weights is None:
        base = replace(base, class_weights="none")  # searched, not decided by the rule
    base, rule = study_base(base, options, say)
    options = with_rule(options, rule)
    validate_against(options, base.optimizer, base.decay_mode, base.lr)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(options.storage, run_dir, options.workers)
    say(f"study '{options.study}' in {redact(url)}: {options.search} search, "
        f"{design_words(options)}, pruner {options.pruner}"
        f"{' (the default for this search)' if chosen_by_default else ''}, "
        f"{options.workers} worker(s)")
    if options.pruner in ("median", "hyperband"):
        say(MID_SCHEDULE_BIAS.format(pruner=options.pruner))
    if rule is not None:
        name = "tau" if options.tau_grid else "lambda"
        say(f"the default rule's {name} {rule:g} (tau half the fits' run) is scored beside "
            f"the searched ones")
    started = time.perf_counter()
    screen = None
    if options.pruner == "screen":
        options, screen = run_screen(base, options, run_dir, url, quiet, say, rule)
    elif rule is not None and options.search != "grid":
        enqueue_rule(base, options, url, rule)
    run_study(base, options, run_dir, url, quiet)
    return summarize_study(base, options, run_dir, url, time.perf_counter() - started, say,
                           screen=screen, rule=rule)


def enqueue_rule(base: TrainConfig, options: TuneOptions, url: str, rule: float) -> None:
    """A random or TPE search's first trial is the rule's (once: a resumed study has it)."""
    study = optuna.create_study(study_name=options.study, storage=open_storage(url),
                                direction="maximize", load_if_exists=True)
    study.enqueue_trial(rule_params(base, options, rule), skip_if_exists=True)


def run_study(base: TrainConfig, options: TuneOptions, run_dir: Path, url: str,
              quiet: bool) -> None:
    """Run (or resume) one study to the end with ``options.workers`` processes."""
    if options.workers == 1:
        run_worker(base, options, run_dir, url, quiet=True, progress=not quiet)
    else:
        spawn_workers(worker_entry, (asdict(base), asdict(options), str(run_dir), url,
                                     not quiet), options.workers)


def run_screen(base: TrainConfig, options: TuneOptions, run_dir: Path, url: str, quiet: bool,
               say, rule: float | None) -> tuple[TuneOptions, dict[str, Any]]:
    """The screen's short rung (its own study, fits under ``run_dir/screen``), then the
    options of the full-budget study over the points it promoted (the rule's point always:
    the check on the rule is made at the full budget)."""
    short, scale = screen_budget(base, options.screen_fraction)
    first = screen_options(options, scale)
    validate_against(first, base.optimizer, base.decay_mode, base.lr)
    budget = f"{short.steps} steps" if short.steps else f"{short.epochs} epochs"
    say(f"screen: every grid point on every fold at {budget} a fit, lambda x {scale:g} "
        f"(tau the same fraction of the run)")
    run_study(short, first, run_dir / "screen", url, quiet)
    study = optuna.load_study(study_name=first.study, storage=open_storage(url))
    rows = trial_rows(study, short)
    promotion = promoted(rows, options, rule)
    payload = screen_payload(rows, promotion, options.screen_fraction, short, scale)
    name = "tau" if promotion["axis"] == "tau_epochs" else "lambda"
    say(f"screen: promoted {name} {', '.join(f'{v:g}' for v in promotion['values'])} "
        f"to the full budget ({payload['epochs_run']} fit-epochs screened)")
    return full_options(options, promotion), payload
