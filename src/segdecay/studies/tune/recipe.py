"""What each part of a tuned recipe bought: paired gains over the same folds.

A tune over the whole recipe (``--loss-grid``, ``--class-weights-grid``, ``--lr-grid``,
``--decay-modes`` with lambda) chooses one recipe. For each part, the chosen recipe is
compared with the same recipe with only that part put back to its plain value (no decay, CE,
no class weights, the base lr and decay mode), fit by fit on the same folds; the gain's SE
is Nadeau-Bengio corrected as lambda's paired rule is. The last row puts every part back at
once. A comparison whose plain recipe was not scored on every fold (pruned, skipped) says so.
"""

from __future__ import annotations

import math
from typing import Any

from segdecay.config import TrainConfig
from segdecay.decay import resolved_decay_mode
from segdecay.studies.tune.selection import paired_difference
from segdecay.studies.tune.trials import TrialRow

PARTS = ("weight_decay", "lr", "decay_mode", "loss", "class_weights")
PLAIN = {"weight_decay": 0.0, "loss": "ce", "class_weights": "none"}
LABELS = {"weight_decay": "lambda", "tau_epochs": "tau (epochs)", "lr": "lr",
          "decay_mode": "decay mode", "loss": "loss", "class_weights": "class weights"}


def searched_parts(options) -> list[str]:
    """The parts searched besides lambda; empty for a lambda-only tune."""
    given = {"lr": options.lr_grid, "decay_mode": options.modes, "loss": options.losses,
             "class_weights": options.weightings}
    return [name for name, values in given.items() if values]


def _plain(part: str, tried: list, base: TrainConfig) -> Any:
    """The reference value of a part: its plain value if the search tried it, else the
    first value tried (smallest lambda or lr; on a tau grid the largest tau, the weakest)."""
    plain = PLAIN.get(part)
    if part == "tau_epochs":
        return max(tried)  # the weakest decay searched: a tau grid has no "no decay"
    if part == "lr":
        plain = base.lr
    elif part == "decay_mode":
        plain = resolved_decay_mode(base.optimizer, base.decay_mode)
    if plain in tried:
        return plain
    return min(tried) if part in ("weight_decay", "lr") else tried[0]


def _decay_axis(complete: list[TrialRow]) -> str:
    """tau when the search ran on a tau grid (lambda then moves with lr and decay mode, so
    "the same recipe with another lr" keeps tau, not lambda), else lambda."""
    return "tau_epochs" if all(r.tau_epochs is not None for r in complete) else \
        "weight_decay"


def part_gains(complete: list[TrialRow], choice: dict[str, Any], chosen_lam: float,
               parts: list[str], base: TrainConfig, folds: int) -> list[dict[str, Any]]:
    """One row per part (the decay axis first), then all parts together: the chosen
    recipe's mean paired gain over its plain counterpart, with the 95% interval."""
    axis = _decay_axis(complete)
    keys = (axis, *PARTS[1:])
    setting = {p: choice[p] for p in PARTS[1:]}
    row_of = [r for r in complete if r.weight_decay == chosen_lam
              and all(getattr(r, p) == v for p, v in setting.items())]
    if not row_of:
        return []
    chosen = {axis: getattr(row_of[0], axis), **setting}
    by_key = {tuple(getattr(r, p) for p in keys): r.fold_scores for r in complete}
    scores = by_key[tuple(chosen[p] for p in keys)]
    rows = []
    reference_all = dict(chosen)
    for part in [axis, *parts]:
        numeric = part in ("weight_decay", "tau_epochs", "lr")
        tried = sorted({getattr(r, part) for r in complete}, key=None if numeric else str)
        reference = _plain(part, tried, base)
        reference_all[part] = reference
        gain = _gain(LABELS[part], chosen[part], reference,
                     by_key.get(tuple({**chosen, part: reference}[p] for p in keys)),
                     scores, folds)
        if chosen[part] == reference:  # then say what the other values tried lost
            gain["runner_up"] = _runner_up(part, tried, chosen, keys, by_key, scores, folds)
        rows.append(gain)
    same = reference_all == chosen
    rows.append(_gain("all of them", "the chosen recipe",
                      "the chosen recipe" if same else "the plain recipe",
                      by_key.get(tuple(reference_all[p] for p in keys)), scores, folds))
    return rows


def _runner_up(part: str, tried: list, chosen: dict[str, Any], keys: tuple, by_key: dict,
               scores: list[float], folds: int) -> dict[str, Any] | None:
    """The best other value of ``part`` with the rest of the chosen recipe, and the chosen
    value's paired gain over it; None when no other value was scored on every fold."""
    others = {v: by_key[k] for v in tried if v != chosen[part]
              and (k := tuple({**chosen, part: v}[p] for p in keys)) in by_key
              and all(math.isfinite(x) for x in by_key[k])}
    if not others:
        return None
    value = max(others, key=lambda v: sum(others[v]))
    mean, _, se, _, low, high, n = paired_difference(scores, others[value], folds)
    return {"value": value, "mean_gain": mean, "se": se, "ci_low": low, "ci_high": high,
            "n": n}


def _gain(part: str, chosen: Any, reference: Any, reference_scores: list[float] | None,
          scores: list[float], folds: int) -> dict[str, Any]:
    row: dict[str, Any] = {"part": part, "chosen": chosen, "reference": reference}
    if chosen == reference:
        return {**row, "mean_gain": 0.0, "note": "the chosen value is the plain one"}
    if reference_scores is None:
        return {**row, "mean_gain": None,
                "note": "the plain counterpart was not scored on every fold (pruned or "
                        "skipped)"}
    if not all(math.isfinite(v) for v in (*scores, *reference_scores)):
        return {**row, "mean_gain": None, "note": "a fit failed"}
    mean, sd, se, _, low, high, n = paired_difference(scores, reference_scores, folds)
    return {**row, "mean_gain": mean, "sd": sd, "se": se, "ci_low": low, "ci_high": high,
            "n": n}


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def part_note(row: dict[str, Any]) -> str:
    """A part's note, with what the next best value lost when the plain one was chosen."""
    runner = row.get("runner_up")
    if not runner:
        return row.get("note", "")
    return (f"{row.get('note', '')}; over the next best, {_value(runner['value'])}: "
            f"{runner['mean_gain']:+.4f} mIoU (95% CI {runner['ci_low']:+.4f} to "
            f"{runner['ci_high']:+.4f})")


def parts_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One printed line per part: what it bought, paired, or why that is unknown."""
    lines = []
    for r in rows:
        head = f"recipe part {r['part']}: {_value(r['chosen'])} instead of {_value(r['reference'])}"
        if r["mean_gain"] is None or "ci_low" not in r:
            lines.append(f"{head}: {part_note(r)}")
        else:
            lines.append(f"{head}: {r['mean_gain']:+.4f} mIoU (95% CI {r['ci_low']:+.4f} to "
                         f"{r['ci_high']:+.4f}, paired over {r['n']} fits)")
    return lines
