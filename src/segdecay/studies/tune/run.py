"""``segdecay tune``: choose lambda by (group, repeated) k-fold cross-validation on Optuna.

:func:`run_tune` is a pipeline: plan (defaults, the rule's point, the storage), search
(after the screen's short rung with ``--pruner screen``), summarize (tune.json's payload from
the trial rows), refit (``--refit``: a run on the whole training split), write (tune.json,
trials.csv, report.html).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.fileio import write_json
from segdecay.studies.tune.options import (
    MID_SCHEDULE_BIAS,
    TuneOptions,
    design_words,
    resolve_pruner,
    validate,
    validate_against,
)
from segdecay.studies.tune.refit import refit_chosen
from segdecay.studies.tune.report import write_tune_report
from segdecay.studies.tune.rule import rule_of_study, rule_params, with_rule
from segdecay.studies.tune.screen import (
    ScreenResult,
    full_options,
    promoted,
    screen_budget,
    screen_options,
    screen_payload,
)
from segdecay.studies.tune.search import run_worker, worker_entry
from segdecay.studies.tune.storage import open_storage, redact, resolve_storage_url
from segdecay.studies.tune.summary import summarize_study, summary_lines
from segdecay.studies.tune.trials import TrialRow, counted, read_study, write_trials_csv
from segdecay.studies.workers import printer, spawn_workers
from segdecay.training.defaults import resolve_defaults


@dataclass(frozen=True)
class TunePlan:
    """A tune's resolved inputs: the base config with its data defaults, the options with
    the pruner resolved and the rule's point added, that point, where the study lives."""

    base: TrainConfig
    options: TuneOptions
    rule: float | None
    run_dir: Path
    url: str


def run_tune(base: TrainConfig, options: TuneOptions, run_dir: str | Path,
             quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the study with ``options.workers`` local processes, then summarize
    it, refit the choice (``--refit``) and write tune.json, trials.csv and report.html;
    returns tune.json's payload."""
    say = printer(quiet)
    plan = plan_tune(base, options, Path(run_dir), say)
    started = time.perf_counter()
    options, screen = run_search(plan, quiet, say)
    seconds = time.perf_counter() - started
    rows, facts = read_study(plan.url, options.study, plan.base)
    payload = summarize_study(rows, facts, plan.base, options, url=plan.url, seconds=seconds,
                              screen=screen, rule=plan.rule)
    for line in summary_lines(payload):
        say(line)
    if options.refit and "chosen" in payload:
        payload["refit"] = refit_chosen(plan.base, options, plan.run_dir, payload, say)
    write_tune(plan.run_dir, payload, rows, say)
    return payload


def plan_tune(base: TrainConfig, options: TuneOptions, run_dir: Path, say) -> TunePlan:
    """Check the options, resolve the data defaults and the rule's point once, open the
    run folder and say what the study will do."""
    chosen_by_default = options.pruner == "auto"
    options = resolve_pruner(options, base.epochs, base.steps)
    validate(options)
    if (options.losses or options.weightings) and base.class_weights is None:
        base = replace(base, class_weights="none")  # searched, not decided by the rule
    base, rule = study_base(base, options, say)
    options = with_rule(options, rule)
    validate_against(options, base.optimizer, base.decay_mode, base.lr)
    run_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_storage_url(options.storage, run_dir, options.workers)
    announce(options, url, rule, chosen_by_default, say)
    return TunePlan(base, options, rule, run_dir, url)


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


def announce(options: TuneOptions, url: str, rule: float | None, chosen_by_default: bool,
             say) -> None:
    """The study's lines: where it lives, its design and pruner, the rule's point."""
    say(f"study '{options.study}' in {redact(url)}: {options.search} search, "
        f"{design_words(options)}, pruner {options.pruner}"
        f"{' (the default for this search)' if chosen_by_default else ''}, "
        f"{options.workers} worker(s)")
    if options.pruner in ("median", "hyperband"):
        say(MID_SCHEDULE_BIAS.format(pruner=options.pruner))
    if rule is not None:
        name = "tau" if options.tau_grid else "lambda"
        say(f"the default rule's {name} {rule:g} (tau the fits' whole run) is scored beside "
            f"the searched ones")


def run_search(plan: TunePlan, quiet: bool, say) -> tuple[TuneOptions, ScreenResult | None]:
    """The study, run to its end: with ``--pruner screen`` over the points the screen's
    short rung promoted (the options returned are then the full-budget study's), in a
    random or TPE search with the rule's trial first."""
    options, screen = plan.options, None
    if options.pruner == "screen":
        options, screen = run_screen(plan.base, options, plan.run_dir, plan.url, quiet, say,
                                     plan.rule)
    elif plan.rule is not None and options.search != "grid":
        enqueue_rule(plan.base, options, plan.url, plan.rule)
    run_study(plan.base, options, plan.run_dir, plan.url, quiet)
    return options, screen


def write_tune(run_dir: Path, payload: dict[str, Any], rows: list[TrialRow], say) -> None:
    """trials.csv, tune.json and report.html, and the compute the study used."""
    write_trials_csv(run_dir / "trials.csv", counted(rows))
    write_json(run_dir / "tune.json", payload)
    write_tune_report(run_dir, payload)
    compute = payload["compute"]
    say(f"used {compute['epochs_run']} of {compute['epochs_full_grid']} fit-epochs "
        f"({compute['fraction'] or 0:.0%}); wrote {run_dir / 'tune.json'}, "
        f"{run_dir / 'report.html'}")


def enqueue_rule(base: TrainConfig, options: TuneOptions, url: str, rule: float) -> None:
    """A random or TPE search's first trial is the rule's (once: a resumed study has it)."""
    study = optuna.create_study(study_name=options.study, storage=open_storage(url),
                                direction="maximize", load_if_exists=True)
    study.enqueue_trial(rule_params(base, options, rule), skip_if_exists=True)


def run_study(base: TrainConfig, options: TuneOptions, run_dir: Path, url: str,
              quiet: bool, lambda_scale: float = 1.0) -> None:
    """Run (or resume) one study to the end with ``options.workers`` processes; its fits
    train lambda x ``lambda_scale`` (the screen's short runs: tau moved with the run)."""
    if options.workers == 1:
        run_worker(base, options, run_dir, url, quiet=True, progress=not quiet,
                   lambda_scale=lambda_scale)
    else:
        spawn_workers(worker_entry, (asdict(base), asdict(options), str(run_dir), url,
                                     not quiet, lambda_scale), options.workers)


def run_screen(base: TrainConfig, options: TuneOptions, run_dir: Path, url: str, quiet: bool,
               say, rule: float | None) -> tuple[TuneOptions, ScreenResult]:
    """The screen's short rung (its own study, fits under ``run_dir/screen``), then the
    options of the full-budget study over the points it promoted (the rule's point always:
    the check on the rule is made at the full budget)."""
    short, scale = screen_budget(base, options.screen_fraction)
    first = screen_options(options)
    validate_against(first, base.optimizer, base.decay_mode, base.lr, lambda_scale=scale)
    budget = f"{short.steps} steps" if short.steps else f"{short.epochs} epochs"
    say(f"screen: every grid point on every fold at {budget} a fit, lambda x {scale:g} "
        f"(tau the same fraction of the run)")
    run_study(short, first, run_dir / "screen", url, quiet, lambda_scale=scale)
    rows, _ = read_study(url, first.study, short)
    promotion = promoted(rows, options, rule)
    payload = screen_payload(rows, promotion, options.screen_fraction, short, scale)
    name = "tau" if promotion["axis"] == "tau_epochs" else "lambda"
    say(f"screen: promoted {name} {', '.join(f'{v:g}' for v in promotion['values'])} "
        f"to the full budget ({payload['epochs_run']} fit-epochs screened)")
    return full_options(options, promotion), ScreenResult(rows, payload)
