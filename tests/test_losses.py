"""Class weights against hand-computed values; losses with ignore pixels; error messages."""

from __future__ import annotations

import math

import pytest
import torch

from segdecay.data.base import IGNORE_INDEX
from segdecay.errors import UserError
from segdecay.losses import (
    LOSSES,
    CrossEntropyLoss,
    build_loss,
    class_pixel_counts,
    class_weights,
)

X = IGNORE_INDEX
# Three small masks, 4 classes. Class 1 is absent from B, class 2 only in B, class 3 nowhere.
MASKS = [
    torch.tensor([[0, 0], [0, 1]], dtype=torch.uint8),  # A: 4 labelled px; 0 x3, 1 x1
    torch.tensor([[0, 0, 2], [2, 2, X]], dtype=torch.uint8),  # B: 5 labelled; 0 x2, 2 x3
    torch.tensor([[1, 1]], dtype=torch.uint8),  # C: 2 labelled; 1 x2
]
# pixels: c0 = 5, c1 = 3, c2 = 3, c3 = 0; total labelled = 11
# labelled pixels of the images containing c: c0 = A+B = 9, c1 = A+C = 6, c2 = B = 5


def test_pixel_counts():
    s = class_pixel_counts(MASKS, 4)
    assert s.pixels.tolist() == [5, 3, 3, 0]
    assert s.image_pixels.tolist() == [9, 6, 5, 0]
    assert s.images.tolist() == [2, 2, 1, 0]
    assert s.total == 11
    # A batch [N,H,W] counts as N images.
    batch = class_pixel_counts([torch.stack([MASKS[0], MASKS[0]])], 4)
    assert batch.image_pixels.tolist() == [8, 8, 0, 0]


def test_median_frequency_weights():
    # freq = [5/9, 3/6, 3/5]; sorted 1/2 < 5/9 < 3/5, so median = 5/9.
    expected = [(5 / 9) / (5 / 9), (5 / 9) / (3 / 6), (5 / 9) / (3 / 5), 0.0]
    assert expected == pytest.approx([1.0, 10 / 9, 25 / 27, 0.0])
    w = class_weights(MASKS, 4, "median")
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx(expected)
    # With whole-dataset frequencies (5/11, 3/11, 3/11; median 3/11) it would be [3/5, 1, 1]:
    # the "images containing c" denominator is what makes this scheme different.
    assert w.tolist()[:3] != pytest.approx([3 / 5, 1.0, 1.0])


def test_median_of_even_count_is_mean_of_middle_two():
    # One image: freq0 = 1/4, freq1 = 3/4; median = 1/2 (torch.median would give 1/4).
    w = class_weights([torch.tensor([[0, 1, 1, 1]])], 2, "median")
    assert w.tolist() == pytest.approx([(1 / 2) / (1 / 4), (1 / 2) / (3 / 4)])


def test_inverse_weights():
    # total / (C * count_c) with C = 4 classes.
    w = class_weights(MASKS, 4, "inverse")
    assert w.tolist() == pytest.approx([11 / (4 * 5), 11 / (4 * 3), 11 / (4 * 3), 0.0])


def test_enet_weights():
    w = class_weights(MASKS, 4, "enet")
    expected = [
        1 / math.log(1.02 + 5 / 11),
        1 / math.log(1.02 + 3 / 11),
        1 / math.log(1.02 + 3 / 11),
        0.0,  # absent class: 0, not 1/ln(1.02)
    ]
    assert w.tolist() == pytest.approx(expected)


def test_weight_scheme_errors():
    assert class_weights(MASKS, 4, "none") is None
    with pytest.raises(UserError) as err:
        class_weights(MASKS, 4, "median-freq")
    msg = str(err.value)
    assert "--class-weights" in msg and all(s in msg for s in ["none", "inverse", "median", "enet"])
    with pytest.raises(UserError, match="--class-weights"):
        class_weights([torch.full((2, 2), X)], 4, "enet")
    with pytest.raises(ValueError, match="outside"):
        class_pixel_counts([torch.tensor([[0, 4]])], 4)


def test_weighted_cross_entropy_by_hand():
    # One row of three pixels, 3 classes; the third pixel is ignored.
    rows = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [5.0, -2.0, 0.0]]  # logits per pixel
    labels = [0, 2, X]
    weights = [0.5, 2.0, 3.0]
    logits = torch.tensor(rows).T.reshape(1, 3, 1, 3)
    target = torch.tensor([labels])[:, None, :].reshape(1, 1, 3)

    def nll(row: list[float], k: int) -> float:
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    expected = (0.5 * nll(rows[0], 0) + 3.0 * nll(rows[1], 2)) / (0.5 + 3.0)
    loss = build_loss("ce", 3, torch.tensor(weights))
    assert isinstance(loss, torch.nn.CrossEntropyLoss)
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-6)
    torch_ce = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights), ignore_index=X)
    assert float(torch_ce(logits, target)) == pytest.approx(expected, rel=1e-6)
    # ce+dice = the same weighted CE plus unweighted Dice.
    combo = build_loss("ce+dice", 3, torch.tensor(weights))
    dice = build_loss("dice", 3)
    assert float(combo(logits, target)) == pytest.approx(
        expected + float(dice(logits, target)), rel=1e-6
    )


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and uint8 target with ignore pixels; class 3 absent from the batch."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 5, generator=g)
    target = torch.randint(0, 3, (2, 6, 5), generator=g, dtype=torch.uint8)
    target[0, :2] = X
    target[1, :, 0] = X
    return logits, target


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_is_finite_and_ignores_void(name):
    logits, target = _batch()
    logits.requires_grad_(True)
    loss = build_loss(name, 4)(logits, target)
    assert loss.dim() == 0 and torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    ignored = (target == X).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)  # no gradient from ignored pixels
    assert torch.all(torch.isfinite(logits.grad))
    assert logits.grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_ignore_equals_dropping_the_pixels(name):
    # The batch with ignore pixels must give the loss of its labelled pixels alone, laid out as
    # one image (dice, lovasz and focal all pool over the batch).
    logits, target = _batch(1)
    valid = target != X
    flat_logits = logits.permute(1, 0, 2, 3)[:, valid].reshape(1, 4, 1, -1)
    flat_target = target[valid].reshape(1, 1, -1)
    loss = build_loss(name, 4)
    assert float(loss(logits, target)) == pytest.approx(float(loss(flat_logits, flat_target)))


@pytest.mark.parametrize("name", LOSSES)
def test_all_ignored_batch_gives_zero_not_nan(name):
    # A crop entirely in void: torch CE and smp focal give NaN, smp Lovasz an empty tensor.
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), X, dtype=torch.uint8)
    loss = build_loss(name, 4)(logits, target)
    assert loss.dim() == 0 and float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_cross_entropy_zero_weight_classes_only():
    # Every labelled pixel has weight 0 (class absent from the training masks): 0, not 0/0.
    loss = CrossEntropyLoss(weight=torch.tensor([0.0, 1.0]))
    assert float(loss(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))) == 0.0


def test_build_loss_errors():
    w = torch.ones(4)
    for name in ("dice", "focal", "lovasz"):
        with pytest.raises(UserError) as err:
            build_loss(name, 4, w)
        msg = str(err.value)
        assert "--class-weights" in msg and f"--loss {name}" in msg
        assert "--loss ce " in msg and "--loss ce+dice" in msg
    with pytest.raises(UserError) as err:
        build_loss("bce", 4)
    msg = str(err.value)
    assert "--loss" in msg and all(n in msg for n in LOSSES)
    with pytest.raises(ValueError, match="shape"):
        build_loss("ce", 4, torch.ones(3))


def test_weights_move_with_the_module():
    loss = build_loss("ce+dice", 3, torch.tensor([1.0, 2.0, 3.0]))
    assert any(name.endswith("weight") for name, _ in loss.named_buffers())
