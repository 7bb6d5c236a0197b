"""One dataclass holds everything a training run needs; it round-trips through YAML.

``config.yaml`` in a run folder is this dataclass, fully resolved, so ``segdecay train
--config RUN/config.yaml`` reruns it. Unknown keys and bad values fail with the file named.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segdecay.errors import UserError
from segdecay.fileio import atomic_write_text


@dataclass
class TrainConfig:
    """A training run. Field comments are the CLI's one-line help texts."""

    # data
    data: str = "synthetic"  # dataset spec: synthetic | camvid:PATH | folder:PATH
    num_classes: int | None = None  # classes of a folder: dataset (else classes.txt)
    class_names: list[str] | None = None  # class names of a folder: dataset
    val_fraction: float = 0.2  # hold-out fraction when a folder: dataset has no val split
    # model
    arch: str = "unet"  # smp architecture (unet, fpn, deeplabv3plus, ...)
    encoder: str = "resnet18"  # smp encoder (resnet18, mobilenet_v2, efficientnet-b0, ...)
    encoder_weights: str | None = None  # pretrained encoder weights (needs a download)
    dropout: float = 0.0  # Dropout2d probability before the segmentation head
    # optimization
    optimizer: str = "sgd"  # sgd | sgd-nesterov | adam | adamw (decoupled)
    lr: float = 0.05  # base learning rate
    momentum: float = 0.9  # SGD momentum (beta1 of Adam is fixed at 0.9)
    schedule: str = "poly"  # lr schedule per step: poly | cosine | constant
    warmup_epochs: float = 0.0  # linear warmup length in epochs
    # regularization
    weight_decay: float = 5e-4  # lambda in L = L_data + (lambda/2)·sum(w^2)
    decay_mode: str | None = None  # penalty (loss) | coupled (grad) | decoupled (shrink)
    l1: float = 0.0  # alpha of an L1 penalty alpha·sum|w| on the decayed tensors
    no_decay: str = "ndim<2"  # undecayed: ndim<2 | norm+bias | none
    decay_rules: list[str] = field(default_factory=list)  # PATTERN=MULT: MULT x lambda
    # loss
    loss: str = "ce"  # data loss (segmentation_models_pytorch losses; ce+dice sums both)
    class_weights: str = "none"  # CE weights: inverse | median | enet
    # schedule of work
    epochs: int = 30  # training epochs (ignored when steps is set)
    steps: int | None = None  # total optimizer steps instead of epochs
    batch_size: int = 8  # images per step
    size: list[int] | None = None  # training input HxW (images resized); default native
    crop: list[int] | None = None  # random crop HxW taken from the resized image
    eval_size: list[int] | None = None  # input HxW at evaluation (default native)
    augment: str = "flip"  # none | flip | light (+ scale 0.75-1.25) | strong (+ jitter)
    # execution
    seed: int = 0  # seed of weights, batch order and augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True  # channels_last memory format
    amp: bool | None = None  # bf16 autocast; unset: on where native (AVX512-BF16/AMX, GPU)
    compile: bool = False  # torch.compile the model (falls back to eager if it fails)
    eval_every: int = 1  # validate every N epochs (and always at the end)
    sync_bn: bool = False  # SyncBatchNorm across DDP processes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML/JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        """Fields by name."""
        return {f.name: f for f in dataclasses.fields(cls)}


def help_texts() -> dict[str, str]:
    """The one-line comment after each field in the source, used as CLI help."""
    import inspect

    texts = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith("#"):
            name = line.split(":", 1)[0].strip()
            texts[name] = line.split("#", 1)[1].strip()
    return texts


# Counts that make no sense below these values (0 epochs, batches of 0 images, ...).
MINIMUM_COUNTS = {"epochs": 1, "steps": 1, "batch_size": 1, "eval_every": 1}
_NON_NEGATIVE = {"lr", "momentum", "warmup_epochs", "weight_decay", "l1", "dropout",
                 "val_fraction"}


def _label(name: str, source: str) -> str:
    """How an error names the option: ``--batch-size`` or ``--config FILE: 'batch_size'``."""
    if source == "command line":
        return "--" + name.replace("_", "-")
    return f"{source}: '{name}'"


def _coerce(name: str, value: Any, source: str) -> Any:
    f = TrainConfig.fields()[name]
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise UserError(f"{source}: '{name}' may not be empty")
    try:
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind.startswith("list[int]"):
            if isinstance(value, str):
                from segdecay.data.transforms import parse_size

                return list(parse_size(value, _label(name, source)))
            if not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or (isinstance(v, float) and not v.is_integer())
                for v in value
            ):
                raise ValueError
            from segdecay.data.transforms import parse_size

            # Same rules as the HxW text form: one or two sides, each at least 8.
            return list(parse_size([int(v) for v in value], _label(name, source)))
        if kind.startswith("list[str]"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # int(inf) overflows
        raise UserError(f"{source}: '{name}' has a bad value {value!r} (expected {kind})") from exc


def from_dict(values: dict[str, Any], source: str, base: TrainConfig | None = None) -> TrainConfig:
    """A config from ``base`` overridden by ``values``; unknown keys are errors."""
    known = TrainConfig.fields()
    result = dataclasses.replace(base) if base else TrainConfig()
    for key, value in values.items():
        name = str(key).replace("-", "_")  # YAML keys may be numbers, booleans or null
        if name not in known:
            raise UserError(f"{source}: unknown option '{key}'")
        coerced = _coerce(name, value, source)
        low = MINIMUM_COUNTS.get(name)
        if low is not None and coerced is not None and coerced < low:
            raise UserError(f"{_label(name, source)} {coerced}: must be at least {low}")
        if isinstance(coerced, float) and not math.isfinite(coerced):
            raise UserError(f"{_label(name, source)} {coerced}: must be a finite number")
        if name in _NON_NEGATIVE and coerced < 0:
            raise UserError(f"{_label(name, source)} {coerced}: must be >= 0")
        setattr(result, name, coerced)
    return result


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
