"""TrainConfig -> argparse: one flag per field, for every command that takes train options.

Help texts, choices, flag names and metavars come from the fields' declarations in
:mod:`segdecay.config`; defaults are suppressed so a command knows which options were
given (precedence: defaults < ``--config FILE`` < explicit options).
"""

from __future__ import annotations

import argparse

from segdecay.config import TrainConfig, from_dict, load_config, value_type


def option_name(name: str) -> str:
    """The flag of a TrainConfig field: ``--batch-size``, or its declared ``flag``."""
    return TrainConfig.fields()[name].metadata.get("flag") or "--" + name.replace("_", "-")


def _argument(name: str, default) -> dict:
    """argparse keywords for one field."""
    meta = TrainConfig.fields()[name].metadata
    vt = value_type(name)
    help_text = meta.get("help", "")
    if default not in (None, [], ""):
        help_text += f" [default: {default}]"
    kwargs: dict = {"dest": name, "default": argparse.SUPPRESS,
                    "help": help_text.replace("%", "%%")}
    if vt.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        return kwargs
    if meta.get("repeatable"):  # one value per flag (--decay-rule)
        kwargs["action"] = "append"
    if meta.get("choices"):
        kwargs["choices"] = list(meta["choices"])
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    elif vt.kind is list:
        kwargs["metavar"] = "HxW" if vt.item is int else "A,B,..."
    elif vt.kind in (int, float):
        kwargs["type"] = vt.kind
    return kwargs


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, grouped under one heading."""
    defaults = TrainConfig()
    group = parser.add_argument_group("training options (also keys of --config YAML)")
    for name in TrainConfig.fields():
        group.add_argument(option_name(name), **_argument(name, getattr(defaults, name)))


def given_options(args: argparse.Namespace) -> dict:
    """The TrainConfig options given on the command line (defaults are suppressed)."""
    return {k: v for k, v in vars(args).items() if k in TrainConfig.fields()}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then ``--config``, then the options given on the command line."""
    base = load_config(args.config) if getattr(args, "config", None) else TrainConfig()
    return from_dict(given_options(args), "command line", base)
