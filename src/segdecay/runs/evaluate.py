"""``segdecay evaluate``: score a run on a split at label resolution and write JSON."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from segdecay.data import load_dataset_for
from segdecay.errors import UserError
from segdecay.fileio import write_json
from segdecay.inference import TTA_GROUPS
from segdecay.metrics import format_iou_table
from segdecay.runs.folder import answering_checkpoint, inference_choice, load_run
from segdecay.training.evaluate import Scoring, evaluate_split


def evaluate_run(
    run: str | Path,
    *,
    data: str | None = None,
    split: str | None = "val",
    checkpoint: str = "run",
    out: str | Path | None = None,
    eval_size: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    decision: str = "run",
    tta: str = "run",
) -> dict[str, Any]:
    """Metrics of ``run`` on ``split`` of ``data`` (default: the run's own dataset).

    ``checkpoint="run"`` loads the weights the run answers with (its ``--checkpoint``).
    ``split=None`` scores the test split, or the val split of data that has no test split.
    ``decision="run"`` decides pixels as the run chose (``--decision adjusted``: its logit
    bias), ``"argmax"`` by the plain logits; ``tta="run"`` averages over the run's test-time
    augmentation, a group name forces one. The JSON records the seconds the pass took.
    """
    bias, group, decision_text = inference_choice(run, decision, tta)
    if out:  # an unwritable --out fails now, not after the whole evaluation
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    if checkpoint == "run":
        checkpoint = answering_checkpoint(run)
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
    started = time.perf_counter()
    result, _ = evaluate_split(model, chosen, meta["num_classes"], config, dev,
                               scoring=Scoring(logit_bias=bias, tta=group))
    seconds = time.perf_counter() - started
    payload = {"run": str(run), "data": spec, "split": split, "checkpoint": checkpoint,
               "images": len(chosen), "class_names": meta["class_names"],
               "decision": decision_text, "tta": group,
               "passes_per_image": len(TTA_GROUPS[group]), "seconds": seconds, **result}
    path = Path(out) if out else Path(run) / f"eval_{split}.json"
    write_json(path, payload)
    if not quiet:
        print(f"decision: {decision_text} ({len(TTA_GROUPS[group])} forward pass(es) per "
              f"image, {seconds:.1f} s for {len(chosen)} images)")
        print(format_iou_table(result, meta["class_names"]))
        print(f"wrote {path}")
    return payload

