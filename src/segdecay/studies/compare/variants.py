"""Reading what a comparison compares: variants from ``--variant`` text and YAML, the
built-in presets, and where each (variant, seed) run lives.

Options are checked when a variant is read, not after hours of other runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from segdecay.config import CLASS_WEIGHTS, TrainConfig, from_dict, load_yaml
from segdecay.decay import effective_lr, param_groups
from segdecay.errors import UserError
from segdecay.models import build_model
from segdecay.options import add_train_options
from segdecay.studies.compare.options import PRESETS, Variant

DROPOUT = 0.2  # the regularizers preset's dropout probability


class _Raising(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit; a variant is user input
        raise UserError(message)


def _option_parser() -> argparse.ArgumentParser:
    parser = _Raising(prog="--variant", add_help=False)
    add_train_options(parser)
    return parser


def parse_variant(text: str) -> Variant:
    """``'name: --weight-decay 1e-3 --dropout 0.2'`` -> Variant (options checked)."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UserError(f"--variant '{text}': expected 'NAME: --option value ...' with a "
                        "plain name")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise UserError(f"--variant '{text}': {exc}") from exc
    try:
        parsed = _option_parser().parse_args(words)
    except UserError as exc:
        raise UserError(f"--variant '{name}': {exc}") from exc
    variant = Variant(name, {k: v for k, v in vars(parsed).items()})
    variant.config(TrainConfig())  # values checked now, not after hours of other runs
    return variant


def load_variants(path: str | Path) -> list[Variant]:
    """Variants from YAML: ``variants: {NAME: {option: value}}`` or a list of strings."""
    values = load_yaml(path).get("variants")
    if isinstance(values, dict):
        out = []
        for name, options in values.items():
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise UserError(f"--variants {path}: variant '{name}' must map options to "
                                "values")
            v = Variant(str(name), {str(k).replace("-", "_"): o for k, o in options.items()})
            from_dict(v.options, f"--variants {path}: variant '{name}'")  # checked up front
            out.append(v)
        return out
    if isinstance(values, list):
        return [parse_variant(str(v)) for v in values]
    raise UserError(f"--variants {path}: expected a 'variants:' mapping or list")


def initial_abs_weight(config: TrainConfig, num_classes: int) -> float:
    """Mean |w| over the decayed tensors of the model a run starts from (L1 strength matching
    L2): the seeded initialisation, with the pretrained encoder when the config names one."""
    import torch

    torch.manual_seed(config.seed)
    model = build_model(config.arch, config.encoder, num_classes,
                        encoder_weights=config.encoder_weights)
    groups = param_groups(model, config.weight_decay or 1.0, config.no_decay,
                          config.decay_rules)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    total = sum(p.detach().abs().sum().item() for p in decayed)
    return total / max(1, sum(p.numel() for p in decayed))


def preset_variants(preset: str, base: TrainConfig, lam: float, num_classes: int) -> list[Variant]:
    """The built-in comparisons at decay strength ``lam``, each regularizer as strong per step.

    L1's alpha is set so its initial shrinkage per step equals L2's: alpha = lam * mean|w0|.
    Under SGD momentum beta a coupled decay passes through the momentum buffer and shrinks
    by lr·lam/(1-beta) per step, a decoupled one by lr·lam: the decoupled variants get
    lam/(1-beta), the same timescale tau (see decay.json), or they would be 1/(1-beta)
    times weaker (10x at beta 0.9) and the comparison would be of strengths, not kinds.
    """
    if preset == "regularizers":
        alpha = lam * initial_abs_weight(base, num_classes)
        ratio = (effective_lr(base.optimizer, "coupled", 1.0, base.momentum)
                 / effective_lr(base.optimizer, "decoupled", 1.0, base.momentum))
        lam_decoupled = float(f"{lam * ratio:.12g}")  # 0.1, not 0.10000000000000002
        off = {"weight_decay": 0.0, "l1": 0.0, "dropout": 0.0}
        return [
            Variant("none", dict(off)),
            Variant("l2-coupled", {**off, "weight_decay": lam, "decay_mode": "coupled"}),
            Variant("decoupled", {**off, "weight_decay": lam_decoupled,
                                  "decay_mode": "decoupled"}),
            Variant("l1", {**off, "l1": alpha}),
            Variant("dropout", {**off, "dropout": DROPOUT}),
            Variant("decoupled+dropout", {**off, "weight_decay": lam_decoupled,
                                          "decay_mode": "decoupled", "dropout": DROPOUT}),
        ]
    if preset == "imbalance":
        same = {"weight_decay": lam}
        return ([Variant(f"ce-{w}", {**same, "loss": "ce", "class_weights": w})
                 for w in CLASS_WEIGHTS]
                + [Variant(loss, {**same, "loss": loss, "class_weights": "none"})
                   for loss in ("dice", "focal", "ce+dice")])
    raise UserError(f"--preset '{preset}': choose one of {', '.join(PRESETS)}")


def lambda_from_tune(run: str | Path) -> float:
    """The lambda a finished ``segdecay tune`` chose."""
    path = Path(run) / "tune.json"
    if not path.is_file():
        raise UserError(f"--from-tune {run}: no tune.json there (run segdecay tune first)")
    try:
        chosen = json.loads(path.read_text(encoding="utf-8")).get("chosen")
    except ValueError as exc:
        raise UserError(f"--from-tune {path}: not valid JSON") from exc
    if not isinstance(chosen, (int, float)):
        raise UserError(f"--from-tune {path}: the study has not chosen a lambda yet")
    return float(chosen)


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Where one (variant, seed) run lives."""
    return out / "runs" / variant / f"seed{seed}"
