"""segdecay compare's statistics: the unit of the per-image test (groups of correlated images),
unscorable images, zero-variance differences and Holm's family size.

References are scipy's own tests and hand-computed values, never the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from scipy import stats

from segdecay.data.base import IGNORE_INDEX, SegSplit
from segdecay.studies.compare import CompareOptions, Variant
from segdecay.studies.compare import summary as compare_summary
from segdecay.studies.compare.per_image import image_confusions, image_miou
from segdecay.studies.compare.report import units_text
from segdecay.studies.compare.statistics import holm, paired_by_group, paired_difference
from segdecay.studies.compare.summary import aggregate, image_groups

NAN = math.nan

# ---------------------------------------------------------------- Holm


def test_holm_counts_a_nan_test_in_the_family_by_hand() -> None:
    # m = 4 (the NaN was attempted): sorted 0.01, 0.02, 0.04 -> 4*0.01, 3*0.02, 2*0.04
    got = holm([0.01, NAN, 0.04, 0.02])
    assert got[0] == pytest.approx(0.04) and got[2] == pytest.approx(0.08)
    assert got[3] == pytest.approx(0.06) and math.isnan(got[1])
    # step-down monotone: 3*0.01 = 0.03, then max(0.03, 2*0.011) = 0.03, the NaN counts last
    got = holm([0.011, 0.01, NAN])
    assert got[:2] == pytest.approx([0.03, 0.03]) and math.isnan(got[2])
    assert all(math.isnan(v) for v in holm([NAN, NAN])) and holm([]) == []


# ---------------------------------------------------------------- paired difference


@pytest.mark.parametrize("a, b", [
    ([0.3, 0.5], [0.2, 0.45]),  # n = 2
    ([0.61, 0.58, 0.64], [0.57, 0.58, 0.60]),  # one zero difference
    ([0.1, 0.4, 0.35, 0.8], [0.2, 0.3, 0.3, 0.5]),  # mixed signs
])
def test_paired_difference_equals_scipy_on_small_inputs(a: list[float], b: list[float]) -> None:
    got = paired_difference(a, b, confidence=0.9)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert got["n"] == len(a)
    assert got["t"] == pytest.approx(ref.statistic) and got["p_t"] == pytest.approx(ref.pvalue)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert got["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy's, on the reference
def test_a_constant_nonzero_difference_has_t_inf_and_p_zero() -> None:
    """Every pair differs by exactly 0.5: t = +inf, p = 0 (as scipy), CI of zero width."""
    a, b = [1.5, 2.5, 3.5], [1.0, 2.0, 3.0]
    got = paired_difference(a, b)
    assert got["mean_diff"] == 0.5 and got["sd"] == 0
    assert got["t"] == math.inf and got["p_t"] == 0.0
    ref = stats.ttest_rel(a, b)
    assert (ref.statistic, ref.pvalue) == (math.inf, 0.0)  # scipy agrees on this case
    assert (got["ci_low"], got["ci_high"]) == (0.5, 0.5)
    assert got["p_wilcoxon"] == pytest.approx(2 / 2 ** 3)  # exact: all 3 signs alike
    down = paired_difference(b, a)
    assert down["t"] == -math.inf and down["p_t"] == 0.0
    assert holm([got["p_t"], 0.2]) == pytest.approx([0.0, 0.2])  # a real test in the family


def test_an_all_zero_difference_has_p_one() -> None:
    got = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert (got["t"], got["p_t"], got["p_wilcoxon"]) == (0.0, 1.0, 1.0)
    assert (got["ci_low"], got["ci_high"]) == (0.0, 0.0)


# ---------------------------------------------------------------- per-image scores


def test_an_all_ignore_image_has_no_score() -> None:
    """Image 1 has no labelled pixel: NaN, not 0 (which would read as a total miss)."""
    target = torch.tensor([[[0, 1], [1, 1]], [[IGNORE_INDEX] * 2] * 2])
    preds = torch.tensor([[[0, 1], [1, 0]], [[1, 0], [0, 1]]])
    got = image_miou(image_confusions(preds, target, 2)).tolist()
    # image 0: class 0 tp 1 union 2, class 1 tp 2 union 3 -> (1/2 + 2/3) / 2 = 7/12
    assert got[0] == pytest.approx(7 / 12) and math.isnan(got[1])


def test_paired_by_group_averages_within_groups_and_drops_unscored_images() -> None:
    a = [0.50, 0.70, NAN, 0.40, 0.60, 0.20, 0.90]
    b = [0.40, 0.50, NAN, 0.40, 0.40, 0.30, 0.50]
    keys = ["s1", "s1", "s1", "s2", "s2", "s3", "s3"]
    got = paired_by_group(a, b, keys)
    # group means: s1 (0.6, 0.45), s2 (0.5, 0.4), s3 (0.55, 0.4); the NaN image left out
    ref = stats.ttest_rel([0.6, 0.5, 0.55], [0.45, 0.4, 0.4])
    assert got["mean_diff"] == pytest.approx((0.15 + 0.1 + 0.15) / 3)
    assert got["p_t"] == pytest.approx(ref.pvalue) and got["t"] == pytest.approx(ref.statistic)
    assert (got["unit"], got["n_units"], got["n"]) == ("group", 3, 3)
    assert (got["n_images"], got["n_left_out"]) == (6, 1)
    assert "groups" in got["unit_note"]


def test_paired_by_group_without_groups_keeps_the_image_as_unit() -> None:
    a, b = [0.5, 0.7, NAN, 0.4], [0.4, 0.5, NAN, 0.45]
    got = paired_by_group(a, b, ["x0", "x1", "x2", "x3"])
    ref = stats.ttest_rel([0.5, 0.7, 0.4], [0.4, 0.5, 0.45])
    assert (got["unit"], got["n_units"], got["n_left_out"]) == ("image", 3, 1)
    assert got["p_t"] == pytest.approx(ref.pvalue)
    assert "unit: the image" in got["unit_note"] and "independent" in got["unit_note"]


def test_image_groups_are_the_splits_groups_or_each_images_own() -> None:
    img, mask = torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8)
    split = SegSplit([img] * 3, [mask] * 3, ["0001TP_1", "0001TP_2", "Seq05VD_1"],
                     groups=["0001TP", "0001TP", "Seq05VD"])
    assert image_groups(split) == ["0001TP", "0001TP", "Seq05VD"]
    assert image_groups(SegSplit([img] * 2, [mask] * 2, ["a", "b"])) == ["a", "b"]


# ---------------------------------------------------------------- aggregate and report


def _run(variant: str, seed: int, per_image: list[float]) -> dict:
    score = sum(v for v in per_image if math.isfinite(v)) / 4
    return {"variant": variant, "seed": seed, "status": "completed", "val_miou": score,
            "eval_miou": score, "train_miou": score, "gap": 0.0, "weight_norm": 1.0,
            "eval_iou": [score, score], "per_image": per_image}


def _collected(groups: list[str]) -> dict:
    runs = [_run("base", 0, [0.4, 0.5, NAN, 0.4, 0.3]), _run("base", 1, [0.4, 0.3, NAN, 0.4, 0.3]),
            _run("wd", 0, [0.6, 0.5, NAN, 0.5, 0.2]), _run("wd", 1, [0.4, 0.7, NAN, 0.3, 0.6]),
            {"variant": "l1", "seed": 0, "status": "failed", "reason": "diverged"}]
    return {"runs": runs, "class_names": ["a", "b"], "groups": groups}


def test_aggregate_tests_over_groups_with_holm_over_every_variant() -> None:
    options = CompareOptions(variants=[Variant("base"), Variant("wd"), Variant("l1")],
                             seeds=[0, 1], baseline="base")
    summary = aggregate(_collected(["s1", "s1", "s1", "s2", "s2"]), options)
    wd, l1 = summary["paired"]
    # seed means wd 0.5 0.6 - 0.4 0.4; base 0.4 0.4 - 0.4 0.3; groups s1 (0.55, 0.4), s2 (0.4, 0.35)
    im = wd["images"]
    assert (im["unit"], im["n_units"], im["n_images"], im["n_left_out"]) == ("group", 2, 4, 1)
    ref = stats.ttest_rel([0.55, 0.4], [0.4, 0.35])
    assert im["mean_diff"] == pytest.approx(0.1) and im["p_t"] == pytest.approx(ref.pvalue)
    # l1 has no finished run: its test was asked for, so the family is m = 2
    assert "images" not in l1 and im["p_t_holm"] == pytest.approx(min(1.0, 2 * ref.pvalue))
    assert "over groups" in units_text(summary).lower() and "2 groups" in units_text(summary)
    assert "1 image(s) with every pixel ignored" in units_text(summary)


def test_aggregate_without_groups_reports_the_image_unit() -> None:
    options = CompareOptions(variants=[Variant("base"), Variant("wd")], seeds=[0, 1])
    summary = aggregate(_collected([f"img{i}" for i in range(5)]), options)
    (wd,) = summary["paired"]
    assert (wd["images"]["unit"], wd["images"]["n_units"]) == ("image", 4)
    ref = stats.ttest_rel([0.5, 0.6, 0.4, 0.4], [0.4, 0.4, 0.4, 0.3])
    assert wd["images"]["p_t"] == pytest.approx(ref.pvalue)
    text = units_text(summary)
    assert "Over images" in text and "no groups" in text and "unit: the image" in text


def test_a_score_cache_from_before_nan_scores_is_recomputed(tmp_path: Path,
                                                            monkeypatch) -> None:
    """A cache written when all-ignore images scored 0 is stale even for the same run."""
    (tmp_path / "summary.json").write_text("{}")
    stamp = (tmp_path / "summary.json").stat().st_mtime_ns
    old = {"miou": 0.5, "per_image_miou": [0.0], "summary_mtime_ns": stamp}
    (tmp_path / "compare_test.json").write_text(json.dumps(old))
    calls = []

    def fake(folder, split, n):
        calls.append(folder)
        return {"miou": 0.5, "iou": [0.5], "per_image_miou": [NAN]}

    monkeypatch.setattr(compare_summary, "score_images", fake)
    got = compare_summary._scores(tmp_path, None, "test", 2)
    assert len(calls) == 1 and math.isnan(got["per_image_miou"][0])
    again = compare_summary._scores(tmp_path, None, "test", 2)  # now cached: NaN as null
    assert len(calls) == 1 and again["per_image_miou"] == [None]
