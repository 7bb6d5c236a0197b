"""SegmentationMetrics: hand-checked counts, torchmetrics agreement, split-level pooling."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from segdecay.data.base import IGNORE_INDEX
from segdecay.metrics import SegmentationMetrics, format_iou_table

# 2x3 image, 3 classes, one ignore pixel (predicted 0, which must not count as a class-0 FP).
TARGET = torch.tensor([[[0, 0, 1], [1, IGNORE_INDEX, 1]]], dtype=torch.uint8)
PRED = torch.tensor([[[0, 2, 1], [0, 0, 1]]])
# Rows true class, columns predicted class:
#   t0: p0 at (0,0), p2 at (0,1)       -> [1, 0, 1]
#   t1: p1 at (0,2),(1,2), p0 at (1,0) -> [1, 2, 0]
#   t2: never labelled                 -> [0, 0, 0]
CONFUSION = [[1, 0, 1], [1, 2, 0], [0, 0, 0]]
# class 0: TP 1, FP 1, FN 1; class 1: TP 2, FP 0, FN 1; class 2: TP 0, FP 1, FN 0.
IOU = [1 / 3, 2 / 3, 0 / 1]
DICE = [2 / 4, 4 / 5, 0 / 1]
ACC = [1 / 2, 2 / 3, math.nan]  # class 2 has no true pixel: accuracy undefined
MIOU = (1 / 3 + 2 / 3 + 0) / 3  # = 1/3; class 2 was predicted, so its IoU 0 counts
MDICE = (1 / 2 + 4 / 5 + 0) / 3  # = 13/30
PIXEL_ACC = 3 / 5
MEAN_ACC = (1 / 2 + 2 / 3) / 2  # = 7/12, over the classes present in the target


def _assert_floats(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert (math.isnan(a) and math.isnan(e)) or a == pytest.approx(e)


def test_hand_computed_example():
    m = SegmentationMetrics(3)
    m.update(PRED, TARGET)
    r = m.compute()
    assert r["confusion"] == CONFUSION
    assert r["support"] == [2, 3, 0]
    _assert_floats(r["iou"], IOU)
    _assert_floats(r["dice"], DICE)
    _assert_floats(r["acc"], ACC)
    assert r["miou"] == pytest.approx(MIOU) and r["miou"] == pytest.approx(1 / 3)
    assert r["mdice"] == pytest.approx(MDICE) and r["mdice"] == pytest.approx(13 / 30)
    assert r["pixel_acc"] == pytest.approx(PIXEL_ACC)
    assert r["mean_acc"] == pytest.approx(MEAN_ACC) and r["mean_acc"] == pytest.approx(7 / 12)
    # Plain Python numbers only, so results go straight into a JSON report.
    json.dumps(r)
    assert all(type(v) is float for v in r["iou"] + r["dice"] + r["acc"])


def test_class_never_seen_is_nan_and_left_out_of_means():
    m = SegmentationMetrics(4)  # class 3: neither labelled nor predicted
    m.update(PRED, TARGET)
    r = m.compute()
    _assert_floats(r["iou"], IOU + [math.nan])
    assert r["miou"] == pytest.approx(MIOU)
    assert r["mdice"] == pytest.approx(MDICE)
    assert r["mean_acc"] == pytest.approx(MEAN_ACC)
    assert r["support"] == [2, 3, 0, 0]


def test_empty_metrics_are_nan():
    r = SegmentationMetrics(2).compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_acc"]) and math.isnan(r["mean_acc"])


def _random_batches(seed: int, num_classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of different sizes; predictions agree with the target ~60% of the time."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for n, h, w in [(1, 6, 7), (3, 8, 8), (2, 5, 9), (4, 7, 6)]:
        target = torch.randint(0, num_classes, (n, h, w), generator=g)
        # Skew batches towards different classes so that per-batch IoUs differ a lot.
        target = torch.where(torch.rand(n, h, w, generator=g) < 0.4, n % num_classes, target)
        target[torch.rand(n, h, w, generator=g) < 0.1] = IGNORE_INDEX
        noise = torch.randint(0, num_classes, (n, h, w), generator=g)
        keep = torch.rand(n, h, w, generator=g) < 0.6
        pred = torch.where(keep & (target != IGNORE_INDEX), target, noise)
        batches.append((pred, target.to(torch.uint8)))
    return batches


def test_matches_torchmetrics_over_whole_split():
    c = 5
    ours = SegmentationMetrics(c)
    per_class = MulticlassJaccardIndex(num_classes=c, average=None, ignore_index=IGNORE_INDEX)
    macro = MulticlassJaccardIndex(num_classes=c, average="macro", ignore_index=IGNORE_INDEX)
    batch_mious = []
    for pred, target in _random_batches(0, c):
        ours.update(pred, target)
        per_class.update(pred, target.long())
        macro.update(pred, target.long())
        one = SegmentationMetrics(c)
        one.update(pred, target)
        batch_mious.append(one.compute()["miou"])
    r = ours.compute()
    assert all(s > 0 for s in r["support"])  # every class present
    assert r["iou"] == pytest.approx(per_class.compute().tolist(), abs=1e-6)
    assert r["miou"] == pytest.approx(float(macro.compute()), abs=1e-6)
    # Averaging per-batch mIoU is a different (wrong) number from the pooled split mIoU.
    assert abs(sum(batch_mious) / len(batch_mious) - r["miou"]) > 0.01


def test_logits_are_argmaxed_and_upsampled_to_label_size():
    g = torch.Generator().manual_seed(1)
    c = 4
    target = torch.randint(0, c, (2, 8, 12), generator=g)
    target[:, 0, :] = IGNORE_INDEX
    small = torch.randn(2, c, 4, 6, generator=g)
    m = SegmentationMetrics(c)
    m.update(small, target)
    up = F.interpolate(small, size=(8, 12), mode="bilinear", align_corners=False).argmax(1)
    ref = SegmentationMetrics(c)
    ref.update(up, target)
    assert torch.equal(m.confusion, ref.confusion)
    assert int(m.confusion.sum()) == 2 * 7 * 12  # label resolution, ignore row excluded

    # A 1x1 logit map predicting class 2 everywhere.
    one = torch.zeros(1, c, 1, 1)
    one[0, 2] = 1.0
    m2 = SegmentationMetrics(c)
    m2.update(one, target[:1])
    assert m2.confusion[:, 2].sum() == 7 * 12 and m2.confusion.sum() == 7 * 12


def test_confusion_stays_on_input_device_without_host_sync():
    # Meta tensors have no data: any .item()/host read in update() would raise here.
    m = SegmentationMetrics(3)
    logits = torch.randn(2, 3, 4, 4, device="meta")
    target = torch.zeros(2, 8, 8, dtype=torch.uint8, device="meta")
    m.update(logits, target)
    assert m.confusion.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_has_no_sync():
    m = SegmentationMetrics(3)
    pred, target = PRED.cuda(), TARGET.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        m.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert m.confusion.is_cuda
    assert m.compute()["confusion"] == CONFUSION


def test_bad_target_values_raise():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="outside"):
        m.update(PRED, torch.tensor([[[0, 0, 3], [1, IGNORE_INDEX, 1]]]))
    with pytest.raises(ValueError, match="outside"):
        m.update(PRED, torch.tensor([[[0, -1, 1], [1, IGNORE_INDEX, 1]]]))
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.randn(1, 4, 2, 3), TARGET)


def test_merge_and_assign_confusion():
    batches = _random_batches(2, 4)
    whole, a, b = SegmentationMetrics(4), SegmentationMetrics(4), SegmentationMetrics(4)
    for i, (pred, target) in enumerate(batches):
        whole.update(pred, target)
        (a if i % 2 else b).update(pred, target)
    a.merge(b)
    assert torch.equal(a.confusion, whole.confusion)
    c = SegmentationMetrics(4)
    c.confusion = whole.confusion.clone()  # e.g. after dist.all_reduce
    assert c.compute() == whole.compute()
    whole.reset()
    assert int(whole.confusion.sum()) == 0
    with pytest.raises(ValueError):
        c.confusion = torch.zeros(3, 3)


def test_format_iou_table():
    m = SegmentationMetrics(4)
    m.update(PRED, TARGET)
    text = format_iou_table(m.compute(), ["road", "car", "sign", "pole"])
    lines = text.splitlines()
    car = next(line for line in lines if line.startswith("car"))
    assert car.split() == ["car", "66.67", "80.00", "66.67", "3"]
    pole = next(line for line in lines if line.startswith("pole"))
    assert pole.split() == ["pole", "-", "-", "-", "0"]
    sign = next(line for line in lines if line.startswith("sign"))
    assert sign.split() == ["sign", "0.00", "0.00", "-", "0"]
    assert lines[-1] == "mIoU 33.33  pixel acc 60.00  mean acc 58.33"
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule line up
    with pytest.raises(ValueError):
        format_iou_table(m.compute(), ["road"])
