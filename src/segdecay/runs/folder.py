"""The run-folder contract: what a finished or interrupted run leaves, and how to load it.

A run folder holds ``config.yaml`` (the resolved TrainConfig), ``decay.json``,
``metrics.csv`` (one row per epoch), ``summary.json`` (once finished, with ``status``),
``last.pt`` (exact resume) and ``best.pt`` (best val mIoU), and ``report.html``; with
a val split also ``decision.json`` (the t of ``--decision adjusted`` chosen on val, the logit
bias that evaluate and predict add, and the test-time augmentation they average over, both
chosen for the weights the run answers with). Fold fits
of a tune keep no checkpoints. Everything that reads runs (evaluate, predict, compare,
spectrum, tune's refit) goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segdecay.config import CHECKPOINTS, RUN_CHECKPOINTS, RUN_DECISIONS, RUN_TTAS, from_dict
from segdecay.decision import DECISION_FILE
from segdecay.errors import UserError
from segdecay.models import build_model, upgrade_state_dict
from segdecay.training.hardware import resolve_device
from segdecay.training.state import load_checkpoint


def answering_checkpoint(run: str | Path) -> str:
    """The checkpoint a finished run answers with (``answer_checkpoint`` in summary.json,
    chosen by its ``--checkpoint``); best for a run without one, as evaluate and predict
    loaded before runs chose."""
    path = Path(run) / "summary.json"
    try:
        answer = json.loads(path.read_text(encoding="utf-8")).get("answer_checkpoint")
    except (OSError, ValueError, AttributeError):
        answer = None
    return answer if answer in CHECKPOINTS else "best"


def load_run(run: str | Path, checkpoint: str = "run", device: str = "auto"):
    """(config, dataset metadata, model in eval mode, device) of a run folder, with the
    weights it answers with (``checkpoint="run"``), or its best or last checkpoint."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run folder {run}: does not exist")
    if checkpoint not in RUN_CHECKPOINTS:
        raise UserError(f"--checkpoint '{checkpoint}': choose one of "
                        f"{', '.join(RUN_CHECKPOINTS)}")
    if checkpoint == "run":
        checkpoint = answering_checkpoint(run)
    ckpt_path = run / f"{checkpoint}.pt"
    if not ckpt_path.is_file() and checkpoint == "best":
        ckpt_path = run / "last.pt"
    dev = resolve_device(device)
    state = load_checkpoint(ckpt_path)
    config = from_dict(state["config"], f"checkpoint {ckpt_path}")
    meta = state["dataset"]
    model = build_model(config.arch, config.encoder, meta["num_classes"],
                        dropout=config.dropout)
    model.load_state_dict(upgrade_state_dict(state["model"]))
    model.to(dev).eval()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, meta, model, dev


def read_decision(run: str | Path, decision: str = "run") -> dict[str, Any] | None:
    """The run's chosen decision (``decision.json`` of ``--decision adjusted``), or None for
    argmax: a run trained without it, or ``decision="argmax"`` to score the plain logits."""
    if decision not in RUN_DECISIONS:
        raise UserError(f"--decision '{decision}': choose one of {', '.join(RUN_DECISIONS)}")
    path = Path(run) / DECISION_FILE
    if decision == "argmax" or not path.is_file():
        return None
    try:
        chosen = json.loads(path.read_text(encoding="utf-8"))
        return {**chosen, "logit_bias": [float(v) for v in chosen["logit_bias"]]}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a decision file of segdecay ({exc}); remove it to "
                        "score the plain logits") from exc


def inference_choice(run: str | Path, decision: str = "run",
                     tta: str = "run") -> tuple[list[float] | None, str, str]:
    """(logit bias or None, test-time augmentation, one line saying both) that evaluate,
    predict and compare use for ``run``: its own choices (``"run"``), or argmax and a
    forced augmentation group."""
    if tta not in RUN_TTAS:
        raise UserError(f"--tta '{tta}': choose one of {', '.join(RUN_TTAS)}")
    if decision not in RUN_DECISIONS:
        raise UserError(f"--decision '{decision}': choose one of {', '.join(RUN_DECISIONS)}")
    chosen = read_decision(run, "run") if "run" in (decision, tta) else None
    bias = chosen["logit_bias"] if chosen and decision == "run" else None
    group = tta if tta != "run" else (chosen or {}).get("tta", "none")
    if group not in RUN_TTAS or group == "run":
        raise UserError(f"{Path(run) / DECISION_FILE}: unknown test-time augmentation "
                        f"{group!r}; remove the file to score the plain logits")
    text = "argmax"
    if bias is not None and chosen.get("rule", "adjusted") == "adjusted":
        text = f"adjusted, t = {chosen['tau']:g} (chosen on {chosen['chosen_on']})"
    if group != "none":
        text += f", test-time augmentation {group}"
    return bias, group, text


def is_finished(folder: Path) -> bool:
    """A run that wrote its summary (completed or diverged)."""
    return (folder / "summary.json").is_file()


def read_summary(folder: Path) -> dict[str, Any]:
    """summary.json of a finished run."""
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def is_run_folder(path: Path) -> bool:
    """A trained run: config.yaml plus a checkpoint (CV fold fits keep none and are skipped)."""
    return (path / "config.yaml").is_file() and (
        (path / "last.pt").is_file() or (path / "best.pt").is_file())


def find_runs(paths: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Run folders named by ``paths`` (runs, or folders holding runs at any depth).

    Returns (runs, skipped): folders with a config.yaml but no checkpoint, such as the fold
    fits of a tune, are listed as skipped. A path that is neither a run nor holds one is a
    UserError naming it.
    """
    runs: list[Path] = []
    skipped: list[dict[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"run folder {path}: does not exist or is not a folder")
        found = [path] if is_run_folder(path) else _runs_below(path, skipped)
        for run in found:
            if all(run.resolve() != r.resolve() for r in runs):
                runs.append(run)
    return runs, skipped


def _runs_below(path: Path, skipped: list[dict[str, str]]) -> list[Path]:
    found = []
    for cfg in sorted(path.rglob("config.yaml")):
        folder = cfg.parent
        if is_run_folder(folder):
            found.append(folder)
        else:
            skipped.append({"path": str(folder),
                            "reason": "no checkpoint (e.g. a cross-validation fold)"})
    if not found:
        raise UserError(f"run folder {path}: holds no run (a folder with config.yaml "
                        "and last.pt or best.pt), neither itself nor below it")
    return found
