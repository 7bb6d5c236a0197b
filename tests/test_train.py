"""Training end to end on the synthetic data: it learns, and resume is exact."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segdecay.config import TrainConfig
from segdecay.data.synthetic import make_synthetic
from segdecay.metrics import SegmentationMetrics
from segdecay.training import train
from segdecay.training.state import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=4,
                   encoder=SMALL_ENCODER,
                   batch_size=4, dropout=0.2, augment="light", optimizer="adamw", lr=2e-3)


def _majority_miou(data) -> float:
    """mIoU of always predicting the most frequent training class (the trivial baseline)."""
    train_masks = torch.stack(data.train.masks).long().flatten()
    majority = int(torch.bincount(train_masks[train_masks != 255]).argmax())
    metrics = SegmentationMetrics(data.info.num_classes)
    for mask in data.val.masks:
        metrics.update(torch.full_like(mask, majority).long()[None], mask.long()[None])
    return metrics.compute()["miou"]


@pytest.mark.slow
def test_training_on_synthetic_learns_well_above_chance(tmp_path):
    # 48 training images of 64x64, 25 epochs of 6 steps (~25 s on 2 CPU cores). AdamW fits
    # this budget; SGD (the default) needs several times the steps from scratch.
    config = TrainConfig(data="synthetic:n_train=48,n_val=32,n_test=8", epochs=25,
                         batch_size=8, optimizer="adamw", lr=2e-3, weight_decay=0.0,
                         augment="flip")
    data = make_synthetic(n_train=48, n_val=32, n_test=8)
    summary = train(config, tmp_path / "run", data=data)
    trivial = _majority_miou(data)
    # Predicting the majority class scores about 0.13 mIoU (background IoU ~0.78 / 6 classes),
    # and uniform guessing less. After 150 steps the model separates the shapes and at least
    # the coarse textures: runs here reach about 0.5; 0.3 leaves room for platform noise
    # while still needing several object classes right.
    assert trivial < 0.2
    assert summary["final_val_miou"] > 0.3 > trivial
    learned = [iou for iou in summary["val"]["iou"][1:] if iou and iou > 0.3]
    assert len(learned) >= 2, summary["val"]["iou"]


class StopAfter(Exception):
    """Raised from on_epoch: the run ends after an epoch's checkpoint, as if killed there."""

    def __init__(self, epoch: int) -> None:
        super().__init__(epoch)
        self.epoch = epoch


def _stop_after(epochs: int):
    def hook(row: dict) -> None:
        if row["epoch"] >= epochs:
            raise StopAfter(row["epoch"])

    return hook


def test_resume_after_interruption_ends_with_identical_weights(tmp_path):
    straight = train(TINY, tmp_path / "a")
    with pytest.raises(StopAfter) as stopped:  # as a pruner or a kill after epoch 2 would
        train(TINY, tmp_path / "b", on_epoch=_stop_after(2))
    assert stopped.value.epoch == 2
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed = train(TINY, tmp_path / "b", resume=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert resumed["final_val_miou"] == straight["final_val_miou"]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + TINY.epochs


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path):
    cfg = replace(TINY, epochs=2)
    first = train(cfg, tmp_path / "a")
    again = train(cfg, tmp_path / "b")
    other = train(replace(cfg, seed=1), tmp_path / "c")
    assert first["final_val_miou"] == again["final_val_miou"]
    assert first["weight_norm"] == again["weight_norm"]
    assert other["weight_norm"] != first["weight_norm"]


@pytest.mark.parametrize("mode", ["penalty", "coupled", "decoupled"])
def test_each_decay_mode_trains_and_is_recorded(tmp_path, mode):
    cfg = replace(TINY, epochs=1, optimizer="sgd", lr=0.05, weight_decay=1e-3, decay_mode=mode,
                  l1=1e-5 if mode == "penalty" else 0.0)
    train(cfg, tmp_path / mode)
    decay = json.loads((tmp_path / mode / "decay.json").read_text())
    assert decay["decay_mode"] == mode
    assert {g["mode"] for g in decay["groups"]} == {mode}
    history = load_checkpoint(tmp_path / mode / "last.pt")["history"]
    row = history[-1]
    if mode == "penalty":  # the optimized loss carries the penalty, the data loss does not
        assert row["train_loss"] > row["data_loss"]
    else:
        assert row["train_loss"] == row["data_loss"]
    assert row["reg_term"] > 0


def test_validating_only_at_the_end_changes_no_number_of_the_run(tmp_path):
    # What lets a tune's race fits skip per-epoch validation: evaluation draws no random
    # numbers and leaves BatchNorm statistics alone, so the weights and final scores match.
    every = train(replace(TINY, epochs=3, eval_every=1), tmp_path / "every")
    once = train(replace(TINY, epochs=3, eval_every=3), tmp_path / "once")
    assert once["final_val_miou"] == every["final_val_miou"]
    assert once["final_train_miou"] == every["final_train_miou"]
    a = load_checkpoint(tmp_path / "every" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "once" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = load_checkpoint(tmp_path / "once" / "last.pt")["history"]
    assert [r["val_miou"] is None for r in rows] == [True, True, False]
