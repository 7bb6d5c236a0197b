"""Test-time augmentation: the average of the explicitly transformed predictions, mapped
back, on a model that is neither flip- nor turn-invariant; and the run's choice on val is
what evaluate and predict use."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.inference import TTA_GROUPS, logits_of_input, tta_logits
from segdecay.runs import evaluate_run
from segdecay.training.evaluate import tta_candidates

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402


class PositionAware(nn.Module):
    """Three class scores that depend on where a pixel is and on its left neighbour, so
    every flip and turn of the input changes the output in a way only undoing it fixes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows = torch.linspace(0, 2, h).view(1, 1, h, 1)
        cols = torch.linspace(-1, 1, w).view(1, 1, 1, w)
        left = torch.roll(x[:, :1], 1, dims=-1)
        return torch.cat([x[:, :1] * rows, x[:, 1:2] * cols + left, x[:, 2:3] - rows * cols],
                         dim=1)


def _numpy_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(model: nn.Module, x: torch.Tensor, transforms) -> np.ndarray:
    """log of the mean of softmax(back(model(forward(x)))) with numpy's own flips/turns."""
    total = 0.0
    for forward, back in transforms:
        xt = torch.from_numpy(np.ascontiguousarray(forward(x.numpy())))
        y = model(xt).numpy()
        total = total + np.ascontiguousarray(back(_numpy_softmax(y)))
    return np.log(total / len(transforms))


def _d4_numpy():
    """The eight symmetries as (forward, back) pairs on [N,C,H,W] arrays, written out."""
    ax = (-2, -1)
    pairs = []
    for k in range(4):
        pairs.append((lambda a, k=k: np.rot90(a, k, axes=ax),
                      lambda a, k=k: np.rot90(a, -k, axes=ax)))
        pairs.append((lambda a, k=k: np.rot90(a[..., ::-1], k, axes=ax),
                      lambda a, k=k: np.rot90(a, -k, axes=ax)[..., ::-1]))
    return pairs


@pytest.mark.parametrize("hw", [(6, 6), (4, 7)])  # square, and turned into 7x4 and back
def test_d4_averages_the_eight_transformed_predictions_mapped_back(hw) -> None:
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    model = PositionAware()
    got = tta_logits(model, x, hw, 1, "d4")
    expected = _by_hand(model, x, _d4_numpy())
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    # not invariant: the plain logits rank classes differently somewhere
    plain = logits_of_input(model, x, hw, 1)
    assert not torch.equal(plain.argmax(1), got.argmax(1))


def test_flip_averages_the_input_and_its_mirror() -> None:
    x = torch.randn(1, 3, 5, 8, generator=torch.Generator().manual_seed(1))
    model = PositionAware()
    mirror = [(lambda a: a, lambda a: a), (lambda a: a[..., ::-1], lambda a: a[..., ::-1])]
    assert np.allclose(tta_logits(model, x, (5, 8), 1, "flip").numpy(),
                       _by_hand(model, x, mirror), atol=1e-5)
    assert torch.equal(tta_logits(model, x, (5, 8), 1, "none"),
                       logits_of_input(model, x, (5, 8), 1))
    assert [len(TTA_GROUPS[g]) for g in ("none", "flip", "d4")] == [1, 2, 8]


def test_auto_tries_the_training_augmentation_group() -> None:
    assert tta_candidates(TrainConfig(augment="d4")) == ["none", "d4"]
    assert tta_candidates(TrainConfig(augment="light")) == ["none", "flip"]
    assert tta_candidates(TrainConfig(augment="none")) == ["none"]
    assert tta_candidates(TrainConfig(augment="d4", tta="flip")) == ["flip"]


def test_a_run_chooses_tta_on_val_and_evaluate_uses_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = "synthetic:size=32,n_train=8,n_val=8,n_test=8"
    assert main(["train", "--data", spec, "--steps", "2", "--augment", "d4",
                 "--encoder", SMALL_ENCODER, "--decision", "argmax", "--out", str(run),
                 "--quiet"]) == 0
    decision = json.loads((run / "decision.json").read_text())
    by_tta = decision["val_miou_by_tta"]
    assert set(by_tta) == {"none", "d4"} and decision["tau"] == 0.0
    chosen = "d4" if by_tta["d4"] > by_tta["none"] else "none"  # a tie keeps one pass
    assert (decision["tta"], decision["tta_passes"]) == (chosen, len(TTA_GROUPS[chosen]))
    for group in ("none", "d4"):  # each scored on val as the run scored it
        result = evaluate_run(run, split="val", quiet=True, tta=group,
                              out=tmp_path / f"{group}.json")
        assert result["tta"] == group and result["passes_per_image"] == len(TTA_GROUPS[group])
        assert result["miou"] == pytest.approx(by_tta[group], abs=1e-6)
    own = evaluate_run(run, split="val", quiet=True)
    assert own["tta"] == chosen and own["miou"] == pytest.approx(decision["val_miou"])
