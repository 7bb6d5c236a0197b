"""Which tensors decay, and how much: the parameter groups every decay mode acts on.

Parameter groups follow nanoGPT/timm: tensors with ``ndim >= 2`` decay, norm scales/shifts,
biases and the names a model lists in its own ``no_weight_decay()`` (timm's ViT
``cls_token``, ``pos_embed``) do not. Name rules (MMEngine ``custom_keys`` style) then scale
lambda for the tensors that decay.

Precedence, deliberately: the exclusion wins. A rule such as ``^encoder\\.=0.1`` ("a gentler
decay of the encoder") changes the encoder's conv and linear weights and leaves its norm
layers and biases undecayed; MMEngine lets the rule win and decays them (mmengine#846).
Use ``--no-decay none`` to let rules reach every tensor. A rule that matches no tensor, or
only excluded ones, is an error: it would silently do nothing.
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


def model_no_weight_decay(model: nn.Module) -> set[str]:
    """Full names of the tensors a submodule lists in its ``no_weight_decay()`` (timm's API).

    timm lists names relative to the model that defines the method; smp wraps timm encoders
    (``encoder.model``), so each name gets its module's prefix.
    """
    names = set()
    for module_name, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if not callable(listed):
            continue
        prefix = f"{module_name}." if module_name else ""
        names.update(prefix + str(name) for name in listed())
    return names


def is_excluded(name: str, param: torch.Tensor, no_decay: str, norm_names: set[str],
                listed: set[str] = frozenset()) -> bool:
    """True when the default rules keep this tensor out of weight decay."""
    if no_decay == "none":
        return False
    if name in listed:
        return True
    if no_decay == "ndim<2":
        return param.ndim < 2
    if no_decay == "norm+bias":
        return name in norm_names or name.endswith(".bias") or name == "bias"
    raise UserError(f"--no-decay '{no_decay}': choose one of {', '.join(NO_DECAY)}")


def _check_rules_matched(rules: Sequence[DecayRule], hits: dict[str, int],
                         held: dict[str, int], no_decay: str) -> None:
    """A rule that changes nothing is a mistake the user should hear about."""
    for rule in rules:
        key = str(rule)
        if hits[key] == 0 and held[key] == 0:
            raise UserError(f"--decay-rule '{key}': matches no trainable tensor (names look "
                            "like 'encoder.layer1.0.conv1.weight'; see the split printed "
                            "by `segdecay train`)")
        if hits[key] == 0:
            raise UserError(f"--decay-rule '{key}': matches only tensors that --no-decay "
                            f"{no_decay} keeps undecayed ({held[key]}); add --no-decay none "
                            "to let the rule reach them")


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
    The ``no_decay`` group's ``held_by_rule`` counts, per rule, the excluded tensors the rule
    matched but does not reach (the exclusion takes precedence; see the module docstring).
    """
    if weight_decay < 0:
        raise UserError(f"--weight-decay {weight_decay}: must be >= 0")
    parsed = [r if isinstance(r, DecayRule) else DecayRule.parse(r) for r in rules]
    norm_names, listed = _norm_param_names(model), model_no_weight_decay(model)
    buckets: dict[str, tuple[float, list[str], list[torch.Tensor]]] = {
        "decay": (1.0, [], []),
        "no_decay": (0.0, [], []),
    }
    hits = {str(r): 0 for r in parsed}
    held = dict(hits)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        rule = next((r for r in parsed if re.search(r.pattern, name)), None)
        if is_excluded(name, param, no_decay, norm_names, listed):
            key = "no_decay"
            if rule is not None:
                held[str(rule)] += 1
        elif rule is not None:
            key = f"rule:{rule}"
            hits[str(rule)] += 1
            buckets.setdefault(key, (rule.mult, [], []))
        else:
            key = "decay"
        buckets[key][1].append(name)
        buckets[key][2].append(param)
    _check_rules_matched(parsed, hits, held, no_decay)
    groups = []
    for key, (mult, names, params) in buckets.items():
        if params:
            group = {"params": params, "group": key, "param_names": names,
                     "decay_mult": mult, "weight_decay": weight_decay * mult}
            if key == "no_decay":
                group["held_by_rule"] = {k: v for k, v in held.items() if v}
                group["listed_by_model"] = sorted(n for n in names if n in listed)
            groups.append(group)
    return groups


def describe_split(groups: Iterable[dict]) -> str:
    """nanoGPT-style one-liner per group: how many tensors and parameters decay, and by how much.

    The ``no_decay`` line names what the exclusion took from a rule, so precedence is visible.
    """
    lines = []
    for g in groups:
        n_params = sum(p.numel() for p in g["params"])
        line = (f"{g['group']}: {len(g['params'])} tensors, {n_params:,} parameters, "
                f"lambda={g.get('lambda', g['weight_decay']):g}")
        if g.get("listed_by_model"):
            line += f" (incl. the model's no_weight_decay(): {', '.join(g['listed_by_model'])})"
        for rule, count in g.get("held_by_rule", {}).items():
            line += (f"\n  {count} of them matched --decay-rule '{rule}' and stay undecayed: "
                     "the --no-decay exclusion takes precedence (--no-decay none lets rules "
                     "reach them)")
        lines.append(line)
    return "\n".join(lines)
