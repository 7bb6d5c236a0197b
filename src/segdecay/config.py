"""One dataclass holds everything a training run needs; it round-trips through YAML.

``config.yaml`` in a run folder is this dataclass, fully resolved, so ``segdecay train
--config RUN/config.yaml`` reruns it. Each field declares its help text and, where it has
them, its choices (HfArgumentParser style, with :func:`option`, which the studies' options
use too): the CLI (:mod:`segdecay.options`), the YAML check and the modules that act on a
choice all read them from here. Unknown keys, unknown choices and bad values fail with
the file or option named.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segdecay.errors import UserError
from segdecay.fileio import atomic_write_text

OPTIMIZERS = ("sgd", "sgd-nesterov", "adam", "adamw")
SCHEDULES = ("poly", "cosine", "constant")
DECAY_MODES = ("penalty", "coupled", "decoupled")
NO_DECAY = ("ndim<2", "norm+bias", "none")
LOSSES = ("ce", "dice", "focal", "ce+dice", "lovasz")
CLASS_WEIGHTS = ("none", "inverse", "median", "enet")
AUGMENTS = ("none", "flip", "light", "strong", "d4")
NORMALIZE = ("auto", "dataset", "imagenet")
DECISIONS = ("argmax", "adjusted")
TTAS = ("auto", "none", "flip", "d4")  # test-time augmentation: auto is chosen on val
MASK_ENCODINGS = ("auto", "binary", "index")
RUN_DECISIONS = ("run", "argmax")  # evaluate/predict --decision: the run's own, or plain
RUN_TTAS = ("run", "none", "flip", "d4")  # evaluate/predict --tta: the run's own, or forced
CHECKPOINTS = ("best", "last")  # the weights of the best validation, or the final ones
ANSWERS = ("auto", *CHECKPOINTS)  # train --checkpoint: auto is chosen on val
RUN_CHECKPOINTS = ("run", *CHECKPOINTS)  # evaluate/predict --checkpoint: the run's own, or forced
SPLITS = ("train", "val", "test")  # the split names every dataset may have


def option(default: Any = None, help: str = "", *, choices: tuple[str, ...] = (),
           factory: Any = None, flag: str | None = None, metavar: str | None = None,
           repeatable: bool = False, parse: Any = None, default_text: str | None = None,
           switch: bool = False, group: str | None = None) -> Any:
    """A dataclass field that is a command-line option, declared once with everything its
    flag needs (:mod:`segdecay.options` builds the flag; TrainConfig's are YAML keys too).

    ``flag``: the flag's name where it is not ``--field-name``; ``repeatable``: one value
    per flag (``--decay-rule A=1 --decay-rule B=2``); ``parse(text, flag)``: the value from
    the flag's text, errors naming the flag; ``default_text``: the help's ``[default: X]``
    where the value does not say it (a default resolved later, or spelled otherwise on the
    command line); ``switch``: a bool turned on by ``--flag`` alone (no ``--no-`` form);
    ``group``: the help heading it is listed under, else the command's.
    """
    metadata = {"help": help, "choices": tuple(choices), "flag": flag, "metavar": metavar,
                "repeatable": repeatable, "parse": parse, "default_text": default_text,
                "switch": switch, "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def internal(default: Any = dataclasses.MISSING, why: str = "", *, factory: Any = None) -> Any:
    """A field of an options dataclass with no flag of its own: ``why`` says where its value
    comes from (derived from other options, or set through the Python API only)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"internal": why})
    return field(default=default, metadata={"internal": why})


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of an option field: its declared ``flag``, else ``--name``
    with dashes (the one place flag names are made)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass
class TrainConfig:
    """A training run: every option of ``segdecay train`` and every key of its YAML."""

    # data
    data: str = option("synthetic", "dataset spec: synthetic | camvid:PATH | folder:PATH")
    num_classes: int | None = option(None, "classes of a folder: dataset (else classes.txt)")
    class_names: list[str] | None = option(None, "class names of a folder: dataset")
    val_fraction: float = option(0.2, "hold-out fraction when a folder: dataset has no val "
                                 "split")
    mask_encoding: str = option("auto", "how a folder: dataset's mask values are read: "
                                "binary (values >= 128 are the foreground) | index (class ids, "
                                "255 ignore); auto: 0/255 masks binary, others class ids, and "
                                "binary-looking masks with stray values refused",
                                choices=MASK_ENCODINGS)
    # model
    arch: str = option("unet", "smp architecture (unet, fpn, deeplabv3plus, ...)")
    encoder: str = option("resnet18", "smp encoder (resnet18, mobilenet_v2, efficientnet-b0, "
                          "..., or tu-NAME for any timm model)")
    encoder_weights: str | None = option(None, "pretrained encoder weights (needs a download)")
    dropout: float = option(0.0, "Dropout2d probability before the segmentation head")
    ema: float = option(0.0, "average the weights over this fraction of the run's last "
                        "steps (0.1: an exponential moving average over a tenth of the "
                        "run); validation, checkpoints, evaluate and predict use the "
                        "average; 0: the final weights")
    # optimization
    optimizer: str = option("adamw", "adamw (decoupled decay: lambda acts on the timescale "
                            "1/(lr·lambda)) | sgd | sgd-nesterov | adam; --optimizer sgd is "
                            "the classic recipe (lr 0.05, momentum 0.9, poly)",
                            choices=OPTIMIZERS)
    lr: float | None = option(None, "base learning rate; unset: 0.05 for SGD, 1e-3 for Adam/"
                              "AdamW")
    momentum: float = option(0.9, "SGD momentum (beta1 of Adam is fixed at 0.9)")
    schedule: str = option("poly", "lr schedule per step: poly | cosine | constant",
                           choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "linear warmup length in epochs")
    # regularization
    weight_decay: float | None = option(
        None, "lambda in L = L_data + (lambda/2)·sum(w^2); unset: the lambda whose decay "
        "timescale tau = 1/(lr_eff·lambda) is the run's length in steps (any optimizer; 1e-4 "
        "for Adam + L2, which has no timescale)")
    decay_mode: str | None = option(None, "penalty (loss) | coupled (grad) | decoupled "
                                    "(shrink)", choices=DECAY_MODES)
    l1: float = option(0.0, "alpha of an L1 penalty alpha·sum|w| on the decayed tensors")
    no_decay: str = option("ndim<2", "undecayed: ndim<2 | norm+bias | none", choices=NO_DECAY)
    decay_rules: list[str] = option(help="PATTERN=MULT: MULT x lambda", factory=list,
                                    flag="--decay-rule", metavar="PATTERN=MULT",
                                    repeatable=True)
    # loss
    loss: str | None = option(None, "data loss (segmentation_models_pytorch losses; ce+dice "
                              "sums both); unset: ce+dice when a class covers under 5% of "
                              "the training pixels, else ce", choices=LOSSES)
    class_weights: str | None = option(None, "CE weights: none | inverse | median | enet; "
                                       "unset: enet on multi-class data with a class under "
                                       "5% of the training pixels, else none",
                                       choices=CLASS_WEIGHTS)
    decision: str | None = option(None, "how a pixel's class is decided: argmax | adjusted "
                                  "(argmax of logit - t·log prior, t chosen on val at the end "
                                  "of the run: post-hoc logit adjustment; evaluate and predict "
                                  "use it); unset: adjusted when there are val images",
                                  choices=DECISIONS)
    tta: str = option("auto", "test-time augmentation, averaging probabilities: none | flip "
                      "(horizontal) | d4 (flips both ways and quarter turns); auto: the "
                      "training augmentation's group, kept if it scores higher on val at the "
                      "end of the run; evaluate and predict use the run's choice",
                      choices=TTAS)
    checkpoint: str | None = option(None, "the weights the run answers with: best (those of "
                                    "its best validation) | last (the final weights) | auto "
                                    "(best if its val mIoU beats the final weights' by over "
                                    "two bootstrap SEs over the val images, else last); the "
                                    "decision is chosen on val for them, and evaluate and "
                                    "predict load them; unset: auto when there are val "
                                    "images, else last", choices=ANSWERS)
    # schedule of work
    epochs: int = option(30, "training epochs (ignored when steps is set)")
    steps: int | None = option(None, "total optimizer steps instead of epochs")
    batch_size: int | None = option(None, "images per step; unset: 8, fewer (4, then 2) "
                                    "when the training split has under 16 batches of 8")
    size: list[int] | None = option(None, "training input HxW (images resized); default "
                                    "native")
    crop: list[int] | None = option(None, "random crop HxW taken from the resized image")
    eval_size: list[int] | None = option(None, "input HxW at evaluation, or native; unset: "
                                         "--size (else native)")
    augment: str | None = option(None, "none | flip | light (+ scale 0.75-1.25) | strong (+ "
                                 "jitter) | d4 (flips both ways + 90-degree turns of square "
                                 "inputs: orientation-free images); unset: d4 when the "
                                 "training labels look the same upside down, else light",
                                 choices=AUGMENTS)
    normalize: str = option("auto", "input mean/std: dataset (the training images' own) | "
                            "imagenet; auto: dataset from scratch, imagenet with "
                            "--encoder-weights", choices=NORMALIZE)
    input_mean: list[float] | None = option(None, "per-channel input mean on a 0..1 scale "
                                            "(set by --normalize; stored with the run)")
    input_std: list[float] | None = option(None, "per-channel input std on a 0..1 scale")
    # execution
    seed: int = option(0, "seed of weights, batch order and augmentation")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    channels_last: bool = option(True, "channels_last memory format")
    amp: bool | None = option(None, "bf16 autocast; unset: on where native (AVX512-BF16/AMX, "
                              "GPU)")
    compile: bool = option(False, "torch.compile the model (falls back to eager if it fails)")
    eval_every: int | None = option(None, "validate every N epochs (and always at the "
                                    "end); unset: about 10-20 validations per run")
    sync_bn: bool = option(False, "SyncBatchNorm across DDP processes")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML/JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        """Fields by name."""
        return {f.name: f for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class ValueType:
    """What a field holds: ``kind`` (int, float, bool, str or list), ``item`` for lists."""

    kind: type
    item: type | None
    optional: bool


@functools.cache
def value_type(name: str, cls: type = TrainConfig) -> ValueType:
    """The declared type of a field of ``cls``, from its annotation (not its text)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is list:
        return ValueType(list, typing.get_args(hint)[0], optional)
    return ValueType(hint, None, optional)


def parse_size(text: str | list | tuple | None, option: str) -> tuple[int, int] | None:
    """'HxW' or 'S' -> (H, W); None passes through. Errors name the option."""
    if text is None or text == "" or (isinstance(text, (list, tuple)) and not text) or (
            isinstance(text, str) and text.strip().lower() == "native"):
        return None  # native size (an empty list is --eval-size native)
    if isinstance(text, (list, tuple)):
        parts = [str(v) for v in text]
    else:
        parts = str(text).lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise UserError(f"{option} '{text}': expected HxW (e.g. 192x256) or one number") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise UserError(f"{option} '{text}': expected HxW with both sides >= 8")
    return values[0], values[1]


# Counts that make no sense below these values (0 epochs, batches of 0 images, ...).
MINIMUM_COUNTS = {"epochs": 1, "steps": 1, "batch_size": 1, "eval_every": 1}
_NON_NEGATIVE = {"lr", "momentum", "warmup_epochs", "weight_decay", "l1", "dropout",
                 "val_fraction"}
_FRACTIONS = {"ema"}  # fractions of the run


# The source of values given as flags (or through the API, checked the same way): errors
# name the option by its flag, not by a file's key.
COMMAND_LINE = "command line"


def _label(name: str, source: str) -> str:
    """How an error names the option: ``--batch-size`` or ``--config FILE: 'batch_size'``."""
    if source == COMMAND_LINE:
        return flag_of(TrainConfig.fields()[name])
    return f"{source}: '{name}'"


def _is_whole(value: Any) -> bool:
    return not isinstance(value, bool) and not (isinstance(value, float)
                                                and not value.is_integer())


def _coerce(name: str, value: Any, source: str) -> Any:
    vt = value_type(name)
    if value is None:
        if vt.optional:
            return None
        raise UserError(f"{source}: '{name}' may not be empty")
    try:
        if vt.kind is int:
            if not _is_whole(value):
                raise ValueError
            return int(value)
        if vt.kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if vt.kind is bool:
            return _coerce_bool(value)
        if vt.kind is list and vt.item is int:
            if name == "eval_size" and (value == "native" or (
                    isinstance(value, (list, tuple)) and not value)):
                return []  # evaluate at the images' own size
            if isinstance(value, str):
                return list(parse_size(value, _label(name, source)))
            if not isinstance(value, (list, tuple)) or not all(_is_whole(v) for v in value):
                raise ValueError
            # Same rules as the HxW text form: one or two sides, each at least 8.
            return list(parse_size([int(v) for v in value], _label(name, source)))
        if vt.kind is list and vt.item is float:
            return _float_triple(value)
        if vt.kind is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # int(inf) overflows
        raise UserError(f"{source}: '{name}' has a bad value {value!r} (expected "
                        f"{_type_text(vt)})") from exc


def _float_triple(value: Any) -> list[float]:
    """Three finite floats (one per RGB channel) from 'A,B,C' or a list."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) != 3 or any(
            isinstance(v, bool) for v in items):
        raise ValueError
    floats = [float(v) for v in items]
    if not all(math.isfinite(v) for v in floats):
        raise ValueError
    return floats


def _type_text(vt: ValueType) -> str:
    text = f"list[{vt.item.__name__}]" if vt.kind is list else vt.kind.__name__
    return text + (" | None" if vt.optional else "")


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "yes", "1", "on"):
        return True
    if str(value).lower() in ("false", "no", "0", "off"):
        return False
    raise ValueError


def _check_choice(name: str, value: Any, source: str) -> None:
    choices = TrainConfig.fields()[name].metadata["choices"]
    if choices and value is not None and value not in choices:
        raise UserError(f"{_label(name, source)} '{value}': unknown choice; choose one of "
                        f"{', '.join(choices)}")


def from_dict(values: dict[str, Any], source: str, base: TrainConfig | None = None) -> TrainConfig:
    """A config from ``base`` overridden by ``values``; unknown keys are errors."""
    known = TrainConfig.fields()
    result = dataclasses.replace(base) if base else TrainConfig()
    for key, value in values.items():
        name = str(key).replace("-", "_")  # YAML keys may be numbers, booleans or null
        if name not in known:
            raise UserError(f"{source}: unknown option '{key}'")
        coerced = _coerce(name, value, source)
        check_value(name, coerced, source)
        setattr(result, name, coerced)
    return result


def check_value(name: str, coerced: Any, source: str) -> None:
    """The range checks of one coerced value; errors name the option as ``source`` says."""
    label = _label(name, source)
    low = MINIMUM_COUNTS.get(name)
    if low is not None and coerced is not None and coerced < low:
        raise UserError(f"{label} {coerced}: must be at least {low}")
    if isinstance(coerced, float) and not math.isfinite(coerced):
        raise UserError(f"{label} {coerced}: must be a finite number")
    if name in _NON_NEGATIVE and coerced is not None and coerced < 0:
        raise UserError(f"{label} {coerced}: must be >= 0")
    if name == "lr" and coerced == 0:
        raise UserError(f"{label} 0: must be > 0 (a run at lr 0 never moves its weights)")
    if name == "momentum" and coerced >= 1:
        raise UserError(f"{label} {coerced}: must be below 1 (momentum 1 never forgets a "
                        "gradient; 0.9 is the usual value)")
    if name in _FRACTIONS and not 0 <= coerced <= 1:
        raise UserError(f"{label} {coerced}: must be between 0 and 1")
    _check_choice(name, coerced, source)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {p}: no such file")
    try:
        values = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(
            f"--config {p}: not valid YAML ({where}{' '.join(str(problem).split())})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {p}: not a text file") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"--config {p}: expected a mapping of option: value")
    return values


def load_config(path: str | os.PathLike, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from a YAML file."""
    return from_dict(load_yaml(path), f"--config {path}", base)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
