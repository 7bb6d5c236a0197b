"""Which tensors decay, and how much: the parameter groups every decay mode acts on.

Parameter groups follow nanoGPT/timm: tensors with ``ndim >= 2`` decay, norm scales/shifts and
biases do not; name rules (MMEngine ``custom_keys`` style) override with a multiplier.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from segdecay.config import NO_DECAY
from segdecay.errors import UserError

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


@dataclass(frozen=True)
class DecayRule:
    """Parameters whose name matches ``pattern`` (regex search) get ``mult`` x lambda."""

    pattern: str
    mult: float

    @classmethod
    def parse(cls, text: str) -> DecayRule:
        """Parse ``PATTERN=MULT`` as given to ``--decay-rule``."""
        pattern, sep, mult = text.rpartition("=")
        if not sep or not pattern:
            raise UserError(f"--decay-rule '{text}': expected PATTERN=MULT, e.g. 'encoder\\.=0.5'")
        try:
            value = float(mult)
            re.compile(pattern)
        except ValueError as exc:
            raise UserError(f"--decay-rule '{text}': MULT must be a number") from exc
        except re.error as exc:
            raise UserError(f"--decay-rule '{text}': bad regular expression ({exc})") from exc
        if not math.isfinite(value) or value < 0:
            raise UserError(f"--decay-rule '{text}': MULT must be a finite number >= 0")
        return cls(pattern, value)

    def __str__(self) -> str:
        return f"{self.pattern}={self.mult:g}"


def _norm_param_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            for param_name, _ in module.named_parameters(recurse=False):
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def is_excluded(name: str, param: torch.Tensor, no_decay: str, norm_names: set[str]) -> bool:
    """True when the default rules keep this tensor out of weight decay."""
    if no_decay == "ndim<2":
        return param.ndim < 2
    if no_decay == "norm+bias":
        return name in norm_names or name.endswith(".bias") or name == "bias"
    if no_decay == "none":
        return False
    raise UserError(f"--no-decay '{no_decay}': choose one of {', '.join(NO_DECAY)}")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: str = "ndim<2",
    rules: Sequence[DecayRule | str] = (),
) -> list[dict]:
    """Split trainable parameters into groups that share one decay multiplier.

    Each group dict carries ``params`` plus bookkeeping that torch optimizers keep untouched:
    ``group`` (its name), ``param_names``, ``decay_mult`` and ``weight_decay`` (= lambda x mult).
    Groups come out as ``decay``, ``no_decay``, then one per matching rule, empty ones dropped.
    """
    if weight_decay < 0:
        raise UserError(f"--weight-decay {weight_decay}: must be >= 0")
    parsed = [r if isinstance(r, DecayRule) else DecayRule.parse(r) for r in rules]
    norm_names = _norm_param_names(model)
    buckets: dict[str, tuple[float, list[str], list[torch.Tensor]]] = {
        "decay": (1.0, [], []),
        "no_decay": (0.0, [], []),
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        rule = next((r for r in parsed if re.search(r.pattern, name)), None)
        if rule is not None:
            key = f"rule:{rule}"
            buckets.setdefault(key, (rule.mult, [], []))
        else:
            key = "no_decay" if is_excluded(name, param, no_decay, norm_names) else "decay"
        buckets[key][1].append(name)
        buckets[key][2].append(param)
    groups = []
    for key, (mult, names, params) in buckets.items():
        if params:
            groups.append(
                {
                    "params": params,
                    "group": key,
                    "param_names": names,
                    "decay_mult": mult,
                    "weight_decay": weight_decay * mult,
                }
            )
    return groups


def describe_split(groups: Iterable[dict]) -> str:
    """nanoGPT-style one-liner per group: how many tensors and parameters decay, and by how much."""
    lines = []
    for g in groups:
        n_params = sum(p.numel() for p in g["params"])
        lines.append(
            f"{g['group']}: {len(g['params'])} tensors, {n_params:,} parameters, "
            f"lambda={g.get('lambda', g['weight_decay']):g}"
        )
    return "\n".join(lines)
