"""``tune --holdout``: every fit trains on the whole training split and is scored on the val
split; repeats are training seeds, and the paired rule compares lambdas seed by seed with
the plain paired SE (the fits share their training images, so there is no overlap to
correct for)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import scipy.stats

from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.data import load_dataset_for
from segdecay.data.base import SegData
from segdecay.errors import UserError
from segdecay.studies.tune import TuneOptions, run_tune
from segdecay.studies.tune.evidence import recommend
from segdecay.studies.tune.folds import fold_plan
from segdecay.studies.tune.selection import (
    PairedPoint,
    corrected_se,
    design_for,
    paired_difference,
)
from segdecay.training import Log, train

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = "synthetic:size=32,n_train=12,n_val=4,n_test=4"


def test_holdout_fits_train_on_the_whole_training_split_and_score_val():
    data = load_dataset_for(TrainConfig(data=TINY))
    fits, facts = fold_plan(data, TuneOptions(grid=[0.0], folds=1, holdout=True, repeats=3))
    assert [(r, f) for r, f, _ in fits] == [(0, 0), (1, 0), (2, 0)]
    for _, _, d in fits:
        assert d.train.names == data.train.names and d.val.names == data.val.names
        assert d.test is None
    assert facts == {"groups": None, "distinct_assignments": None}


def test_holdout_without_a_val_split_is_refused_naming_the_option():
    data = load_dataset_for(TrainConfig(data=TINY))
    bare = SegData(info=data.info, train=data.train, val=None, test=data.test)
    with pytest.raises(UserError, match="--holdout: .* no val split"):
        fold_plan(bare, TuneOptions(grid=[0.0], folds=1, holdout=True))


def test_holdout_se_is_the_plain_paired_se_and_matches_scipy():
    a = [0.61, 0.58, 0.64, 0.60]
    b = [0.60, 0.55, 0.61, 0.60]  # differences .01, .03, .03, 0: mean .0175
    mean, sd, se, se_naive, low, high, n = paired_difference(a, b, folds=1)
    sd_hand = math.sqrt(((.01 - .0175) ** 2 + 2 * (.03 - .0175) ** 2 + .0175 ** 2) / 3)
    assert (mean, n) == (pytest.approx(0.0175), 4)
    assert sd == pytest.approx(sd_hand)
    assert se == se_naive == pytest.approx(sd_hand / 2)  # no Nadeau-Bengio term
    assert corrected_se(sd, 4, 1) == pytest.approx(sd_hand / 2)
    ref = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_holdout_design_needs_seeds_only():
    # t(6, .975) = 2.447: 2.447 x .02 / sqrt(7) = .0185 < .02; t(5) = 2.571: .0210 >= .02
    assert design_for(0.02, 0.02, max_folds=1) == (1, 7)
    point = PairedPoint(0.1, -0.02, 0.02, 0.01, 0.01, -0.05, 0.01, 2)
    words = recommend(point, folds=1, repeats=2, groups=None, distinct=None)
    assert "--repeats 7 training seeds against 2 now" in words and "--folds" not in words


def test_holdout_tune_scores_are_plain_training_runs_on_val(tmp_path):
    """Each fit of a holdout tune is the run `segdecay train` makes with that lambda and
    seed on the study's data: its score is that run's final val mIoU, to the digit (CPU runs
    are exact). The data are loaded once with the base seed (synthetic data, and a folder's
    carved-out val split, follow the seed), so the repeats differ in training only."""
    base = TrainConfig(data=TINY, epochs=2, batch_size=4, device="cpu", seed=5,
                       optimizer="adamw", lr=3e-3, encoder=SMALL_ENCODER)
    options = TuneOptions(grid=[0.1], folds=1, holdout=True, repeats=2, pruner="none",
                          rule_point=False)
    payload = run_tune(base, options, tmp_path / "tune", quiet=True)
    assert payload["holdout"] and payload["folds"] == 1
    assert payload["design"] == "holdout on the val split x 2 seed(s)"
    assert "seed by seed on the val split" in payload["selection"]["paired_rule"]
    on_disk = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert "training runs' randomness, not the sampling of the val images" in on_disk["se_caveat"]
    trial = on_disk["trials"][0]
    fit_base = replace(payload_config(payload), weight_decay=0.1, eval_every=2)
    data = load_dataset_for(fit_base)
    for r, score in enumerate(trial["fold_scores"]):
        plain = train(replace(fit_base, seed=5 + r), tmp_path / f"plain{r}", log=Log(quiet=True),
                      checkpoints=False, data=data)
        assert score == plain["final_val_miou"]
    assert trial["fold_scores"][0] != trial["fold_scores"][1]  # seeds differ


def payload_config(payload: dict) -> TrainConfig:
    """The study's resolved base config, as tune.json keeps it."""
    return TrainConfig(**payload["base_config"])


@pytest.mark.parametrize("extra, words", [
    (["--folds", "5"], "--holdout scores every fit on the val split"),
    (["--group-by", "(.)"], "drop --group-by"),
])
def test_holdout_refuses_folds_and_groups(tmp_path, capsys, extra, words):
    code = main(["tune", "--data", TINY, "--out", str(tmp_path / "t"), "--grid", "0,0.1",
                 "--holdout", "--epochs", "1", *extra])
    assert code == 2 and words in capsys.readouterr().err


def test_holdout_flag_means_one_fold_and_folds_default_to_three():
    from segdecay.cli import build_parser
    from segdecay.cli.tune import study_inputs

    def folds(*argv: str) -> int:
        return study_inputs(build_parser().parse_args(["tune", "--out", "t", *argv]))[1].folds

    assert folds("--holdout") == 1
    assert folds() == 3
    assert folds("--folds", "5") == 5
    assert folds("--holdout", "--folds", "5") == 5  # kept, so validate() can name it
