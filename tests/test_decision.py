"""--decision adjusted: the prior, the bias, the choice of t by hand, and a run that chooses t
on val and has evaluate and predict decide with it."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdecay.config import TrainConfig, from_dict
from segdecay.data import load_dataset_for
from segdecay.data.base import IGNORE_INDEX
from segdecay.decision import (
    DECISION_FILE,
    TAUS,
    DecisionSweep,
    apply_bias,
    choose_tau,
    choose_tau_on_evidence,
    log_prior,
    logit_bias,
    miou_of_counts,
    per_image_counts,
)
from segdecay.errors import UserError
from segdecay.metrics import SegmentationMetrics
from segdecay.runs import evaluate_run, predict_paths
from segdecay.runs.folder import load_run
from segdecay.studies.compare.per_image import score_images
from segdecay.training import train
from segdecay.training.evaluate import Scoring, evaluate_split

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=2,
                   batch_size=4, optimizer="adamw", lr=2e-3, class_weights="inverse",
                   decision="adjusted", tta="none", encoder=SMALL_ENCODER)


def test_the_prior_is_laplace_smoothed_shares_and_the_bias_minus_t_log_prior():
    # counts 6, 3, 0 of 9 pixels: shares (6+1)/12, (3+1)/12, (0+1)/12
    logs = log_prior([6, 3, 0])
    assert logs == pytest.approx([math.log(7 / 12), math.log(4 / 12), math.log(1 / 12)])
    assert logit_bias(0.5, logs) == pytest.approx([-0.5 * v for v in logs])
    assert logit_bias(0.0, logs) == [0.0, 0.0, 0.0]
    assert TAUS[0] == -1.0 and TAUS[-1] == 1.0 and 0.0 in TAUS and len(TAUS) == 21


def test_a_positive_t_moves_a_close_pixel_to_the_rare_class_and_a_negative_t_back():
    logs = [math.log(0.9), math.log(0.1)]
    logits = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)  # argmax: the frequent class 0
    # t = 0.5 adds -0.5·log(0.9) = 0.053 to class 0 and -0.5·log(0.1) = 1.151 to class 1
    assert int(apply_bias(logits, logit_bias(0.5, logs)).argmax(1)) == 1
    # the switch lies at t = 0.5 / (log 0.9 - log 0.1) = 0.2276
    assert int(apply_bias(logits, logit_bias(0.3, logs)).argmax(1)) == 1  # 1.191 > 1.032
    assert int(apply_bias(logits, logit_bias(0.2, logs)).argmax(1)) == 0  # 0.961 < 1.021
    assert int(apply_bias(logits, logit_bias(-0.5, logs)).argmax(1)) == 0
    assert apply_bias(logits, None) is logits


def test_the_best_val_miou_chooses_and_a_tie_goes_to_the_smaller_change():
    assert choose_tau({-0.2: 0.5, 0.0: 0.4, 0.3: 0.45}) == -0.2
    assert choose_tau({-0.2: 0.5, 0.1: 0.5, 0.4: 0.5}) == 0.1
    assert choose_tau({-0.3: 0.5, 0.0: 0.5, 0.3: 0.5}) == 0.0
    assert choose_tau({-0.3: 0.5, 0.3: 0.5}) == 0.3  # equal |t|: the larger t, fixed order


def test_the_sweep_counts_each_t_as_an_independent_argmax_of_the_shifted_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    target = torch.randint(0, 3, (2, 5, 7))
    target[0, 0, :3] = IGNORE_INDEX
    logs = log_prior([50, 30, 5])
    sweep = DecisionSweep(logs, IGNORE_INDEX, taus=(-0.5, 0.0, 0.7))
    sweep.update(logits, target)
    for t in (-0.5, 0.0, 0.7):
        shifted = logits - t * torch.tensor(logs).view(1, 3, 1, 1)  # written out
        reference = SegmentationMetrics(3, IGNORE_INDEX)
        reference.update(shifted.argmax(1), target)
        assert sweep.result(t)["confusion"] == reference.compute()["confusion"]
    plain = SegmentationMetrics(3, IGNORE_INDEX)
    plain.update(logits, target)
    assert sweep.mious()[0.0] == plain.compute()["miou"]


def test_per_image_counts_are_each_images_own_confusion_matrix():
    torch.manual_seed(1)
    pred = torch.randint(0, 3, (3, 6, 5))
    target = torch.randint(0, 3, (3, 6, 5))
    target[1, :2] = IGNORE_INDEX
    counts = per_image_counts(pred, target, 3, IGNORE_INDEX)
    for i in range(3):
        reference = SegmentationMetrics(3, IGNORE_INDEX)
        reference.update(pred[i:i + 1], target[i:i + 1])
        cm = torch.tensor(reference.compute()["confusion"])
        assert counts[i].tolist() == [cm.diag().tolist(), cm.sum(0).tolist(), cm.sum(1).tolist()]


def _images(gains: list[float]) -> np.ndarray:
    """Binary images of 100 pixels, half foreground: at t = 0 each finds 25 of its 50
    foreground pixels (no false positives); at t = 0.5 it finds 25 + 50·gain more."""
    rows = []
    for g in gains:
        rows.append([[[50, 25], [75, 25], [50, 50]],
                     [[50, 25 + round(50 * g)], [50 - round(50 * g) + 25, 25 + round(50 * g)],
                      [50, 50]]])
    return np.array(rows)  # [n, T = (0, 0.5), 3, C]


def test_a_val_gain_is_kept_only_beyond_two_bootstrap_ses_over_the_images():
    """Each image: background IoU 50/75, foreground 25/50 at t = 0. A gain every image
    shares has a bootstrap SE of 0 and is kept; a gain that one image of ten carries against
    small losses on the others is within its SE, and one that two images of ten carry is
    beyond one SE but within two: argmax is kept for both."""
    shared = _images([0.2] * 10)
    mious = {0.0: float(miou_of_counts(shared.sum(0)[0])),
             0.5: float(miou_of_counts(shared.sum(0)[1]))}
    # t = 0: (50/75 + 25/50) / 2; t = 0.5: (50/65 + 35/50) / 2, by hand
    assert mious[0.0] == pytest.approx((50 / 75 + 0.5) / 2)
    assert mious[0.5] == pytest.approx((50 / 65 + 0.7) / 2)
    chosen = choose_tau_on_evidence(mious, shared, (0.0, 0.5))
    assert chosen["tau"] == 0.5 and chosen["se"] == pytest.approx(0, abs=1e-12)
    lone = _images([0.5] + [-0.02] * 9)  # +25 found on one, -1 on the nine others
    mious = {t: float(miou_of_counts(lone.sum(0)[i])) for i, t in enumerate((0.0, 0.5))}
    chosen = choose_tau_on_evidence(mious, lone, (0.0, 0.5))
    assert chosen["best_tau"] == 0.5 and chosen["tau"] == 0.0
    assert 0 < chosen["gain"] < chosen["se"]
    two = _images([0.3, 0.3] + [0.0] * 8)
    two_mious = {t: float(miou_of_counts(two.sum(0)[i])) for i, t in enumerate((0.0, 0.5))}
    by_two = choose_tau_on_evidence(two_mious, two, (0.0, 0.5))
    assert by_two["best_tau"] == 0.5 and by_two["tau"] == 0.0
    assert by_two["se"] < by_two["gain"] < 2 * by_two["se"]  # 0.044 against SE 0.029
    # the SE against the plain bootstrap written out: resample images, pool, mIoU, sd
    rng = np.random.default_rng(0)
    weights = rng.multinomial(10, [0.1] * 10, size=1000)
    diffs = []
    for w in weights:
        pooled = (lone * w[:, None, None, None]).sum(0)
        ious = [[pooled[t, 0, c] / (pooled[t, 1, c] + pooled[t, 2, c] - pooled[t, 0, c])
                 for c in (0, 1)] for t in (0, 1)]
        diffs.append(np.mean(ious[1]) - np.mean(ious[0]))
    assert chosen["se"] == pytest.approx(np.std(diffs, ddof=1))


def test_decision_is_a_checked_choice_of_the_config():
    assert TrainConfig().decision is None  # decided from the data: adjusted where val exists
    with pytest.raises(UserError, match="decision"):
        from_dict({"decision": "threshold"}, "--config x.yaml")


@pytest.fixture(scope="module")
def adjusted_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("decision") / "run"
    train(TINY, out)
    return out


def test_a_run_chooses_t_on_val_as_the_sweep_does_by_hand(adjusted_run: Path):
    decision = json.loads((adjusted_run / DECISION_FILE).read_text())
    summary = json.loads((adjusted_run / "summary.json").read_text())
    assert summary["decision"] == decision
    config, meta, model, dev = load_run(adjusted_run, "last", "cpu")
    data = load_dataset_for(config)
    counts = torch.zeros(meta["num_classes"], dtype=torch.int64)
    for m in data.train.masks:  # the prior, counted independently of class_pixel_counts
        kept = m[m != IGNORE_INDEX].long()
        counts += torch.bincount(kept, minlength=meta["num_classes"])
    assert decision["log_prior"] == pytest.approx(log_prior(counts.tolist()))
    by_hand = {}
    for t in TAUS:
        bias = logit_bias(t, decision["log_prior"])
        result, _ = evaluate_split(model, data.val, meta["num_classes"], config, dev,
                                   scoring=Scoring(logit_bias=bias))
        by_hand[t] = result["miou"]
    best = choose_tau(by_hand)
    assert decision["best_val_tau"] == best
    assert decision["val_gain"] == pytest.approx(by_hand[best] - by_hand[0.0])
    kept = best == 0.0 or decision["val_gain"] > decision["val_gain_se"]
    assert decision["tau"] == (best if kept else 0.0)
    assert decision["val_images"] == len(data.val)
    assert decision["val_miou"] == pytest.approx(by_hand[decision["tau"]])
    assert decision["val_miou_argmax"] == pytest.approx(by_hand[0.0])
    assert decision["val_miou_argmax"] == pytest.approx(summary["final_val_miou"])
    assert decision["logit_bias"] == pytest.approx(logit_bias(decision["tau"],
                                                              decision["log_prior"]))


def test_evaluate_and_predict_decide_with_the_runs_bias_unless_told_argmax(
        adjusted_run: Path, tmp_path: Path):
    decision = json.loads((adjusted_run / DECISION_FILE).read_text())
    # a bias that visibly changes the decision, so that using it or not cannot agree by luck
    last = len(decision["log_prior"]) - 1
    forced = {**decision, "tau": 1.0, "logit_bias": [0.0] * last + [50.0]}
    (adjusted_run / DECISION_FILE).write_text(json.dumps(forced))
    try:
        adjusted = evaluate_run(adjusted_run, split="test", checkpoint="last",
                                out=tmp_path / "a.json", quiet=True)
        plain = evaluate_run(adjusted_run, split="test", checkpoint="last",
                             out=tmp_path / "p.json", quiet=True, decision="argmax")
        assert adjusted["decision"].startswith("adjusted, t = 1")
        assert plain["decision"] == "argmax"
        predicted = np.array(adjusted["confusion"]).sum(axis=0)
        assert predicted[last] == predicted.sum()  # the last class everywhere, as biased
        assert np.array(plain["confusion"]).sum(axis=0)[last] < predicted.sum()
        image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "x.png")
        predict_paths(adjusted_run, tmp_path / "x.png", tmp_path / "pa", checkpoint="last",
                      quiet=True)
        predict_paths(adjusted_run, tmp_path / "x.png", tmp_path / "pp", checkpoint="last",
                      quiet=True, decision="argmax")
        assert (np.array(Image.open(tmp_path / "pa" / "x_mask.png")) == last).all()
        assert not (np.array(Image.open(tmp_path / "pp" / "x_mask.png")) == last).all()
        config, meta, _, _ = load_run(adjusted_run, "last", "cpu")
        compared = score_images(adjusted_run, load_dataset_for(config).test, last + 1)
        assert compared["confusion"] == adjusted["confusion"]  # compare decides as evaluate
    finally:
        (adjusted_run / DECISION_FILE).write_text(json.dumps(decision))


def test_an_argmax_run_writes_no_decision_and_evaluate_names_argmax(tmp_path: Path):
    out = tmp_path / "plain"
    train(replace(TINY, decision="argmax", epochs=1), out)
    assert not (out / DECISION_FILE).exists()
    assert "decision" not in json.loads((out / "summary.json").read_text())
    result = evaluate_run(out, split="val", checkpoint="last", quiet=True)
    assert result["decision"] == "argmax"
    with pytest.raises(UserError, match="--decision"):
        evaluate_run(out, split="val", decision="best")
    (out / DECISION_FILE).write_text("{not json")
    with pytest.raises(UserError, match="decision.json: not a decision file"):
        evaluate_run(out, split="val", checkpoint="last", quiet=True)


def test_the_printed_line_names_a_choice_at_the_grids_edge():
    from segdecay.training.loop import decision_line

    row = {"val_miou": 0.6249, "val_miou_argmax": 0.6153}
    assert "t = -0.4, chosen on val: val mIoU 62.49 (argmax 61.53)" in decision_line(
        {**row, "tau": -0.4})
    assert "edge" not in decision_line({**row, "tau": -0.4})
    assert "t = 1 (the grid's edge" in decision_line({**row, "tau": 1.0})
    assert "t = -1 (the grid's edge" in decision_line({**row, "tau": -1.0})


def test_the_printed_line_counts_the_test_time_passes_in_words():
    from segdecay.training.loop import decision_line

    row = {"val_miou": 0.6249, "val_miou_argmax": 0.6153, "tau": 0.0}
    kept_none = {**row, "tta": "none", "tta_passes": 1,
                 "val_miou_by_tta": {"none": 0.6249, "d4": 0.62}}
    assert "test-time augmentation none (1 pass per image; d4: 62.00)" in decision_line(kept_none)
    kept_d4 = {**row, "tta": "d4", "tta_passes": 8,
               "val_miou_by_tta": {"d4": 0.6249, "none": 0.62}}
    assert "test-time augmentation d4 (8 passes per image; none: 62.00)" in decision_line(kept_d4)
