"""Options dataclasses -> argparse: one flag per field, for every command.

A field declared with :func:`segdecay.config.option` carries all its flag needs: help,
default, choices, flag name, metavar, and the parser of its text; one declared with
:func:`segdecay.config.internal` has no flag. :func:`add_options` makes the flags
(``TrainConfig``'s for every command that trains, ``TuneOptions``, ``CompareOptions`` and
``SpectrumOptions`` for their commands) and :func:`options_from_args` builds the dataclass
back from the parsed command line, so no command maps flags to fields by hand.

Defaults are suppressed in argparse, so a command knows which options were given (for
TrainConfig, precedence: defaults < ``--config FILE`` < explicit options) and the default
lives on the field alone; the help's ``[default: X]`` is read from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from segdecay.config import (
    COMMAND_LINE,
    TrainConfig,
    flag_of,
    from_dict,
    load_config,
    value_type,
)
from segdecay.errors import UserError

TRAIN_HEADING = "training options (also keys of --config YAML)"


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are flags. Every field is declared with ``option()`` or
    ``internal()``, so a new field cannot silently go without a flag."""
    out = []
    for f in dataclasses.fields(cls):
        if "internal" in f.metadata:
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name}: declare it with option() or internal()")
        out.append(f)
    return out


def option_name(name: str, cls: type = TrainConfig) -> str:
    """The flag of a field: ``--batch-size``, or its declared ``flag``."""
    return flag_of({f.name: f for f in dataclasses.fields(cls)}[name])


def shown_default(f: dataclasses.Field) -> str | None:
    """What the help shows as ``[default: X]``: the declared ``default_text``, else the
    default as it is typed (lists comma-separated); None where there is nothing to show."""
    meta = f.metadata
    if meta.get("default_text"):
        return meta["default_text"]
    if meta.get("switch"):
        return None  # a switch is off unless given
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if default is dataclasses.MISSING or default in (None, [], ""):
        return None
    if isinstance(default, (list, tuple)):
        return ",".join(str(v) for v in default)
    return str(default)


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    shown = shown_default(f)
    if shown is not None:
        text += f" [default: {shown}]"
    return text.replace("%", "%%")  # argparse formats help with %


def _argument(cls: type, f: dataclasses.Field) -> dict[str, Any]:
    """argparse keywords for one field."""
    meta = f.metadata
    vt = value_type(f.name, cls)
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f)}
    if vt.kind is bool:
        kwargs["action"] = "store_true" if meta.get("switch") else argparse.BooleanOptionalAction
        return kwargs
    if meta.get("repeatable"):  # one value per flag (--decay-rule)
        kwargs["action"] = "append"
    if meta.get("choices"):
        kwargs["choices"] = list(meta["choices"])
    if vt.kind in (int, float):
        kwargs["type"] = vt.kind
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    elif vt.kind is list and not meta.get("parse"):  # TrainConfig's sizes and name lists
        kwargs["metavar"] = "HxW" if vt.item is int else "A,B,..."
    return kwargs


def add_options(parser: argparse.ArgumentParser, cls: type, heading: str | None = None) -> None:
    """One flag per option field of ``cls``, listed under the field's ``group``, else under
    ``heading``, else among the parser's own options; in field order."""
    containers: dict[str | None, Any] = {None: parser}
    for f in option_fields(cls):
        title = f.metadata.get("group") or heading
        if title not in containers:
            containers[title] = parser.add_argument_group(title)
        containers[title].add_argument(flag_of(f), **_argument(cls, f))


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, grouped under one heading."""
    add_options(parser, TrainConfig, TRAIN_HEADING)


def given_options(args: argparse.Namespace, cls: type = TrainConfig) -> dict[str, Any]:
    """The options of ``cls`` given on the command line, as argparse left them (defaults are
    suppressed, so an option not given is absent), in the order they were given."""
    names = {f.name for f in option_fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _parsed(f: dataclasses.Field, value: Any) -> Any:
    """A given option's value: its text through the field's parser, if it declares one."""
    parse = f.metadata.get("parse")
    if parse is None:
        return value  # argparse converted it already (type, choices, bool actions)
    if value == "" and f.default is None:
        return None  # `--grid ""` is no grid, as an empty list option always was
    return parse(value, flag_of(f))


def options_from_args(cls: type, args: argparse.Namespace,
                      derived: dict[str, Any] | None = None) -> Any:
    """``cls`` from the options given on the command line, each text through its parser,
    then ``derived`` (the values a command works out from other options, which it
    documents); the fields' defaults for the rest."""
    fields = {f.name: f for f in option_fields(cls)}
    values = {k: _parsed(fields[k], v) for k, v in given_options(args, cls).items()}
    return cls(**{**values, **(derived or {})})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then ``--config``, then the options given on the command line."""
    base = load_config(args.config) if getattr(args, "config", None) else TrainConfig()
    return from_dict(given_options(args), COMMAND_LINE, base)


def parse_grid(text: str, flag: str = "--grid") -> list[float]:
    """'0,1e-5,1e-4' -> sorted unique floats >= 0 (a lambda or lr grid of any study)."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise UserError(f"{flag} '{text}': expected comma-separated numbers") from exc
    if not values or min(values) < 0 or not all(math.isfinite(v) for v in values):
        raise UserError(f"{flag} '{text}': need finite values >= 0")
    return values
