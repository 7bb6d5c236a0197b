"""``segdecay evaluate``: score a run on a split at label resolution and write JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from segdecay.data import load_dataset_for
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.metrics import format_iou_table
from segdecay.runs.folder import load_run
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
) -> dict[str, Any]:
    """Metrics of ``run`` on ``split`` of ``data`` (default: the run's own dataset).

    ``split=None`` scores the test split, or the val split of data that has no test split.
    """
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
    result, _ = evaluate_split(model, chosen, meta["num_classes"], config, dev)
    payload = {"run": str(run), "data": spec, "split": split, "checkpoint": checkpoint,
               "images": len(chosen), "class_names": meta["class_names"],
               **result}
    path = Path(out) if out else Path(run) / f"eval_{split}.json"
    write_json(path, payload)
    if not quiet:
        print(format_iou_table(result, meta["class_names"]))
        print(f"wrote {path}")
    return payload
