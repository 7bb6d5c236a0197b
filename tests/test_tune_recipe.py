"""A tune over the whole recipe: lambda with loss and class weights, and what each part bought."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
import scipy.stats

from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.studies.tune.recipe import part_gains, parts_lines
from segdecay.studies.tune.search import skip_reason
from segdecay.studies.tune.selection import paired_difference
from segdecay.studies.tune.trials import TrialRow

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = "synthetic:size=32,n_train=12,n_val=4,n_test=4"


def _row(lam: float, loss: str, scores: list[float], weights: str = "none") -> TrialRow:
    """A complete trial of this recipe and these fold scores."""
    return TrialRow(number=0, state="COMPLETE", weight_decay=lam, tau_epochs=None, lr=0.05,
                    decay_mode=None, loss=loss, class_weights=weights,
                    cv_mean=math.fsum(scores) / len(scores), cv_se=0.0,
                    folds_done=len(scores), fold_scores=scores, train_miou=None,
                    weight_norm=None, epochs_run=0, pruned=False, duplicate_of=None,
                    skipped=None, failure=None)


# chosen (1e-3, ce+dice) against lambda 0, against CE, and against both (the plain recipe)
ROWS = [_row(1e-3, "ce+dice", [0.60, 0.70, 0.50]), _row(0.0, "ce+dice", [0.55, 0.68, 0.47]),
        _row(1e-3, "ce", [0.50, 0.60, 0.45]), _row(0.0, "ce", [0.50, 0.55, 0.40])]
CHOICE = {"lr": 0.05, "decay_mode": None, "loss": "ce+dice", "class_weights": "none"}


def test_each_part_gain_is_the_paired_difference_with_the_corrected_se() -> None:
    gains = part_gains(ROWS, CHOICE, 1e-3, ["loss"], TrainConfig(lr=0.05), folds=3)
    assert [g["part"] for g in gains] == ["lambda", "loss", "all of them"]
    lam, loss, both = gains
    assert (lam["chosen"], lam["reference"], loss["reference"]) == (1e-3, 0.0, "ce")
    # lambda: differences 0.05, 0.02, 0.03 -> mean 1/30; deviations 5, -4, -1 (x 1/300):
    # s^2 = 42/90000/2 = 7/30000; corrected se^2 = (1/3 + 1/(3-1)) s^2 = 7/36000
    assert lam["mean_gain"] == pytest.approx(float(Fraction(1, 30)))
    assert lam["se"] ** 2 == pytest.approx(float(Fraction(7, 36000)))
    half = scipy.stats.t.ppf(0.975, 2) * float(Fraction(7, 36000)) ** 0.5
    assert (lam["ci_low"], lam["ci_high"]) == pytest.approx((1 / 30 - half, 1 / 30 + half))
    # loss: 0.10, 0.10, 0.05 -> mean 1/12; all: 0.10, 0.15, 0.10 -> mean 7/60
    assert loss["mean_gain"] == pytest.approx(1 / 12) and both["mean_gain"] == pytest.approx(
        7 / 60)
    assert lam["n"] == loss["n"] == both["n"] == 3
    assert paired_difference([0.6, 0.7, 0.5], [0.5, 0.55, 0.4], 3)[0] == pytest.approx(7 / 60)
    assert parts_lines(gains)[1].startswith("recipe part loss: ce+dice instead of ce: +0.0833")


def test_a_plain_counterpart_that_was_not_scored_is_named_not_guessed() -> None:
    gains = part_gains(ROWS[:2], CHOICE, 1e-3, ["loss"], TrainConfig(lr=0.05), folds=3)
    # CE was never scored here, so the loss part has only ce+dice to compare with itself
    assert gains[1]["note"] == "the chosen value is the plain one"
    gains = part_gains([ROWS[0], ROWS[2]], CHOICE, 1e-3, ["loss"], TrainConfig(lr=0.05), 3)
    assert gains[0]["note"] == "the chosen value is the plain one"  # only lambda 1e-3 tried
    assert gains[2]["mean_gain"] == pytest.approx(1 / 12)
    missing = part_gains(ROWS[:3], CHOICE, 1e-3, ["loss"], TrainConfig(lr=0.05), folds=3)
    assert missing[2]["mean_gain"] is None and "not scored on every fold" in missing[2]["note"]


def test_on_a_tau_grid_the_lr_part_keeps_tau_not_lambda() -> None:
    """A tau grid with an lr grid: lambda = 1/(tau x steps x lr_eff) differs per lr, so the
    lr part compares the chosen recipe with the base lr at the same tau (keyed by lambda, a
    CamVid lr tune reported the lr part "not scored")."""
    def row(tau: float, lr: float, scores: list[float]) -> TrialRow:
        lam = 1 / (tau * 10 * lr)  # 10 steps per epoch, AdamW: lr_eff = lr
        return replace(_row(lam, "ce", scores), lr=lr, tau_epochs=tau)

    rows = [row(3, 1e-3, [0.30, 0.31, 0.12]), row(3, 2e-3, [0.28, 0.27, 0.09]),
            row(30, 1e-3, [0.29, 0.30, 0.10])]
    choice = {**CHOICE, "lr": 1e-3, "loss": "ce"}
    gains = part_gains(rows, choice, rows[0].weight_decay, ["lr"], TrainConfig(lr=2e-3), 3)
    tau, lr, both = gains
    assert (tau["part"], tau["chosen"], tau["reference"]) == ("tau (epochs)", 3, 30)
    assert tau["mean_gain"] == pytest.approx((0.01 + 0.01 + 0.02) / 3)
    assert (lr["chosen"], lr["reference"]) == (1e-3, 2e-3)
    assert lr["mean_gain"] == pytest.approx((0.02 + 0.04 + 0.03) / 3)
    assert both["mean_gain"] is None  # tau 30 at lr 2e-3 was not trained
    # the base lr chosen: the line names what the other lr lost, paired
    same = part_gains(rows, choice, rows[0].weight_decay, ["lr"], TrainConfig(lr=1e-3), 3)
    runner = same[1]["runner_up"]
    assert runner["value"] == 2e-3 and runner["mean_gain"] == pytest.approx(0.03)
    assert parts_lines(same)[1].startswith(
        "recipe part lr: 0.001 instead of 0.001: the chosen value is the plain one; over the "
        "next best, 0.002: +0.0300 mIoU")


def test_class_weights_on_a_loss_without_them_are_skipped() -> None:
    base = TrainConfig(loss="ce")
    assert skip_reason({"loss": "dice", "class_weights": "median"}, base) is not None
    assert skip_reason({"loss": "ce+dice", "class_weights": "median"}, base) is None
    assert skip_reason({"class_weights": "enet"}, base) is None
    assert skip_reason({"loss": "lovasz"}, base) is None


@pytest.mark.slow
def test_tune_over_lambda_loss_and_class_weights_reports_each_part(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    rc = main(["tune", "--data", TINY, "--out", str(out), "--grid", "0,1e-3",
               "--loss-grid", "ce,dice", "--class-weights-grid", "none,median", "--folds", "2",
               "--pruner", "none", "--epochs", "1", "--batch-size", "4", "--quiet",
               "--encoder", SMALL_ENCODER,
               "--no-rule-point"])
    assert rc == 0
    payload = json.loads((out / "tune.json").read_text())
    trials = payload["trials"]
    assert len(trials) == 8  # 2 lambdas x 2 losses x 2 weightings
    skipped = [t for t in trials if t["skipped"]]
    assert len(skipped) == 2 and {t["loss"] for t in skipped} == {"dice"}
    assert {t["class_weights"] for t in skipped} == {"median"}
    assert payload["compute"]["epochs_full_grid"] == 6 * 2  # skipped points cost nothing
    parts = {p["part"]: p for p in payload["recipe_parts"]}
    assert set(parts) == {"lambda", "loss", "class weights", "all of them"}
    # recompute one part from the trials' own fold scores
    sel = payload["selection"]
    by = {(t["weight_decay"], t["loss"], t["class_weights"]): t["fold_scores"]
          for t in trials if t["state"] == "COMPLETE"}
    chosen = by[(payload["chosen"], sel["loss"], sel["class_weights"])]
    plain = by[(0.0, "ce", "none")]  # every part at its plain value
    expected = sum(a - b for a, b in zip(chosen, plain, strict=True)) / 2
    if (payload["chosen"], sel["loss"], sel["class_weights"]) == (0.0, "ce", "none"):
        assert parts["all of them"]["note"] == "the chosen value is the plain one"
    else:
        assert parts["all of them"]["mean_gain"] == pytest.approx(expected)
    with (out / "trials.csv").open() as fh:
        header = next(csv.reader(fh))
    assert {"loss", "class_weights", "skipped"} <= set(header)
    assert "What each part of the recipe bought" in (out / "report.html").read_text()


def test_an_unknown_loss_in_the_grid_is_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["tune", "--data", TINY, "--out", str(tmp_path / "t"), "--grid", "0",
               "--loss-grid", "ce,dicee"])
    err = capsys.readouterr().err
    assert rc == 2 and "--loss-grid 'dicee': unknown choice" in err
