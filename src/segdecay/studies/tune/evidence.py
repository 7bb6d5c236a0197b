"""What the paired evidence of a tune can claim, in words, and how to get more of it.

A tune's choice is only as good as the fold scores behind it. When no lambda's 95% paired
interval against lambda.min lies below zero, the folds cannot tell the candidates apart; the
report then says so and names the cheapest design (folds, repeats) that would resolve the
largest difference seen, assuming the fold-to-fold spread stays what it was.
"""

from __future__ import annotations

from typing import Any

from segdecay.studies.tune.selection import PairedPoint, design_for

MAX_FOLDS = 10
MAX_REPEATS = 10
UNDERFIT_DROP = 0.02  # training mIoU lost against lambda.min, at least
UNDERFIT_RATIO = 2.0  # and this many times what the CV mean lost
EVIDENCE_WORDS = ("rules", "sentence", "recommendation", "underfit")  # printed, in order


def assess(points: list[PairedPoint], best: float, folds: int, repeats: int,
           groups: int | None, distinct: int | None) -> dict[str, Any]:
    """``{"sufficient", "separated", "sentence", "recommendation"}`` for one tune."""
    rivals = [p for p in points if p.lam != best]
    if not rivals:
        return {"sufficient": False, "separated": [], "sentence": "Only one lambda finished "
                "every fold: there is nothing to compare it with.", "recommendation": None}
    separated = [p.lam for p in rivals if p.ci_high < 0]
    if separated:
        return {"sufficient": True, "separated": separated,
                "sentence": f"The paired evidence separates {len(separated)} of {len(rivals)} "
                f"lambdas from lambda.min = {best:g}: their 95% intervals of the difference lie "
                "below 0.", "recommendation": None}
    widest = min(rivals, key=lambda p: p.mean_diff)
    sentence = (f"The paired evidence cannot separate the candidates: every lambda's 95% "
                f"interval of its difference from lambda.min = {best:g} contains 0 (the "
                f"largest mean difference is {widest.mean_diff:+.4f} at lambda "
                f"{widest.lam:g}, corrected SE {widest.se:.4f} over {widest.n} fits).")
    return {"sufficient": False, "separated": [], "sentence": sentence,
            "recommendation": recommend(widest, folds, repeats, groups, distinct)}


def recommend(rival: PairedPoint, folds: int, repeats: int, groups: int | None,
              distinct: int | None) -> str:
    """The cheapest design that would resolve ``rival``'s difference, in one sentence
    (``folds`` 1: a holdout tune, where only more seeds add evidence)."""
    holdout = folds == 1
    if holdout:
        max_folds = 1
    else:
        max_folds = min(MAX_FOLDS, groups) if groups else MAX_FOLDS
    repeats_help = distinct is None or distinct >= repeats  # groups allow new assignments
    design = design_for(rival.mean_diff, rival.sd, max_folds,
                        MAX_REPEATS if repeats_help else 1)
    now = folds * repeats
    if rival.sd == 0 or design is None:
        if holdout:
            limit, unit, scorer = f"{MAX_REPEATS} seeds", "seed", "the val split"
        else:
            limit = f"{max_folds} folds" + (f" x {MAX_REPEATS} repeats" if repeats_help else "")
            unit, scorer = "fold", "cross-validation"
        return (f"No design up to {limit} would resolve a difference of "
                f"{abs(rival.mean_diff):.4f} at this {unit}-to-{unit} spread (sd "
                f"{rival.sd:.4f}): {scorer} cannot rank these lambdas at this budget, so the "
                "choice is not a finding; check the candidates' training mIoU (a lambda "
                "whose training score falls is underfitting) or train longer.")
    k, r = design
    if holdout:
        return (f"To resolve a difference of {abs(rival.mean_diff):.4f} at this spread (sd "
                f"{rival.sd:.4f}) would take about --repeats {r} training seeds against "
                f"{now} now.")
    note = "" if repeats_help else (" (more repeats would not help: the groups allow no "
                                    "other fold assignment)")
    return (f"To resolve a difference of {abs(rival.mean_diff):.4f} at this spread (sd "
            f"{rival.sd:.4f}) would take about --folds {k} --repeats {r}, {k * r} fits per "
            f"lambda against {now} now{note}.")


def rules_sentence(paired: float, unpaired: float, points: list[PairedPoint],
                   unpaired_se: float) -> str | None:
    """One sentence when the paired and the unpaired (glmnet) 1-SE rules disagree."""
    if paired == unpaired:
        return None
    head = (f"The paired rule chooses lambda = {paired:g} and the unpaired glmnet rule "
            f"{unpaired:g}: ")
    if unpaired > paired:
        at = next(p for p in points if p.lam == unpaired)
        return head + (f"at {unpaired:g} the mean paired difference {at.mean_diff:+.4f} lies "
                       f"outside its paired SE {at.se:.4f}; the unpaired SE of the best mean "
                       f"({unpaired_se:.4f}) also counts the fold-to-fold differences that "
                       "every lambda shares.")
    at = next(p for p in points if p.lam == paired)
    return head + (f"at {paired:g} the mean paired difference {at.mean_diff:+.4f} is within "
                   f"its paired SE {at.se:.4f}, though its mean lies more than one unpaired SE "
                   f"({unpaired_se:.4f}) below the best.")


def underfit_sentence(chosen: float, best: float, points: list[PairedPoint],
                      train_miou: dict[float, float], sufficient: bool) -> str | None:
    """When thin evidence lets the rule reach to a strong lambda whose training mIoU fell
    far more than its CV score (by UNDERFIT_DROP and UNDERFIT_RATIO x), say so: the 1-SE
    band then holds an underfitting model that the folds could not tell apart."""
    if sufficient or chosen == best or chosen not in train_miou or best not in train_miou:
        return None
    drop = train_miou[best] - train_miou[chosen]
    cv_drop = -next(p.mean_diff for p in points if p.lam == chosen)
    if drop < UNDERFIT_DROP or drop < UNDERFIT_RATIO * max(cv_drop, 0.0):
        return None
    return (f"With evidence this thin, weigh the training scores: lambda {chosen:g} fits its "
            f"training images at mIoU {train_miou[chosen]:.3f} against {train_miou[best]:.3f} "
            f"at lambda.min = {best:g} ({-drop:+.3f}), while its CV mean is only "
            f"{-cv_drop:+.4f} from the best: it is likely underfitting, and lambda.min is the "
            "cautious pick (--select min).")
