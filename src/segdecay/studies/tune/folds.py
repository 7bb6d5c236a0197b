"""Cross-validation folds that respect groups of correlated images.

Neighbouring video frames are near-duplicates: a random k-fold over CamVid frames puts
frame t in training and frame t+1 in validation, and the CV score leaks. Group k-fold keeps
each group (a video sequence, a patient, a slide) inside one fold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from segdecay.data.base import SegData
from segdecay.errors import UserError


def group_keys(names: Sequence[str], groups: Sequence[str], group_by: str | None) -> list[str]:
    """The group of each image: a regex over its name (group 1 if any), else ``groups``."""
    if group_by is None:
        return list(groups) if groups else list(names)
    try:
        pattern = re.compile(group_by)
    except re.error as exc:
        raise UserError(f"--group-by '{group_by}': bad regular expression ({exc})") from exc
    keys = []
    for name in names:
        match = pattern.search(name)
        if match is None:
            raise UserError(f"--group-by '{group_by}': does not match image '{name}'")
        keys.append(match.group(1) if pattern.groups else match.group(0))
    return keys


def group_kfold(keys: Sequence[str], k: int, seed: int = 0,
                balanced: bool = True) -> list[tuple[list[int], list[int]]]:
    """``k`` (train, val) index lists; every group in one fold, every image validated once.

    Groups are shuffled with the seed, then (``balanced``) placed largest first into the
    currently smallest fold, which balances fold sizes when group sizes differ (CamVid's
    sequences do). Largest-first placement ignores the shuffle when group sizes are
    distinct, so every seed gives the same folds; ``balanced=False`` places the groups in
    the shuffled order instead, which gives a new assignment per seed.
    """
    unique = sorted(set(keys))
    if k < 2:
        raise UserError(f"--folds {k}: need at least 2 folds")
    if len(unique) < k:
        raise UserError(f"--folds {k}: only {len(unique)} groups of images; use fewer folds "
                        "or a finer --group-by")
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    members: dict[str, list[int]] = {g: [] for g in unique}
    for i, key in enumerate(keys):
        members[key].append(i)
    if balanced:
        order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:
        smallest = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(members[g])
    result = []
    for f in range(k):
        val = sorted(folds[f])
        held = set(val)
        result.append(([i for i in range(len(keys)) if i not in held], val))
    return result


REDRAWS = 50  # attempts to find a fold assignment no earlier repeat used


def repeated_group_kfold(keys: Sequence[str], k: int, repeats: int, seed: int = 0
                         ) -> tuple[list[list[tuple[list[int], list[int]]]], int]:
    """Fold assignments for ``repeats`` repeats of group k-fold, and how many are distinct.

    Repeat 0 is the size-balanced assignment of ``seed``; each later repeat places the groups
    in a new random order, redrawn until it differs from every earlier repeat (as a
    partition, whatever the fold order), so a repeat adds evidence rather than retraining
    the same folds. When the groups allow fewer assignments (k groups: one), repeats reuse
    them and the distinct count says so.
    """
    seen: set[frozenset] = set()
    plans = []
    for r in range(repeats):
        for attempt in range(REDRAWS if r else 1):
            folds = group_kfold(keys, k, seed=seed + r + 1000 * attempt, balanced=(r == 0))
            partition = frozenset(frozenset(val) for _, val in folds)
            if partition not in seen:
                break
        seen.add(partition)
        plans.append(folds)
    return plans, len(seen)


def holdout_plan(data: SegData, repeats: int) -> list[tuple[int, int, SegData]]:
    """``repeats`` fits on the whole training split, each scored on the data's val split
    (the fits differ in their training seed only)."""
    if data.val is None or len(data.val) == 0:
        raise UserError(f"--holdout: data '{data.info.name}' has no val split to score on; "
                        "give one (folder: ROOT/val/, CamVid's val/) or drop --holdout for "
                        "k-fold CV")
    return [(r, 0, SegData(info=data.info, train=data.train, val=data.val, test=None))
            for r in range(repeats)]


def fold_plan(data: SegData, options) -> tuple[list[tuple[int, int, SegData]], dict]:
    """The CV fits, and facts about them: groups, distinct fold assignments over repeats
    (None with ``--holdout``: its fits share one split and differ by seed)."""
    if options.holdout:
        return holdout_plan(data, options.repeats), {"groups": None,
                                                     "distinct_assignments": None}
    train = data.train
    keys = group_keys(train.names, train.groups, options.group_by)
    plans, distinct = repeated_group_kfold(keys, options.folds, options.repeats, options.seed)
    fits = []
    for r, folds in enumerate(plans):
        for f, (tr, va) in enumerate(folds):
            fits.append((r, f, SegData(info=data.info, train=train.subset(tr),
                                       val=train.subset(va), test=None)))
    return fits, {"groups": len(set(keys)), "distinct_assignments": distinct}
