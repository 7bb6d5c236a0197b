"""Choosing lambda: 1-SE selection, group folds, resumable and shared Optuna studies."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.stats
import torch

from segdecay.config import TrainConfig
from segdecay.errors import UserError
from segdecay.studies.tune.evidence import assess, rules_sentence
from segdecay.studies.tune.folds import group_keys, group_kfold, repeated_group_kfold
from segdecay.studies.tune.options import TuneOptions
from segdecay.studies.tune.rule import rule_check, rule_point, with_rule_point
from segdecay.studies.tune.selection import (
    corrected_se,
    design_for,
    paired_points,
    select_lambda,
    select_paired,
    summarize,
)
from segdecay.studies.tune.storage import redact, resolve_storage_url
from segdecay.studies.tune.trials import TrialRow

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import PASSWORD, postgres_server  # noqa: E402
from small_model import SMALL_ENCODER  # noqa: E402

TINY = "synthetic:size=32,n_train=12,n_val=4,n_test=4"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ selection


def test_one_standard_error_rule_on_hand_made_folds():
    folds = {
        0.0: [0.50, 0.52, 0.54],     # mean .52
        1e-4: [0.55, 0.57, 0.59],    # mean .57, sd .02, se .02/sqrt(3) = .011547
        1e-3: [0.56, 0.55, 0.57],    # mean .56 >= .57 - .011547 = .558453: within 1 SE
        1e-2: [0.55, 0.56, 0.56],    # mean .556667 < .558453: outside
        1e-1: [0.30, 0.31, 0.29],
    }
    choice = select_lambda(folds)
    assert choice["lambda_min"] == 1e-4
    assert choice["best_mean"] == pytest.approx(0.57)
    assert choice["best_se"] == pytest.approx(0.02 / math.sqrt(3))
    assert choice["threshold"] == pytest.approx(0.57 - 0.02 / math.sqrt(3))
    assert choice["lambda_1se"] == 1e-3


def test_one_se_can_reach_past_a_dip_and_equals_min_when_alone():
    # largest lambda within 1 SE, even when a smaller lambda in between falls outside
    choice = select_lambda({0.0: [0.6, 0.7], 1e-3: [0.2, 0.2], 1e-2: [0.64, 0.64]})
    assert choice["lambda_min"] == 0.0 and choice["lambda_1se"] == 1e-2
    assert select_lambda({1e-3: [0.5, 0.6]})["lambda_1se"] == 1e-3


def test_standard_error_matches_scipy():
    scores = [0.41, 0.47, 0.44, 0.52]
    mean, se = summarize(scores)
    assert se == pytest.approx(scipy.stats.sem(scores))
    assert mean == pytest.approx(sum(scores) / 4)


# Fold 2 is much easier than fold 3 for every lambda: the unpaired SE of the best mean
# (0.2/sqrt(3) = 0.11547) swallows every difference, while on the same folds 1e-2 is below
# lambda.min by exactly 0.03 on every fold.
HARD_FOLD = {
    0.0: [0.60, 0.40, 0.20],   # mean 0.4: lambda.min
    1e-3: [0.61, 0.38, 0.20],  # diffs (1/100, -2/100, 0): mean -1/300, s^2 = 7/30000
    1e-2: [0.57, 0.37, 0.17],  # diffs (-3/100, -3/100, -3/100): mean -0.03, s = 0
}


def test_paired_one_se_rule_on_hand_made_folds_differs_from_the_unpaired_rule():
    unpaired = select_lambda(HARD_FOLD)
    assert unpaired["lambda_min"] == 0.0
    assert unpaired["threshold"] == pytest.approx(0.4 - 0.2 / math.sqrt(3))  # 0.28453
    assert unpaired["lambda_1se"] == 1e-2  # mean 0.37 >= 0.28453
    paired = select_paired(HARD_FOLD, folds=3)
    points = {p.lam: p for p in paired["points"]}
    # 1e-3: corrected var = (1/3 + 1/(3-1)) * 7/30000 = 7/36000
    assert points[1e-3].mean_diff == pytest.approx(-1 / 300)
    assert points[1e-3].sd ** 2 == pytest.approx(7 / 30000)
    assert points[1e-3].se == pytest.approx(math.sqrt(7 / 36000))  # 0.013944 > 1/300
    assert points[1e-2].mean_diff == pytest.approx(-0.03)
    assert points[1e-2].se == pytest.approx(0.0, abs=1e-12)  # -0.03 < -0: outside
    assert points[0.0].mean_diff == 0.0 and points[0.0].se == 0.0
    assert paired["lambda_min"] == 0.0
    assert paired["within"] == [0.0, 1e-3]
    assert paired["lambda_1se"] == 1e-3
    sentence = rules_sentence(1e-3, 1e-2, paired["points"], unpaired["best_se"])
    assert "paired rule chooses lambda = 0.001 and the unpaired glmnet rule 0.01" in sentence
    assert rules_sentence(1e-3, 1e-3, paired["points"], unpaired["best_se"]) is None


def test_paired_interval_is_scipys_paired_t_interval_widened_by_the_correction():
    a = [0.52, 0.47, 0.31, 0.55, 0.40, 0.36]  # 2 repeats x 3 folds
    b = [0.50, 0.49, 0.25, 0.50, 0.41, 0.30]
    best, points = paired_points({0.0: a, 1e-3: b}, folds=3)
    assert best == 0.0
    p = next(q for q in points if q.lam == 1e-3)
    test = scipy.stats.ttest_rel(b, a)
    low, high = test.confidence_interval(0.95)
    widen = math.sqrt((1 / 6 + 1 / 2) / (1 / 6))  # Nadeau-Bengio over plain 1/J
    assert p.mean_diff == pytest.approx((low + high) / 2)
    assert p.se_naive == pytest.approx(scipy.stats.sem([x - y for x, y in zip(b, a,
                                                                              strict=True)]))
    assert p.ci_high - p.mean_diff == pytest.approx((high - low) / 2 * widen)
    assert p.se == pytest.approx(corrected_se(p.sd, 6, 3))


def test_lambdas_missing_fits_are_left_out_of_the_paired_comparison():
    best, points = paired_points({0.0: [0.5, 0.6], 1e-3: [0.7]}, folds=2)
    assert best == 0.0 and [p.lam for p in points] == [0.0]


NAN = math.nan


def test_a_lambda_with_a_nan_fold_score_is_left_out_like_a_failed_fit():
    # 0 has NaN on fold 1 (kept, it would win lambda.min: max() never replaces a NaN met
    # first) and 1e-1 on fold 2 (kept, it would make every paired difference NaN); both are
    # left out.
    # 1e-3: mean .55, se .05, threshold .5; 1e-2: mean .3, outside. Paired, 2 folds: 1e-2's
    # diffs (-.2, -.3), mean -.25, corrected SE sqrt((1/2 + 1/1) · .005) = .0866: outside.
    scores = {0.0: [NAN, 0.9], 1e-3: [0.5, 0.6], 1e-2: [0.3, 0.3], 1e-1: [0.55, math.inf]}
    unpaired = select_lambda(scores)
    assert unpaired["lambda_min"] == 1e-3 and unpaired["lambda_1se"] == 1e-3
    assert unpaired["best_mean"] == pytest.approx(0.55)
    assert unpaired["threshold"] == pytest.approx(0.5)
    paired = select_paired(scores, folds=2)
    assert paired["lambda_min"] == 1e-3 and paired["lambda_1se"] == 1e-3
    assert [p.lam for p in paired["points"]] == [1e-3, 1e-2]
    rival = paired["points"][1]
    assert rival.mean_diff == pytest.approx(-0.25)
    assert rival.se == pytest.approx(math.sqrt(1.5 * 0.005))
    with pytest.raises(ValueError, match="no lambda"):
        select_lambda({0.0: [NAN, 0.5]})
    with pytest.raises(ValueError, match="no lambda"):
        select_paired({0.0: [NAN, 0.5]}, folds=2)


def test_tied_means_choose_the_smaller_lambda_whatever_the_fold_order():
    # equal means, scores in opposite fold orders: summed left to right, .3 + .2 + .1 = .6
    # but .1 + .2 + .3 = .6000000000000001, which would hand lambda.min to 1e-3
    scores = {0.0: [0.3, 0.2, 0.1], 1e-3: [0.1, 0.2, 0.3]}
    unpaired = select_lambda(scores)
    assert unpaired["lambda_min"] == 0.0
    assert unpaired["lambda_1se"] == 1e-3  # mean .2 >= .2 - .057735
    paired = select_paired(scores, folds=3)
    assert paired["lambda_min"] == 0.0
    assert paired["within"] == [0.0, 1e-3]  # diffs (-.2, 0, .2): mean 0, SE > 0


def test_a_mean_exactly_on_the_threshold_is_within_so_lambda_1se_takes_the_larger_tie():
    # identical scores: lambda.min is the smaller lambda, and the paired difference of the
    # larger is 0 with SE 0 (0 >= -0): within, so it is lambda.1se under both rules
    same = {0.0: [0.4, 0.6], 1e-2: [0.4, 0.6]}
    assert select_lambda(same)["lambda_min"] == 0.0
    assert select_lambda(same)["lambda_1se"] == 1e-2
    paired = select_paired(same, folds=2)
    assert (paired["lambda_min"], paired["lambda_1se"]) == (0.0, 1e-2)
    # dyadic scores make the threshold exact: best mean .5, sd sqrt(.125), SE .25, so the
    # threshold is .25 and a mean of exactly .25 is within
    edge = select_lambda({0.0: [0.25, 0.75], 1e-2: [0.25, 0.25]})
    assert edge["best_se"] == 0.25 and edge["threshold"] == 0.25
    assert edge["lambda_1se"] == 1e-2


def test_evidence_that_cannot_separate_says_so_and_names_a_design():
    # diffs -.02 -.03 -.01: mean -.02, sd .01, corrected SE .01 sqrt(1/3 + 1/2) = .00913,
    # t(2) x SE = .039 > .02. Five folds: t(4) .01 sqrt(1/5 + 1/4) = .0186 < .02.
    scores = {0.0: [0.60, 0.40, 0.20], 1e-3: [0.58, 0.37, 0.19]}
    best, points = paired_points(scores, folds=3)
    verdict = assess(points, best, folds=3, repeats=1, groups=20, distinct=1)
    assert not verdict["sufficient"]
    assert "cannot separate the candidates" in verdict["sentence"]
    rival = next(p for p in points if p.lam == 1e-3)
    k, r = design_for(rival.mean_diff, rival.sd, max_folds=10)
    assert (k, r) == (5, 1)
    assert f"--folds {k} --repeats {r}" in verdict["recommendation"]
    # the design resolves the difference, and no cheaper design does
    t = scipy.stats.t.ppf(0.975, k * r - 1)
    assert t * corrected_se(rival.sd, k * r, k) < abs(rival.mean_diff)
    for k2 in range(2, 11):
        for r2 in range(1, 11):
            if k2 * r2 < k * r and k2 * r2 > 1:
                t2 = scipy.stats.t.ppf(0.975, k2 * r2 - 1)
                assert t2 * corrected_se(rival.sd, k2 * r2, k2) >= abs(rival.mean_diff)
    # a spread three times the difference: the overlap term 1/(k-1) alone keeps it unresolved
    noisy = {0.0: [0.60, 0.40, 0.20], 1e-3: [0.62, 0.36, 0.19]}  # diffs .02 -.04 -.01
    best, points = paired_points(noisy, folds=3)
    verdict = assess(points, best, folds=3, repeats=1, groups=20, distinct=3)
    assert "No design up to 10 folds x 10 repeats would resolve" in verdict["recommendation"]
    best, points = paired_points(HARD_FOLD, folds=3)
    separated = assess(points, best, folds=3, repeats=1, groups=20, distinct=1)
    assert separated["sufficient"] and separated["separated"] == [1e-2]
    assert separated["recommendation"] is None


def test_an_underfitting_choice_on_thin_evidence_is_named():
    """CamVid seed 0's full grid (fold scores rounded): the paired rule reaches to 0.1, whose
    CV mean is .0110 below lambda.min = 1e-3 and whose training mIoU is .056 lower."""
    from segdecay.studies.tune.evidence import underfit_sentence

    scores = {1e-3: [0.233, 0.287, 0.111], 1e-1: [0.229, 0.219, 0.150]}
    best, points = paired_points(scores, folds=3)  # diffs -.004 -.068 +.039: mean -.011
    assert best == 1e-3
    train = {1e-3: 0.196, 1e-1: 0.140}
    words = underfit_sentence(1e-1, best, points, train, sufficient=False)
    assert "0.140 against 0.196" in words and "(-0.056)" in words and "-0.0110" in words
    # a drop under 0.02, or under twice the CV drop, or sufficient evidence: no sentence
    assert underfit_sentence(1e-1, best, points, {1e-3: 0.196, 1e-1: 0.180}, False) is None
    assert underfit_sentence(1e-1, best, points, {1e-3: 0.196, 1e-1: 0.175}, False) is None
    assert underfit_sentence(1e-1, best, points, {1e-3: 0.196, 1e-1: 0.170}, False)
    assert underfit_sentence(1e-1, best, points, train, sufficient=True) is None
    assert underfit_sentence(best, best, points, train, sufficient=False) is None


# ------------------------------------------------------------------ folds


def test_group_kfold_keeps_groups_together_and_covers_every_image_once():
    names = ([f"0001TP_{i:06d}" for i in range(0, 60, 3)] + [f"0006R0_f{i:05d}" for i in range(13)]
             + [f"0016E5_{i:05d}" for i in range(30)] + [f"Seq05VD_f{i:05d}" for i in range(9)]
             + [f"0001TP_{i:06d}" for i in range(100, 105)])
    keys = group_keys(names, [], r"^([^_]+)_")
    assert set(keys) == {"0001TP", "0006R0", "0016E5", "Seq05VD"}
    folds = group_kfold(keys, 3, seed=4)
    seen = [i for _, val in folds for i in val]
    assert sorted(seen) == list(range(len(names)))  # every image validated exactly once
    for train, val in folds:
        assert set(train).isdisjoint(val) and len(train) + len(val) == len(names)
        val_groups = {keys[i] for i in val}
        assert val_groups.isdisjoint({keys[i] for i in train})  # no group straddles
    assert group_kfold(keys, 3, seed=4) == folds  # seeded


def test_repeats_draw_different_fold_assignments_on_groups_of_distinct_sizes():
    sizes = [3, 5, 8, 13, 21, 34, 4, 7]  # distinct: largest-first placement ignores the seed
    keys = [f"g{g}" for g, n in enumerate(sizes) for _ in range(n)]
    balanced = [group_kfold(keys, 3, seed=s) for s in range(5)]
    assert all(b == balanced[0] for b in balanced)  # why balanced placement alone adds nothing
    plans, distinct = repeated_group_kfold(keys, 3, repeats=4, seed=0)
    assert plans[0] == balanced[0]  # repeat 0 is the balanced assignment
    partitions = {frozenset(frozenset(val) for _, val in plan) for plan in plans}
    assert distinct == len(partitions) == 4
    for plan in plans:  # each is still a group k-fold
        assert sorted(i for _, val in plan for i in val) == list(range(len(keys)))
        for _, val in plan:
            assert {keys[i] for i in val}.isdisjoint({keys[i] for i in range(len(keys))
                                                       if i not in set(val)})


def test_repeats_say_when_the_groups_allow_only_one_assignment():
    keys = ["a"] * 4 + ["b"] * 2 + ["c"] * 3  # 3 groups, 3 folds: one partition
    plans, distinct = repeated_group_kfold(keys, 3, repeats=3, seed=0)
    assert len(plans) == 3 and distinct == 1


def test_group_kfold_errors_and_regex_errors():
    with pytest.raises(UserError, match="--folds 5"):
        group_kfold(["a", "a", "b"], 5)
    with pytest.raises(UserError, match="--group-by"):
        group_keys(["x_1", "y"], [], r"^(\w)_")


# ------------------------------------------------------------------ storage


def test_redact_hides_passwords_everywhere():
    url = "postgresql://alice:pa:ss@word@db.example:5432/optuna?sslmode=require"
    assert "pa:ss" not in redact(url)
    assert redact("postgresql://alice:hunter2@h/db") == "postgresql://alice:***@h/db"
    assert redact("postgresql://h/db?password=hunter2&x=1") == "postgresql://h/db?password=***&x=1"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert redact("see postgresql://bob:x@h/db now") == "see postgresql://bob:***@h/db now"


@pytest.mark.parametrize("url", [
    "postgresql://alice:se/cret@host/db",
    "postgresql+psycopg://alice:a/b/c@db.example:5432/optuna?sslmode=require",
    "mysql://bob:x%40y@h/db",
    "postgresql://carol:@h/db",
])
def test_redact_hides_the_password_sqlalchemy_would_send(url):
    from sqlalchemy.engine import make_url

    secret = make_url(url).password
    shown = redact(url)
    assert shown == make_url(url).render_as_string(hide_password=True) or (
        secret and secret not in shown and "***" in shown)
    if secret:
        assert secret not in shown and f"error at {shown} now" == redact(f"error at {url} now")
    assert make_url(shown).host == make_url(url).host


def test_the_storage_password_can_come_from_the_environment(monkeypatch):
    from segdecay.studies.tune.storage import with_password

    monkeypatch.setenv("SEGDECAY_STORAGE_PASSWORD", "s3/cret")
    assert with_password("postgresql://alice@h/db") == "postgresql://alice:s3%2Fcret@h/db"
    assert with_password("postgresql://alice:given@h/db") == "postgresql://alice:given@h/db"
    assert with_password("journal:/tmp/x.journal") == "journal:/tmp/x.journal"
    monkeypatch.delenv("SEGDECAY_STORAGE_PASSWORD")
    assert with_password("postgresql://alice@h/db") == "postgresql://alice@h/db"


def test_storage_defaults(tmp_path):
    assert resolve_storage_url(None, tmp_path, 1).startswith("sqlite:///")
    assert resolve_storage_url(None, tmp_path, 2) == f"journal:{tmp_path / 'study.journal'}"
    with pytest.raises(UserError, match="SQLite"):
        resolve_storage_url("sqlite:////x.db", tmp_path, 2)
    with pytest.raises(UserError, match="--storage"):
        resolve_storage_url("nonsense", tmp_path, 1)


# ------------------------------------------------------------------ whole studies


def _independent_choice(payload: dict) -> dict:
    """lambda.min and both lambda.1se recomputed from tune.json's fold scores in exact
    rational arithmetic (not segdecay's selection code), over the complete, non-duplicate
    trials with every fit (a single lr and decay mode).

    Squares avoid the square roots: a mean is within one SE of the best iff (best - mean)^2
    <= SE^2 = s^2/n; a paired mean difference d is within iff d >= 0 or d^2 <= (1/J +
    1/(k-1)) s_d^2 (Nadeau-Bengio over J = folds x repeats differences). Also the corrected
    paired SEs, as floats, from numpy.
    """
    k, fits = payload["folds"], payload["folds"] * payload["repeats"]
    scores = {t["weight_decay"]: [Fraction(v) for v in t["fold_scores"]]
              for t in payload["trials"]
              if t["state"] == "COMPLETE" and t["duplicate_of"] is None
              and len(t["fold_scores"]) == fits}
    assert scores, payload["trials"]
    mean = {lam: sum(s) / len(s) for lam, s in scores.items()}
    top = max(mean.values())
    lam_min = min(lam for lam in scores if mean[lam] == top)
    best = scores[lam_min]
    se2 = sum((v - top) ** 2 for v in best) / ((fits - 1) * fits)
    unpaired = max(lam for lam in scores if (top - mean[lam]) ** 2 <= se2)
    paired, paired_se = [], {}
    for lam, s in scores.items():
        diffs = [a - b for a, b in zip(s, best, strict=True)]
        d = sum(diffs) / fits
        var = sum((x - d) ** 2 for x in diffs) / (fits - 1)
        if d >= 0 or d * d <= (Fraction(1, fits) + Fraction(1, k - 1)) * var:
            paired.append(lam)
        sd = np.std(np.array(diffs, dtype=float), ddof=1)
        paired_se[lam] = math.sqrt(1 / fits + 1 / (k - 1)) * sd
    return {"lambda_min": lam_min, "lambda_1se": max(paired), "lambda_1se_unpaired": unpaired,
            "within_paired": sorted(paired), "paired_se": paired_se}


def _assert_choice_is_recomputed(payload: dict) -> dict:
    """tune.json's lambda.min, lambda.1se (paired, unpaired) and paired SEs are the
    independent recomputation's."""
    expected = _independent_choice(payload)
    for key in ("lambda_min", "lambda_1se", "lambda_1se_unpaired"):
        assert payload[key] == expected[key], (key, payload["trials"])
    assert payload["selection"]["within_paired"] == expected["within_paired"]
    stored = {p["lam"]: p["se"] for p in payload["selection"]["paired"]}
    assert stored == pytest.approx(expected["paired_se"], abs=1e-12)
    return expected


def test_the_independent_recomputation_matches_hand_made_folds():
    """The helper itself on HARD_FOLD (worked by hand above): paired 1e-3, unpaired 1e-2."""
    trials = [{"weight_decay": lam, "state": "COMPLETE", "duplicate_of": None,
               "fold_scores": s} for lam, s in HARD_FOLD.items()]
    got = _independent_choice({"folds": 3, "repeats": 1, "trials": trials})
    assert (got["lambda_min"], got["lambda_1se"], got["lambda_1se_unpaired"]) == (
        0.0, 1e-3, 1e-2)
    assert got["paired_se"][1e-3] == pytest.approx(math.sqrt(7 / 36000))


def _tune_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segdecay", "tune", "--data", TINY, "--out", str(out),
            "--grid", "0,0.1,1", "--folds", "2", "--epochs", "2", "--batch-size", "4",
            "--pruner", "none", "--quiet", "--no-rule-point", *extra]


def _completed_per_lambda(tune_json: Path) -> dict[float, int]:
    counts: dict[float, int] = {}
    for t in json.loads(tune_json.read_text())["trials"]:
        if t["state"] == "COMPLETE":
            counts[t["weight_decay"]] = counts.get(t["weight_decay"], 0) + 1
    return counts


def _assert_refit_score_is_its_weights(run: Path, refit: dict) -> None:
    """The refit's test mIoU is that of the weights it answers with (summary.json's
    answer_checkpoint) on the test images, with the run's own logit bias, scored by
    torchmetrics (the tune ran with --tta none, checked, so the plain forward below is what
    the run does)."""
    from torchmetrics.classification import MulticlassJaccardIndex

    from segdecay.data import load_dataset_for
    from segdecay.inference import normalized_input
    from segdecay.runs.folder import load_run

    decision = json.loads((run / "decision.json").read_text())
    assert decision["tta"] == "none"
    answer = json.loads((run / "summary.json").read_text())["answer_checkpoint"]
    config, meta, model, _ = load_run(run, answer, "cpu")
    assert config.weight_decay == refit["weight_decay"]
    test = load_dataset_for(config).test
    images, masks = torch.stack(list(test.images)), torch.stack(list(test.masks)).long()
    with torch.no_grad():
        x = normalized_input(images, None, config.input_mean, config.input_std)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(config.amp)):
            logits = model(x).float()  # in the run's precision: bf16 where it is native
    pred = (logits + torch.tensor(decision["logit_bias"]).view(1, -1, 1, 1)).argmax(1)
    k = meta["num_classes"]
    per_class = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)(pred, masks)
    valid = masks != 255
    # a class neither labelled nor predicted has no IoU (torchmetrics reports it as 0)
    present = [bool((((pred == c) | (masks == c)) & valid).any()) for c in range(k)]
    assert refit["miou"] == pytest.approx(float(per_class[present].mean()), abs=1e-6)


@pytest.mark.slow
def test_tune_writes_outputs_and_rerun_repeats_nothing(tmp_path):
    out = tmp_path / "tune"
    cmd = _tune_cmd(out, "--refit", "--pruner", "median", "--tta", "none")
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    payload = json.loads((out / "tune.json").read_text())
    _assert_choice_is_recomputed(payload)  # from the stored fold scores, independently
    assert payload["chosen"] == payload["lambda_1se"]
    refit = payload["refit"]
    assert refit["split"] == "test" and refit["weight_decay"] == payload["chosen"]
    _assert_refit_score_is_its_weights(Path(refit["run"]), refit)
    assert (out / "trials.csv").read_text().count("\n") == 1 + len(payload["trials"])
    html = (out / "report.html").read_text()
    for section in ("Cross-validated mIoU against lambda", "Train and validation mIoU",
                    "Compute saved by pruning", "optuna-dashboard"):
        assert section in html
    before = len(payload["trials"])
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    assert len(json.loads((out / "tune.json").read_text())["trials"]) == before


def _running_trial_with_progress(db: Path) -> bool:
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' "
                "AND a.key = 'epochs_run'").fetchone()
        return rows[0] > 0
    except sqlite3.Error:
        return False


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried_without_duplicates(tmp_path):
    out = tmp_path / "tune"
    cmd = _tune_cmd(out, "--heartbeat", "1")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not _running_trial_with_progress(out / "study.db"):
        assert proc.poll() is None and time.time() < deadline, "worker never got going"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period (2 x heartbeat): the trial is stale
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    study = optuna.load_study(study_name="segdecay", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.FAIL in states  # the killed one, marked by the heartbeat
    assert _completed_per_lambda(out / "tune.json") == {0.0: 1, 0.1: 1, 1.0: 1}


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(tmp_path):
    with postgres_server() as url:
        out_a, out_b = tmp_path / "a", tmp_path / "b"
        # the default race pruner, deciding from trials the other worker wrote
        common = ["--storage", url, "--study", "shared", "--no-rule-point",
                  "--grid", "0,0.01,0.1,1,3,10",
                  "--pruner", "race"]
        procs = [subprocess.Popen(_tune_cmd(out, *common), env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for out in (out_a, out_b)]
        logs = [p.communicate(timeout=400)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], logs
        storage = optuna.storages.RDBStorage(url)
        study = optuna.load_study(study_name="shared", storage=storage)
        states = optuna.trial.TrialState
        done = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED)
                and "duplicate_of" not in t.user_attrs]  # both workers drew it: one ran
        assert sorted(t.params["weight_decay"] for t in done) == [0, 0.01, 0.1, 1, 3, 10]
        assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers did trials
        for t in done:  # 2 folds: a complete trial has both, a dropped one exactly its first
            assert len(t.intermediate_values) == (2 if t.state == states.COMPLETE else 1)
            assert len(t.user_attrs["fold_scores"]) == len(t.intermediate_values)
        storage.remove_session()
        storage.engine.dispose()
    for out, log in zip((out_a, out_b), logs, strict=True):
        assert PASSWORD not in log
        for path in out.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path
        assert "***" in json.loads((out / "tune.json").read_text())["storage"]


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_as_failed_and_the_study_still_chooses(tmp_path):
    # Coupled SGD (legal at any lambda: it is the L2 gradient) with lr·lambda = 0.05 x 1e5
    # multiplies the decayed weights by about 1 - 5000 on the first step: the weight norm
    # passes 1e4 x its initial value (or turns non-finite) by the end of epoch 1 or 2.
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "segdecay", "tune", "--data", TINY, "--out", str(out),
           "--grid", "0,0.01,100000", "--folds", "2", "--epochs", "2", "--batch-size", "4",
           "--optimizer", "sgd", "--lr", "0.05", "--decay-mode", "coupled",
           "--pruner", "none", "--quiet", "--no-rule-point"]
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    payload = json.loads((out / "tune.json").read_text())
    by_lambda = {t["weight_decay"]: t for t in payload["trials"]}
    failed = by_lambda[100000.0]
    assert failed["state"] == "FAIL" and failed["fold_scores"] == []
    assert re.match(r"(train loss is \S+|weight norm is \S+|weight norm \S+) at epoch [12] "
                    r".*\(lr 0\.05, lambda 100000\)", failed["failure"]), failed["failure"]
    assert by_lambda[0.0]["state"] == by_lambda[0.01]["state"] == "COMPLETE"
    assert [p["lam"] for p in payload["selection"]["curve"]] == [0.0, 0.01]
    expected = _assert_choice_is_recomputed(payload)  # from the two remaining trials alone
    assert payload["select"] == "1se" and payload["chosen"] == expected["lambda_1se"]


def _journal_running_with_progress(path: Path) -> bool:
    if not path.exists():
        return False
    from optuna.storages.journal import JournalFileBackend

    try:
        study = optuna.load_study(study_name="segdecay", storage=optuna.storages.JournalStorage(
            JournalFileBackend(str(path))))
    except Exception:  # not written yet
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("epochs_run")
               for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_local_workers_on_a_journal_file_and_a_killed_worker_is_retried(tmp_path):
    out = tmp_path / "tune"
    journal = out / "study.journal"
    cmd = _tune_cmd(out, "--storage", f"journal:{journal}")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not _journal_running_with_progress(journal):
        assert proc.poll() is None and time.time() < deadline, "worker never got going"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # rerun with two local worker processes sharing the journal: the dead worker's trial is
    # failed (its PID is gone), re-enqueued, and every lambda completes exactly once
    subprocess.run([*cmd, "--workers", "2"], check=True, env=ENV, timeout=300)
    assert _completed_per_lambda(out / "tune.json") == {0.0: 1, 0.1: 1, 1.0: 1}
    failed = [t for t in json.loads((out / "tune.json").read_text())["trials"]
              if t["state"] == "FAIL"]
    assert [t["failure"] for t in failed] == ["worker process died"]


# ------------------------------------------------------------------ race pruner


def _study_with(trials: list[tuple[list[float], bool]]) -> optuna.Study:
    """An in-memory study whose trials reported these fit scores (complete if flagged)."""
    study = optuna.create_study(direction="maximize")
    for scores, complete in trials:
        t = study.ask()
        for i, v in enumerate(scores):
            t.report(v, i)
        if complete:
            study.tell(t, sum(scores) / len(scores))
    return study


def test_race_drops_only_outside_the_paired_band_on_hand_made_scores():
    from segdecay.studies.tune.race import RacePruner

    # complete A (best, mean .4) and B: diffs B - A = (-.02, -.01, -.01), sd = sqrt(1/30000)
    # = .0057735; band = -sd sqrt(1/3 + 1/2) = -.0052705
    a, b = [0.60, 0.40, 0.20], [0.58, 0.39, 0.19]
    sd = math.sqrt(1 / 30000)
    band = -sd * math.sqrt(1 / 3 + 1 / 2)
    race = RacePruner(folds=3, fits=3)
    study = _study_with([(a, True), (b, True), ([0.50], False), ([0.598], False), ([], False)])
    trials = study.get_trials(deepcopy=False)
    worse = race.decide(study, trials[2])  # diff -.1, bound -.1 + 1.645 sd = -.0905
    assert worse.drop and worse.incumbent == trials[0].number
    assert worse.mean_diff == pytest.approx(-0.1)
    assert worse.bound == pytest.approx(-0.1 + 1.645 * sd)
    assert worse.band == pytest.approx(band)
    close = race.decide(study, trials[3])  # diff -.002, bound +.0075: kept
    assert not close.drop and close.bound == pytest.approx(-0.002 + 1.645 * sd)
    fresh = race.decide(study, trials[4])
    assert not fresh.drop and fresh.fits_done == 0


def test_race_keeps_everything_until_two_trials_are_complete_and_after_the_last_fit():
    from segdecay.studies.tune.race import RacePruner

    race = RacePruner(folds=3, fits=3)
    study = _study_with([([0.6, 0.4, 0.2], True), ([0.1], False)])
    early = race.decide(study, study.get_trials(deepcopy=False)[1])
    assert not early.drop and "fewer than two complete trials" in early.reason
    study = _study_with([([0.6, 0.4, 0.2], True), ([0.58, 0.39, 0.19], True),
                         ([0.1, 0.1, 0.1], False)])
    last = race.decide(study, study.get_trials(deepcopy=False)[2])
    assert not last.drop and last.fits_done == 3


FOLD_LEVEL = [0.6, 0.4, 0.2]  # fold 1 easy, fold 3 hard, for every lambda
LAMBDA_LOSS = {0.0: 0.004, 1e-3: 0.0, 1e-2: 0.002, 1.0: 0.15, 3.0: 0.3}


EVAL_EVERY_SEEN: list[int] = []


def _scripted_train(config, out, *, data, log, on_epoch, checkpoints):
    """Stands in for training in the tune's objective: fold f of lambda scores its fold
    level minus its lambda's loss, with a small fixed jitter, after every epoch."""
    f = int(Path(out).name.split("f")[-1])
    EVAL_EVERY_SEEN.append(config.eval_every)
    return _scripted_fit(config, on_epoch, f, config.weight_decay, 0.0)


def _scripted_fit(config, on_epoch, f: int, lam: float, offset: float) -> dict:
    """Fold f of grid lambda ``lam``: its fold level minus the lambda's loss, a small fixed
    jitter and ``offset``, reported after every epoch; the summary train() would return."""
    jitter = 0.003 * ((f * 7 + round(1e4 * lam)) % 3 - 1)
    score = FOLD_LEVEL[f] - LAMBDA_LOSS[lam] + jitter + offset
    for epoch in range(1, config.epochs + 1):
        on_epoch({"epoch": epoch, "val_miou": score})
    return {"status": "completed", "final_val_miou": score, "final_train_miou": score + 0.1,
            "weight_norm": 1.0}


def test_trials_run_with_the_objects_before_the_study_frozen_and_leave_none_frozen(
        tmp_path, monkeypatch):
    """The collection after each trial scans only what the trials made: the objects that
    existed before them are frozen while the fits run, and the freeze is lifted when the
    search ends."""
    import gc

    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune

    frozen_during_fits = []

    def watching(config, out, **kwargs):
        frozen_during_fits.append(gc.get_freeze_count())
        return _scripted_train(config, out, **kwargs)

    monkeypatch.setattr(search, "train", watching)
    assert gc.get_freeze_count() == 0
    run_tune(TrainConfig(data=TINY, epochs=1, batch_size=4),
             TuneOptions(grid=[0.0, 1e-3], folds=2, pruner="none", rule_point=False),
             tmp_path / "t", quiet=True)
    assert len(frozen_during_fits) == 4
    assert all(count > 0 for count in frozen_during_fits)
    assert gc.get_freeze_count() == 0


def test_race_in_a_tune_records_every_decision_and_drops_only_at_whole_fold_scores(
        tmp_path, monkeypatch):
    """Every decision the pruner makes during a tune is recorded: none before a trial has a
    whole-fold score, none after its last fit; the clearly worse lambdas are dropped, whole
    fits only, and the choice is the one the full grid makes."""
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune
    from segdecay.studies.tune.race import RacePruner

    decisions = []
    real = RacePruner.decide

    def recording(self, study, trial):
        decision = real(self, study, trial)
        decisions.append(decision)
        return decision

    monkeypatch.setattr(RacePruner, "decide", recording)
    monkeypatch.setattr(search, "train", _scripted_train)
    base = TrainConfig(data=TINY, epochs=4, batch_size=4)
    grid = sorted(LAMBDA_LOSS)
    EVAL_EVERY_SEEN.clear()
    race = run_tune(base, TuneOptions(grid=grid, folds=3, seed=0, pruner="race", rule_point=False),
                    tmp_path / "race", quiet=True)
    # the race reads each fit's final score only: its fits validate once, at the end
    assert EVAL_EVERY_SEEN and set(EVAL_EVERY_SEEN) == {base.epochs}
    EVAL_EVERY_SEEN.clear()
    full = run_tune(base, TuneOptions(grid=grid, folds=3, seed=0, pruner="none", rule_point=False),
                    tmp_path / "full", quiet=True)
    assert set(EVAL_EVERY_SEEN) == {1}  # per-epoch curves, as the pruning replay needs
    assert decisions and all(1 <= d.fits_done < 3 for d in decisions)
    pruned = [t for t in race["trials"] if t["pruned"]]
    assert {t["weight_decay"] for t in pruned} <= {1.0, 3.0} and pruned, race["trials"]
    for t in race["trials"]:
        assert t["epochs_run"] == base.epochs * max(1, t["folds_done"])  # whole fits only
    for t in pruned:
        assert [d.drop for d in decisions if d.trial == t["number"]][-1]
    assert race["chosen"] == full["chosen"]
    assert race["compute"]["epochs_run"] < full["compute"]["epochs_run"]


# ------------------------------------------------------------------ screen

SCREEN_SEEN: list[tuple[int, float]] = []


def _scripted_budget_train(config, out, *, data, log, on_epoch, checkpoints):
    """As _scripted_train, but a lambda's loss follows lambda x epochs / 8, the strength of
    decay as a fraction of an 8-epoch run: a 2-epoch run at 4 lambda scores as the 8-epoch
    run at lambda, less 0.1 for its shorter training."""
    SCREEN_SEEN.append((config.epochs, config.weight_decay))
    f = int(Path(out).name.split("f")[-1])
    key = min(LAMBDA_LOSS, key=lambda lam: abs(lam - config.weight_decay * config.epochs / 8))
    return _scripted_fit(config, on_epoch, f, key, -0.1 if config.epochs < 8 else 0.0)


def test_screen_trains_short_runs_at_moved_lambdas_then_the_selection_at_full_budget(
        tmp_path, monkeypatch):
    """Every grid point is screened on every fold at a quarter of the epochs with lambda x 4
    (tau the same fraction of the run); lambda.min and the paired choice go on to the full
    budget (with the next larger lambda when they coincide); the choice is the full grid's,
    at (5 x 3 x 2 + 2 x 3 x 8) / (5 x 3 x 8) = 78/120 of its fit-epochs; a rerun resumes
    both studies and trains nothing."""
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune

    monkeypatch.setattr(search, "train", _scripted_budget_train)
    base = TrainConfig(data=TINY, epochs=8, batch_size=4)
    grid = sorted(LAMBDA_LOSS)
    full = run_tune(base, TuneOptions(grid=grid, folds=3, seed=0, pruner="none", rule_point=False),
                    tmp_path / "full", quiet=True)
    SCREEN_SEEN.clear()
    options = TuneOptions(grid=grid, folds=3, seed=0, pruner="screen", screen_fraction=0.25,
                          rule_point=False)
    screened = run_tune(base, options, tmp_path / "screen", quiet=True)
    short = [(e, lam) for e, lam in SCREEN_SEEN if e == 2]
    assert len(short) == 15
    assert sorted(lam for _, lam in short) == pytest.approx([4 * g for g in grid for _ in "abc"])
    # both rules name 1e-3 on the screen as on the full grid: the next larger comes along
    assert full["lambda_min"] == full["chosen"] == 1e-3
    promoted = {1e-3, 1e-2}
    assert {lam for e, lam in SCREEN_SEEN if e == 8} == promoted
    assert screened["screen"]["promoted"]["weight_decay"] == sorted(promoted)
    assert {t["weight_decay"] for t in screened["trials"]} == promoted
    assert screened["pruner"] == "screen"
    assert screened["chosen"] == full["chosen"]
    assert screened["screen"]["lambda_scale"] == 4.0 and screened["screen"]["epochs"] == 2
    assert screened["compute"]["epochs_run"] == 5 * 3 * 2 + 2 * 3 * 8
    assert screened["compute"]["fraction"] == pytest.approx(78 / 120)
    assert full["compute"]["epochs_full_grid"] == screened["compute"]["epochs_full_grid"]
    SCREEN_SEEN.clear()
    again = run_tune(base, options, tmp_path / "screen", quiet=True)
    assert SCREEN_SEEN == [] and again["chosen"] == screened["chosen"]


def _trial_row(**given) -> TrialRow:
    """A complete trial of the given fields, the others as a plain CE fit leaves them."""
    scores = given.get("fold_scores", [])
    row = {"number": 0, "state": "COMPLETE", "weight_decay": 0.0, "tau_epochs": None,
           "lr": 0.05, "decay_mode": None, "loss": "ce", "class_weights": "none",
           "cv_mean": sum(scores) / len(scores) if scores else math.nan, "cv_se": 0.0,
           "folds_done": len(scores), "fold_scores": scores, "train_miou": None,
           "weight_norm": None, "epochs_run": 0, "pruned": False, "duplicate_of": None,
           "skipped": None, "failure": None}
    return TrialRow(**{**row, **given})


def test_screen_promotes_a_neighbour_when_min_and_choice_coincide():
    """One lambda named by both rules brings the next larger one along (the next smaller at
    the grid's strong end; for a tau grid, stronger is the next shorter tau)."""
    from segdecay.studies.tune import TuneOptions
    from segdecay.studies.tune.screen import promoted

    def rows(scores):
        return [_trial_row(weight_decay=lam, tau_epochs=1 / lam if lam else None,
                           fold_scores=s, lr=0.1, epochs_run=6) for lam, s in scores.items()]

    # 1e-2 is best on every fold by 0.1: both rules name it alone
    clear = {1e-3: [0.5, 0.4, 0.3], 1e-2: [0.6, 0.5, 0.4], 1e-1: [0.5, 0.4, 0.3]}
    lam_grid = TuneOptions(grid=sorted(clear), folds=3)
    assert promoted(rows(clear), lam_grid)["values"] == [1e-2, 1e-1]
    edge = {1e-3: [0.5, 0.4, 0.3], 1e-2: [0.5, 0.4, 0.3], 1e-1: [0.6, 0.5, 0.4]}
    assert promoted(rows(edge), lam_grid)["values"] == [1e-2, 1e-1]
    tau_grid = TuneOptions(tau_grid=[10.0, 100.0, 1000.0], folds=3)
    assert promoted(rows(clear), tau_grid)["values"] == [10.0, 100.0]


def test_the_default_pruner_is_the_screen_on_grids_it_can_shorten_else_the_race():
    from segdecay.studies.tune import TuneOptions
    from segdecay.studies.tune.options import resolve_pruner

    def resolved(epochs=10, steps=None, **kw):
        return resolve_pruner(TuneOptions(**kw), epochs, steps).pruner

    assert resolved(grid=[0.0, 1e-3, 1e-2]) == "screen"
    assert resolved(tau_grid=[3.0, 10.0, 30.0]) == "screen"
    assert resolved(grid=[0.0, 1e-3]) == "race"  # two values: nothing to screen out
    assert resolved(search="tpe", range=(1e-5, 1e-1), trials=8) == "race"
    assert resolved(epochs=1, grid=[0.0, 1e-3, 1e-2]) == "race"  # 1 epoch short too
    assert resolved(epochs=2, grid=[0.0, 1e-3, 1e-2]) == "screen"  # 1 epoch of 2
    assert resolved(steps=600, grid=[0.0, 1e-3, 1e-2]) == "screen"
    assert resolved(grid=[0.0, 1e-3, 1e-2], pruner="median") == "median"  # given: kept


def test_screen_refuses_searches_without_a_grid_and_fractions_outside_0_1():
    from segdecay.studies.tune import TuneOptions
    from segdecay.studies.tune.options import validate

    with pytest.raises(UserError, match="--pruner screen .* not --search tpe"):
        validate(TuneOptions(search="tpe", range=(1e-5, 1e-1), trials=4, pruner="screen"))
    with pytest.raises(UserError, match="--screen-fraction 1.5"):
        validate(TuneOptions(grid=[0.0, 1e-3], pruner="screen", screen_fraction=1.5))


def test_wilcoxon_pruner_refuses_fold_counts_where_it_cannot_prune():
    from segdecay.studies.tune import TuneOptions
    from segdecay.studies.tune.options import validate

    with pytest.raises(UserError, match=r"--pruner wilcoxon with 3 folds x 1 repeat.*at least "
                                         r"5 fits"):
        validate(TuneOptions(grid=[0.0, 1e-3], folds=3, pruner="wilcoxon"))
    validate(TuneOptions(grid=[0.0, 1e-3], folds=5, pruner="wilcoxon"))


def test_tau_grid_means_one_decay_strength_for_sgd_and_adamw(tmp_path, monkeypatch):
    """--tau-grid 5: each optimizer trains with its own lambda for tau = 5 epochs of the fits.
    TINY's 12 training images in 3 folds leave 8 per fit: batch 4, 2 steps per epoch."""
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune

    seen = {}

    def recording_train(config, out, **kwargs):
        seen[(config.optimizer, out.name)] = config.weight_decay
        return _scripted_train(replace(config, weight_decay=0.0), out, **kwargs)

    monkeypatch.setattr(search, "train", recording_train)
    for optimizer, lr, lam in (("sgd", 0.05, 1 / (5 * 2 * 0.05 / (1 - 0.9))),  # 0.2
                               ("adamw", 1e-3, 1 / (5 * 2 * 1e-3))):  # 100
        base = TrainConfig(data=TINY, epochs=2, batch_size=4, optimizer=optimizer, lr=lr)
        options = TuneOptions(tau_grid=[5.0], folds=3, pruner="none", rule_point=False)
        payload = run_tune(base, options, tmp_path / optimizer, quiet=True)
        assert payload["steps_per_epoch_of_fits"] == 2
        used = [v for (o, _), v in seen.items() if o == optimizer]
        assert len(used) == 3 and used == pytest.approx([lam] * 3)
        (trial,) = payload["trials"]
        assert trial["weight_decay"] == pytest.approx(lam) and trial["tau_epochs"] == 5.0
        assert payload["chosen"] == pytest.approx(lam)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("folds, fold_steps, tau_fold", [
    # 3 folds of TINY's 12 training images: fits on 8, batch 4 -> 2 steps; ratio 3/2 = K/(K-1)
    (3, 2, 100.0),
    # 2 folds: fits on 6 -> 1 step (the last batch is dropped), so the ratio is 3, not 2
    (2, 1, 200.0),
])
def test_refit_records_its_steps_per_epoch_and_shorter_decay_timescale(
        tmp_path, monkeypatch, folds, fold_steps, tau_fold):
    """The refit trains on all 12 images, batch 4: 3 steps per epoch. Coupled SGD, lr 0.05,
    momentum 0.9: lr_eff = 0.5, so lambda 0.01 gives tau = 1/(0.5 x 0.01 x steps) epochs:
    100 at 2 steps, 200 at 1, 66.67 at 3. The folds are scripted; the refit trains."""
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune
    from segdecay.studies.tune.refit import REFIT_NOTE

    monkeypatch.setattr(search, "train", _scripted_train)
    base = TrainConfig(data=TINY, epochs=1, batch_size=4, device="cpu", optimizer="sgd",
                       encoder=SMALL_ENCODER)
    options = TuneOptions(grid=[1e-2], folds=folds, pruner="none", refit=True,
                          rule_point=False)
    payload = run_tune(base, options, tmp_path / "tune", quiet=True)
    assert payload["chosen"] == 1e-2 and payload["steps_per_epoch_of_fits"] == fold_steps
    timescale = payload["refit"]["timescale"]
    assert timescale["steps_per_epoch_fold_fit"] == fold_steps
    assert timescale["steps_per_epoch_refit"] == 3
    assert timescale["steps_ratio"] == pytest.approx(3 / fold_steps)
    assert timescale["tau_epochs_fold_fit"] == pytest.approx(tau_fold)
    assert timescale["tau_epochs_refit"] == pytest.approx(200 / 3)
    assert timescale["note"] == REFIT_NOTE
    on_disk = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert on_disk["refit"]["timescale"] == timescale
    doc = Path(__file__).parents[1] / "docs" / "weight-decay-faq.md"
    assert REFIT_NOTE in " ".join(doc.read_text().split())  # the same sentence in the docs


def test_a_refit_with_decision_adjusted_is_scored_as_its_run_decides(tmp_path, monkeypatch):
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig
    from segdecay.runs import evaluate_run
    from segdecay.studies.tune import TuneOptions, run_tune

    monkeypatch.setattr(search, "train", _scripted_train)
    base = TrainConfig(data=TINY, epochs=1, batch_size=4, device="cpu", decision="adjusted",
                       tta="none", encoder=SMALL_ENCODER)
    payload = run_tune(base, TuneOptions(grid=[1e-2], folds=2, pruner="none", refit=True,
                                                   rule_point=False),
                       tmp_path / "tune", quiet=True)
    refit = payload["refit"]
    decision = json.loads((Path(refit["run"]) / "decision.json").read_text())
    assert refit["decision"] == f"adjusted, t = {decision['tau']:g} (chosen on val)"
    again = evaluate_run(refit["run"], split=refit["split"], checkpoint="last",
                         out=tmp_path / "e.json", quiet=True)
    assert refit["miou"] == again["miou"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("budget, rule, refit_steps, lam", [
    # fold fits: 2 epochs x 2 steps = 4 steps; the refit runs 12: lambda x 4/12
    ({"refit_steps": 12}, "transfer", 12, 1e-2 * 4 / 12),
    # 6 epochs on all 12 images, batch 4: 3 steps each, 18 steps: lambda x 4/18
    ({"refit_epochs": 6}, "transfer", 18, 1e-2 * 4 / 18),
    # --refit-lambda same keeps the CV's lambda at the longer budget
    ({"refit_steps": 12}, "same", 12, 1e-2),
    # larger inputs, the fits' 2 epochs on all 12 images: 6 steps, lambda x 4/6
    ({"refit_size": [64, 64]}, "transfer", 6, 1e-2 * 4 / 6),
])
def test_tune_short_train_long_transfers_lambda_by_tau_fraction(tmp_path, monkeypatch, budget,
                                                                rule, refit_steps, lam):
    """Coupled SGD, lr 0.05, momentum 0.9: lr_eff 0.5. In the 4-step fold fits lambda 0.01
    has tau = 1/(0.5 x 0.01) = 200 steps, 50 runs long; the transferred lambda keeps 50."""
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig, load_config
    from segdecay.studies.tune import TuneOptions, run_tune

    monkeypatch.setattr(search, "train", _scripted_train)
    base = TrainConfig(data=TINY, epochs=2, batch_size=4, device="cpu", optimizer="sgd",
                       encoder=SMALL_ENCODER)
    options = TuneOptions(grid=[1e-2], folds=3, pruner="none", refit=True, refit_lambda=rule,
                          rule_point=False,
                          **budget)
    payload = run_tune(base, options, tmp_path / "tune", quiet=True)
    refit = payload["refit"]
    assert refit["lambda_cv"] == 1e-2 and refit["weight_decay"] == pytest.approx(lam)
    transfer = refit["transfer"]
    assert transfer["fit_steps"] == 4 and transfer["refit_steps"] == refit_steps
    assert transfer["lambda_transferred"] == pytest.approx(1e-2 * 4 / refit_steps)
    tau_steps = 1 / (0.5 * lam)
    assert transfer["tau_fraction_of_run"] == pytest.approx(tau_steps / refit_steps)
    if rule == "transfer":
        assert transfer["tau_fraction_of_run"] == pytest.approx(200 / 4)
    written = load_config(tmp_path / "tune" / "refit" / "config.yaml")
    assert written.weight_decay == pytest.approx(lam)
    decay = json.loads((tmp_path / "tune" / "refit" / "decay.json").read_text())
    assert decay["total_steps"] == refit_steps
    assert written.size == budget.get("refit_size", written.size)
    assert written.eval_size == (budget["refit_size"] if "refit_size" in budget else [])


def test_refit_budget_options_are_checked():
    from segdecay.studies.tune import TuneOptions
    from segdecay.studies.tune.options import validate

    with pytest.raises(UserError, match="give one budget"):
        validate(TuneOptions(grid=[0.0], refit_steps=10, refit_epochs=2))
    with pytest.raises(UserError, match="--refit-epochs 0: must be at least 1"):
        validate(TuneOptions(grid=[0.0], refit_epochs=0))
    with pytest.raises(UserError, match="--refit-lambda 'half'"):
        validate(TuneOptions(grid=[0.0], refit_lambda="half"))


@pytest.mark.usefixtures("one_torch_thread")
def test_compute_of_step_budget_fits_counts_the_epochs_they_run(tmp_path):
    """--steps 3 on 2 folds of TINY's 12 images: fits on 6, batch 4 -> 1 step per epoch, so
    each fit runs 3 epochs (not the unused --epochs 30): 2 lambdas x 2 fits x 3 = 12."""
    from segdecay.config import TrainConfig
    from segdecay.studies.tune import TuneOptions, run_tune

    base = TrainConfig(data=TINY, steps=3, batch_size=4, device="cpu",
                       encoder=SMALL_ENCODER)
    payload = run_tune(base, TuneOptions(grid=[0.0, 0.1], folds=2, pruner="none", rule_point=False),
                       tmp_path / "tune", quiet=True)
    assert payload["epochs_per_fit"] == 3 and payload["fit_epochs_per_trial"] == 6
    assert payload["compute"]["epochs_run"] == 12
    assert payload["compute"]["epochs_full_grid"] == 12 and payload["compute"]["fraction"] == 1


@pytest.mark.slow
def test_a_refit_of_another_recipe_goes_beside_the_kept_one(tmp_path, monkeypatch):
    """A rerun with the same recipe reuses the kept refit (trains nothing); one at another
    budget trains into refit-2 and leaves the first untouched; both are reused after."""
    import segdecay.studies.tune.refit as refit_module
    import segdecay.studies.tune.search as search
    from segdecay.config import TrainConfig, load_config
    from segdecay.studies.tune import TuneOptions, run_tune

    monkeypatch.setattr(search, "train", _scripted_train)
    trained = []

    def counted(config, out, **kwargs):
        trained.append(Path(out).name)
        return real_train(config, out, **kwargs)

    real_train = refit_module.train
    monkeypatch.setattr(refit_module, "train", counted)
    base = TrainConfig(data=TINY, epochs=2, batch_size=4, device="cpu")
    short = TuneOptions(grid=[1e-2], folds=3, pruner="none", refit=True, rule_point=False)
    longer = replace(short, refit_epochs=3)
    out = tmp_path / "tune"
    first = run_tune(base, short, out, quiet=True)["refit"]
    kept = (out / "refit" / "summary.json").read_text()
    run_tune(base, short, out, quiet=True)
    assert trained == ["refit"]
    second = run_tune(base, longer, out, quiet=True)["refit"]
    assert trained == ["refit", "refit-2"] and second["run"].endswith("refit-2")
    assert load_config(out / "refit-2" / "config.yaml").epochs == 3
    assert (out / "refit" / "summary.json").read_text() == kept
    assert run_tune(base, short, out, quiet=True)["refit"]["miou"] == first["miou"]
    run_tune(base, longer, out, quiet=True)
    assert trained == ["refit", "refit-2"]


# ---------------------------------------------------------------- the default's rule as a point

def _rule_row(number: int, lam: float, scores: list[float]) -> TrialRow:
    return _trial_row(number=number, weight_decay=lam, lr=1e-3, decay_mode="decoupled",
                      fold_scores=scores)


def test_the_rule_point_is_the_fits_whole_run_in_tau() -> None:
    base = TrainConfig(optimizer="adamw", lr=1e-3, epochs=10)
    # 10 epochs of 4 steps: tau = max(40, 4, 10) = 40 steps = 10 epochs; 1/(1e-3 · 40)
    assert rule_point(base, TuneOptions(grid=[0.1]), 4) == pytest.approx(25.0)
    assert rule_point(base, TuneOptions(tau_grid=[1.0]), 4) == pytest.approx(10.0)
    grid = with_rule_point(TuneOptions(grid=[0.1, 100.0]), 50.0).grid
    assert grid == [0.1, 50.0, 100.0]
    assert with_rule_point(TuneOptions(tau_grid=[2.0, 5.0]), 5.0).tau_grid == [2.0, 5.0]


def test_rule_check_pairs_the_best_searched_lambda_with_the_rule_by_hand() -> None:
    choice = {"lr": 1e-3, "decay_mode": "decoupled", "loss": "ce", "class_weights": "none"}
    compute = {"epochs_run": 90}
    rule = _rule_row(0, 50.0, [0.50, 0.52, 0.54])
    better = _rule_row(1, 5.0, [0.53, 0.55, 0.55])  # differences 0.03, 0.03, 0.01
    worse = _rule_row(2, 500.0, [0.40, 0.41, 0.42])
    result = rule_check(choice, [rule, better, worse], 50.0, "weight_decay", 3, compute, 10)
    # mean 0.07/3; s^2 = 1/7500; Nadeau-Bengio SE sqrt((1/3 + 1/2)/7500) = sqrt(1/9000)
    assert result["difference"] == pytest.approx(0.07 / 3)
    assert result["se"] == pytest.approx(math.sqrt(1 / 9000))
    assert result["beat"] and result["best_searched"] == 5.0
    assert "beat the rule's lambda 50 beyond the paired band: +0.0233" in result["sentence"]
    assert "90 fit-epochs, 9.0 fits of the study's length" in result["sentence"]
    close = _rule_row(1, 5.0, [0.52, 0.51, 0.55])  # 0.02, -0.01, 0.01: mean 0.0067
    result = rule_check(choice, [rule, close], 50.0, "weight_decay", 3, compute, 10)
    assert not result["beat"]
    assert result["se"] == pytest.approx(math.sqrt(5 / 6 * 7 / 30000))
    assert "did not beat the rule's lambda 50" in result["sentence"]


RULE_LOSS = {0.0: 0.004, 1e-3: 0.0, 1e-2: 0.002}


def _scripted_rule_train(config, out, *, data, log, on_epoch, checkpoints):
    """As _scripted_train over RULE_LOSS, with the rule's lambda (62.5 on TINY, below) at
    the loss RULE_LOSS_AT_RULE["loss"] and any lambda a random search draws at 0.01."""
    f = int(Path(out).name.split("f")[-1])
    lam = config.weight_decay
    loss = RULE_LOSS_AT_RULE["loss"] if lam == 62.5 else RULE_LOSS.get(lam, 0.01)
    score = FOLD_LEVEL[f] - loss
    for epoch in range(1, config.epochs + 1):
        on_epoch({"epoch": epoch, "val_miou": score})
    return {"status": "completed", "final_val_miou": score, "final_train_miou": score + 0.1,
            "weight_norm": 1.0}


RULE_LOSS_AT_RULE = {"loss": 0.0}


@pytest.mark.parametrize("rule_loss, beat", [(0.05, True), (-0.01, False)])
def test_a_grid_tune_scores_the_rules_lambda_and_says_whether_the_search_beat_it(
        tmp_path, monkeypatch, rule_loss, beat):
    """TINY's 3-fold fits train on 8 images in batches of 4: 2 steps an epoch, 16 steps in 8
    epochs; the rule's tau is max(16, 2, 10) = 16 steps, so AdamW's lambda is
    1/(1e-3 x 16) = 62.5, a grid point of its own beside the searched three. Every fold's
    difference from the best searched lambda (1e-3) is exactly rule_loss."""
    import segdecay.studies.tune.search as search
    from segdecay.studies.tune import run_tune

    monkeypatch.setattr(search, "train", _scripted_rule_train)
    monkeypatch.setitem(RULE_LOSS_AT_RULE, "loss", rule_loss)
    base = TrainConfig(data=TINY, epochs=8, batch_size=4)
    payload = run_tune(base, TuneOptions(grid=sorted(RULE_LOSS), folds=3, pruner="none"),
                       tmp_path / "tune", quiet=True)
    lams = sorted(t["weight_decay"] for t in payload["trials"])
    assert lams == [0.0, 1e-3, 1e-2, 62.5]
    check = payload["rule_check"]
    assert check["value"] == 62.5 and check["beat"] is beat
    if beat:
        assert check["best_searched"] == 1e-3
        assert check["difference"] == pytest.approx(0.05) and check["se"] == pytest.approx(0)
        assert ("the best searched lambda, 0.001, beat the rule's lambda 62.5 beyond the "
                "paired band: +0.0500 mIoU") in check["sentence"]
        assert "96 fit-epochs, 12.0 fits" in check["sentence"]  # 4 points x 3 folds x 8
    else:
        assert check["difference"] == pytest.approx(-0.01)
        assert "did not beat the rule's lambda 62.5" in check["sentence"]
    report = (tmp_path / "tune" / "report.html").read_text()
    assert "Check on the default rule: the best searched lambda, 0.001" in report


def test_a_random_search_runs_the_rules_lambda_first_and_once(tmp_path, monkeypatch):
    """The rule's trial is enqueued before the search's own two (outside the searched range,
    as a check should be), and a rerun of the finished study adds none."""
    import segdecay.studies.tune.search as search
    from segdecay.studies.tune import run_tune

    monkeypatch.setattr(search, "train", _scripted_rule_train)
    base = TrainConfig(data=TINY, epochs=8, batch_size=4)
    options = TuneOptions(search="random", range=(1e-4, 1e-2), trials=2, folds=3,
                          pruner="none")
    payload = run_tune(base, options, tmp_path / "tune", quiet=True)
    numbers = {t["number"]: t["weight_decay"] for t in payload["trials"]}
    assert len(numbers) == 3 and numbers[0] == 62.5
    assert all(1e-4 <= numbers[n] <= 1e-2 for n in (1, 2))
    again = run_tune(base, options, tmp_path / "tune", quiet=True)
    assert len(again["trials"]) == 3 and "rule_check" in again


def test_the_screen_always_promotes_the_rules_point_to_the_full_budget():
    """lambda.min 1e-3 and the paired choice 1e-2 go on as before; the rule's 100, far below
    them on the screen, goes on too, so the check is made at the full budget."""
    from segdecay.studies.tune.screen import promoted

    rows = [_rule_row(0, 0.0, [0.50, 0.52, 0.54]), _rule_row(1, 1e-3, [0.56, 0.57, 0.58]),
            _rule_row(2, 1e-2, [0.555, 0.565, 0.575]), _rule_row(3, 100.0, [0.3, 0.3, 0.3])]
    options = TuneOptions(grid=[0.0, 1e-3, 1e-2, 100.0], folds=3)
    assert promoted(rows, options)["values"] == [1e-3, 1e-2]
    assert promoted(rows, options, 100.0)["values"] == [1e-3, 1e-2, 100.0]


def test_the_rules_trial_takes_the_rules_lr_only_where_it_is_a_searched_choice():
    from segdecay.studies.tune.rule import rule_params

    base = TrainConfig(lr=1e-3)
    assert rule_params(base, TuneOptions(search="tpe", lr_grid=[1e-3, 1e-2]), 5.0) == {
        "weight_decay": 5.0, "lr": 1e-3}
    assert rule_params(base, TuneOptions(search="tpe", lr_grid=[1e-2, 3e-2]), 5.0) == {
        "weight_decay": 5.0}
    assert rule_params(base, TuneOptions(tau_grid=[1.0], modes=["coupled", "decoupled"]),
                       2.0) == {"tau_epochs": 2.0, "decay_mode": "coupled"}
