"""``--pruner race``: drop a lambda only on scores comparable with its rivals', by a paired test.

The median and Hyperband pruners compare runs mid-schedule, where lightly decayed runs are
ahead (the short-horizon bias of Wu et al. 2018): on the demo grid the median pruner chose
one grid step smaller lambda than the full grid in 3 of 3 seeds, Hyperband in 2
(docs/results.md, "Median, Hyperband and Wilcoxon on the SGD demo grid").
The race compares like with like instead:

- a trial reports one score per CV fit, its final-epoch val mIoU on a whole held-out fold,
  and is judged only at those points, never mid-fit and never after its last fit (a
  finished trial is never turned into a pruned one);
- it is compared, fit by fit on the same folds, with the incumbent: the rival with the best
  mean over those fits;
- it is dropped only when it is confidently outside the paired 1-SE band the final choice
  will use: when the upper one-sided bound of its mean paired difference,
  d + z · s / sqrt(n), lies below -s · sqrt(1/J + 1/(k-1)), the Nadeau-Bengio SE a full
  trial would have. s is the sd of paired fit differences pooled over the complete trials
  (each against the best complete one), so nothing is dropped before two trials finished.

Every decision (keep or drop, and why) can be recorded, so tests can check the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from segdecay.studies.tune.selection import corrected_se

Z_ONE_SIDED = 1.645  # 95% one-sided


@dataclass(frozen=True)
class Decision:
    """One call of the pruner: what it saw and what it decided."""

    trial: int
    fits_done: int
    drop: bool
    reason: str
    incumbent: int | None = None
    mean_diff: float | None = None
    bound: float | None = None
    band: float | None = None


def _scores(t: optuna.trial.FrozenTrial, n: int) -> list[float] | None:
    """The trial's first ``n`` fit scores, or None if it lacks one."""
    values = t.intermediate_values
    if any(i not in values for i in range(n)):
        return None
    return [values[i] for i in range(n)]


def pooled_sd(complete: list[list[float]]) -> float | None:
    """sd of paired fit differences against the best complete trial, pooled over the others
    (mean of their sample variances); None with fewer than two complete trials."""
    if len(complete) < 2 or len(complete[0]) < 2:
        return None
    best = max(complete, key=lambda s: sum(s) / len(s))
    variances = []
    for scores in complete:
        if scores is best:
            continue
        diffs = [a - b for a, b in zip(scores, best, strict=True)]
        mean = sum(diffs) / len(diffs)
        variances.append(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return math.sqrt(sum(variances) / len(variances))


class RacePruner(optuna.pruners.BasePruner):
    """Paired racing over CV fits (see the module docstring); ``record`` sees each decision."""

    def __init__(self, folds: int, fits: int, z: float = Z_ONE_SIDED,
                 record: Callable[[Decision], None] | None = None) -> None:
        self.folds, self.fits, self.z, self.record = folds, fits, z, record

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        decision = self.decide(study, trial)
        if self.record is not None:
            self.record(decision)
        return decision.drop

    def decide(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Decision:
        """Keep or drop ``trial`` given every other trial's fit scores so far."""
        n = len(trial.intermediate_values)
        mine = _scores(trial, n)
        if n == 0 or mine is None:
            return Decision(trial.number, n, False, "no whole-fold score yet")
        if n >= self.fits:
            return Decision(trial.number, n, False, "every fit done: a finished trial stays")
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        complete = [s for t in others if t.state == optuna.trial.TrialState.COMPLETE
                    and (s := _scores(t, self.fits)) is not None]
        sd = pooled_sd(complete)
        if sd is None:
            return Decision(trial.number, n, False, "fewer than two complete trials to pool "
                            "the paired spread from")
        rivals = [(t.number, s) for t in others if (s := _scores(t, n)) is not None]
        if not rivals:
            return Decision(trial.number, n, False, "no rival has scores on these fits")
        inc, inc_scores = max(rivals, key=lambda r: sum(r[1]) / n)
        diff = sum(a - b for a, b in zip(mine, inc_scores, strict=True)) / n
        bound = diff + self.z * sd / math.sqrt(n)
        band = -corrected_se(sd, self.fits, self.folds)
        drop = bound < band
        reason = (f"paired bound {bound:+.4f} on {n} fit(s) vs trial {inc} "
                  + ("below" if drop else "not below") + f" the 1-SE band {band:+.4f}")
        return Decision(trial.number, n, drop, reason, inc, diff, bound, band)
