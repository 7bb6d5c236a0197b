"""Same lambda grid with and without pruning: compute used and whether the choice moves.

    .venv/bin/python benchmarks/tune_pruning.py [--data synthetic] [--grid 0,1e-4,...]
        [--pruners race,screen:0.2,median,hyperband] [--seeds 0,1,2] [--verify]

Per seed it runs the full grid once (no pruning) with k-fold CV, which records every trial's
per-epoch val mIoU. ``screen`` (``screen:0.2`` for another fraction) runs for real: its
short runs are whole runs of their own. Each other pruner is replayed on those recorded
curves, trial by trial in the same order, through Optuna's own pruner objects: a pruned
trial's curve is a prefix of the full one because runs are deterministic (same seed, same
numbers on CPU), so the replay makes exactly the decisions a real pruned study would, at no
extra training cost.
``--verify`` also runs the first pruner for real and checks the replay against it.
``--refit-rules 1se,1se-unpaired,min`` refits the full grid's choice under each rule on the
whole training split and scores test (one refit per distinct lambda, kept beside the study),
with whether the report called the evidence sufficient.

Prints, per seed and pruner, the fit-epochs used as a fraction of the full grid, both
choices of lambda, and whether they agree within one grid step, whether its choice lies in
the full grid's paired 1-SE set (where the full grid itself could have landed on a reseed),
and whether the full grid's lambda.min is interior. The choice is made by ``--select``
(default: the paired 1-SE rule) on both sides. A last block sets each pruner's agreement
beside the full grid's own: how often two full grids of different seeds (a new training seed
and new folds; with ``synthetic`` data the seed also draws a new dataset unless the spec
fixes it, as in ``--data synthetic:seed=0``) choose the same lambda.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import optuna

from segdecay.config import TrainConfig, load_config
from segdecay.studies.tune import TuneOptions, parse_grid, run_tune
from segdecay.studies.tune.search import make_pruner, reports_per_fold
from segdecay.studies.tune.selection import select_lambda, select_paired
from segdecay.studies.tune.storage import resolve_storage_url

# Each recipe pins the options its figures were measured with (benchmarks/recipes/*.yaml say
# which): demo is the classic SGD recipe at batch 2, demo-adamw the AdamW one, camvid-reduced
# the reduced CamVid tune (for --data camvid:../shared/data/camvid).
RECIPE_FILES = {"default": "synthetic-classic.yaml", "demo": "synthetic-sgd.yaml",
                "demo-adamw": "synthetic-adamw.yaml", "camvid-reduced": "camvid-reduced.yaml"}
RECIPES = {name: load_config(Path(__file__).parent / "recipes" / file)
           for name, file in RECIPE_FILES.items()}


def recorded_trials(run_dir: Path, options: TuneOptions) -> list[dict]:
    """Every complete trial of a finished study: lambda, per-epoch curve and fold scores."""
    url = resolve_storage_url(options.storage, run_dir, options.workers)
    study = optuna.load_study(study_name=options.study, storage=url)
    return [{"lam": t.params["weight_decay"], "curve": dict(t.intermediate_values),
             "folds": list(t.user_attrs["fold_scores"])}
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            if t.state == optuna.trial.TrialState.COMPLETE]


def replay(trials: list[dict], options: TuneOptions, epochs: int) -> dict:
    """Run ``options.pruner`` over recorded trials; fit-epochs used and the lambda chosen."""
    # Hyperband assigns brackets by a hash of the study name and trial number: same name.
    study = optuna.create_study(study_name=options.study, direction="maximize",
                                pruner=make_pruner(options, epochs),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    used, results = 0, {}
    for rec in trials:
        trial = study.ask()
        if reports_per_fold(options):
            steps = [(i, score, (i + 1) * epochs) for i, score in enumerate(rec["folds"])]
        else:
            steps = [(s, v, s + 1) for s, v in sorted(rec["curve"].items())]
        pruned = False
        for k, (step, value, cost) in enumerate(steps):
            trial.report(value, step)
            last_fit = reports_per_fold(options) and k + 1 == len(steps)
            if not last_fit and trial.should_prune():  # as the objective: never after the last
                used += cost
                pruned = True
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        if not pruned:
            used += epochs * len(rec["folds"])
            results[rec["lam"]] = rec["folds"]
            study.tell(trial, sum(rec["folds"]) / len(rec["folds"]))
    return {"epochs_run": used, "chosen": choice(results, options)}


def choice(results: dict[float, list[float]], options: TuneOptions) -> float:
    """The lambda ``options.select`` picks from complete fold scores (as tune.json's)."""
    if options.select == "1se-unpaired":
        return select_lambda(results)["lambda_1se"]
    picked = select_paired(results, options.folds)
    return picked["lambda_min"] if options.select == "min" else picked["lambda_1se"]


def refit_line(base: TrainConfig, options: TuneOptions, run_dir: Path) -> str:
    """One rule's choice on the finished full grid, its refit's test mIoU, the evidence."""
    payload = run_tune(base, options, run_dir, quiet=True)
    refit, evidence = payload["refit"], payload["evidence"]
    return (f"     refit {options.select:>12}: lambda {payload['chosen']:g}, "
            f"{refit['split']} mIoU {refit['miou']:.4f} ({Path(refit['run']).name}); "
            f"evidence {'sufficient' if evidence['sufficient'] else 'insufficient'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--grid", default="0,1e-5,1e-4,1e-3,1e-2,1e-1")
    parser.add_argument("--pruners", default="race,screen,median,hyperband",
                        help="replayed on the full grid's curves; screen[:FRACTION] runs for "
                             "real (its short runs are not prefixes of the full ones)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--select", default="1se", choices=["1se", "1se-unpaired", "min"])
    parser.add_argument("--recipe", default="default", choices=list(RECIPES),
                        help="the classic SGD recipe (batch 8), the same on the demo's batch 2 "
                             "for 40 epochs, the demo's AdamW recipe (10 epochs), or reduced "
                             "CamVid")
    parser.add_argument("--verify", action="store_true",
                        help="also run the first pruner for real and compare with the replay")
    parser.add_argument("--refit-rules", default="",
                        help="refit the full grid's choice under these rules, score test")
    parser.add_argument("--keep", default=None,
                        help="keep the studies in this folder; a rerun reuses finished ones")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    pruners = [p.strip() for p in args.pruners.split(",") if p.strip()]
    print(f"{'seed':>4} {'pruner':>9} {'fraction':>8} {'lambda full':>11} "
          f"{'lambda pruned':>13} {'same':>5} {'same/adjacent':>13} {'in band':>7} "
          f"{'interior':>8}")
    full_choices: list[float] = []
    matches: dict[str, list[bool]] = {p: [] for p in pruners}
    for seed in (int(s) for s in args.seeds.split(",")):
        base = replace(RECIPES[args.recipe], data=args.data, seed=seed)
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(args.keep) / f"seed{seed}" if args.keep else Path(scratch)
            full_opts = TuneOptions(grid=grid, folds=args.folds, pruner="none",
                                    select=args.select, seed=seed)
            full = run_tune(base, full_opts, Path(tmp) / "none", quiet=True)
            trials = recorded_trials(Path(tmp) / "none", full_opts)
            total = full["compute"]["epochs_run"]
            a = full["chosen"]
            full_choices.append(a)
            interior = full["lambda_min"] not in (grid[0], grid[-1])
            band = full["selection"]["within_paired"]  # the full grid's paired 1-SE set
            for pruner in pruners:
                if pruner.startswith("screen"):  # short runs are not prefixes: run it
                    given = pruner.partition(":")[2]
                    fraction = float(given) if given else full_opts.screen_fraction
                    opts = replace(full_opts, pruner="screen", screen_fraction=fraction)
                    real = run_tune(base, opts, Path(tmp) / pruner.replace(":", "-"),
                                    quiet=True)
                    r = {"epochs_run": real["compute"]["epochs_run"], "chosen": real["chosen"]}
                else:
                    opts = replace(full_opts, pruner=pruner)
                    r = replay(trials, opts, base.epochs)
                matches[pruner].append(r["chosen"] == a)
                close = abs(grid.index(a) - grid.index(r["chosen"])) <= 1
                print(f"{seed:>4} {pruner:>9} {r['epochs_run'] / total:>8.2f} {a:>11g} "
                      f"{r['chosen']:>13g} {str(r['chosen'] == a):>5} {str(close):>13} "
                      f"{str(r['chosen'] in band):>7} {str(interior):>8}", flush=True)
                if args.verify and pruner == pruners[0] and not pruner.startswith("screen"):
                    real = run_tune(base, opts, Path(tmp) / pruner, quiet=True)
                    same = (real["compute"]["epochs_run"], real["chosen"]) == (
                        r["epochs_run"], r["chosen"])
                    print(f"     verify {pruner}: real run used {real['compute']['epochs_run']}"
                          f" fit-epochs and chose {real['chosen']:g}; replay "
                          f"{r['epochs_run']} and {r['chosen']:g}: "
                          f"{'identical' if same else 'DIFFERENT'}", flush=True)
            for rule in (r.strip() for r in args.refit_rules.split(",") if r.strip()):
                print(refit_line(base, replace(full_opts, select=rule, refit=True),
                                 Path(tmp) / "none"), flush=True)
        curve = ", ".join(f"{p['lam']:g}: {p['mean']:.3f}±{p['se']:.3f}"
                          for p in full["selection"]["curve"])
        print(f"     full grid ({total} fit-epochs), CV curve: {curve}; "
              f"paired 1-SE set {', '.join(f'{v:g}' for v in band)}"
              f", evidence {'sufficient' if full['evidence']['sufficient'] else 'insufficient'}",
              flush=True)
    print(agreement_lines(full_choices, matches))


def agreement_lines(full_choices: list[float], matches: dict[str, list[bool]]) -> str:
    """How often each pruner matched its seed's full grid, beside how often two full grids
    of different seeds agree with each other: the reference's own noise floor."""
    pairs = [(a, b) for i, a in enumerate(full_choices) for b in full_choices[i + 1:]]
    same = sum(a == b for a, b in pairs)
    lines = [f"full grid's choice per seed: {', '.join(f'{c:g}' for c in full_choices)}; "
             f"reseeded full grids agree in {same} of {len(pairs)} pairs"]
    lines += [f"{p}: same choice as its seed's full grid in {sum(m)} of {len(m)}"
              for p, m in matches.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
