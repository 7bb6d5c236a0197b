"""``segdecay evaluate``: score a run on a split at label resolution and write JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from segdecay.data import load_dataset_for
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.metrics import format_iou_table
from segdecay.runs.folder import load_run, read_decision
from segdecay.training.evaluate import evaluate_split


def evaluate_run(
    run: str | Path,
    *,
    data: str | None = None,
    split: str | None = "val",
    checkpoint: str = "best",
    out: str | Path | None = None,
    eval_size: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    decision: str = "run",
) -> dict[str, Any]:
    """Metrics of ``run`` on ``split`` of ``data`` (default: the run's own dataset).

    ``split=None`` scores the test split, or the val split of data that has no test split.
    ``decision="run"`` decides pixels as the run chose (``--decision adjusted``: its logit
    bias), ``"argmax"`` by the plain logits.
    """
    chosen_decision = read_decision(run, decision)
    config, meta, model, dev = load_run(run, checkpoint, device)
    if eval_size is not None:
        config = replace(config, eval_size=eval_size)
    spec = data or config.data
    dataset = load_dataset_for(config, spec)
    if dataset.info.num_classes != meta["num_classes"]:
        raise UserError(f"--data {spec}: has {dataset.info.num_classes} classes but the run "
                        f"was trained with {meta['num_classes']}")
    if split is None:
        split = "test" if dataset.test is not None else "val"
    chosen = dataset.split(split)
    bias = chosen_decision["logit_bias"] if chosen_decision else None
    result, _ = evaluate_split(model, chosen, meta["num_classes"], config, dev, logit_bias=bias)
    payload = {"run": str(run), "data": spec, "split": split, "checkpoint": checkpoint,
               "images": len(chosen), "class_names": meta["class_names"],
               "decision": _decision_text(chosen_decision), **result}
    path = Path(out) if out else Path(run) / f"eval_{split}.json"
    write_json(path, payload)
    if not quiet:
        print(f"decision: {payload['decision']}")
        print(format_iou_table(result, meta["class_names"]))
        print(f"wrote {path}")
    return payload


def _decision_text(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "argmax"
    return f"adjusted, t = {decision['tau']:g} (chosen on {decision['chosen_on']})"
