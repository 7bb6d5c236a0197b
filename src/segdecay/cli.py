"""Command line: ``segdecay train | evaluate | predict | demo``.

Options of ``train`` are generated from ``TrainConfig`` so the CLI, the YAML files and the
Python API never drift apart. Precedence: defaults < ``--config FILE`` < explicit options.
User errors print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segdecay.config import TrainConfig, from_dict, help_texts, load_config
from segdecay.errors import UserError

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
    train(config, out, resume=args.resume, log=Log(quiet=args.quiet))
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
    except KeyboardInterrupt:
        print(f"segdecay {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
