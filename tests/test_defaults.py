"""Defaults that follow the optimizer and the data: each resolved as documented, stored in
config.yaml, and used by evaluate and predict."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import segdecay.inference
from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.data.base import DatasetInfo, SegData, SegSplit
from segdecay.data.transforms import IMAGENET_MEAN, IMAGENET_STD, augment_batch, get_preset
from segdecay.decay.defaults import optimizer_defaults
from segdecay.runs import evaluate_run, predict_paths
from segdecay.training.defaults import (
    channel_stats,
    default_batch_size,
    resolve_defaults,
    upside_down_change,
)
from segdecay.training.epoch import crop_fraction

SYN = "synthetic:size=32,n_train=8,n_val=8,n_test=8"


# ---------------------------------------------------------------- lr and lambda per optimizer

@pytest.mark.parametrize("optimizer, mode, epochs, steps_per_epoch, lr, lam", [
    # AdamW shrinks by lr·lambda per step; tau = the whole run: 1/(1e-3 · 600) and
    # 1/(1e-3 · 1350) for 600 and 30 x 45 = 1350 steps
    ("adamw", None, 600, 1, 1e-3, 1.66667),
    ("adamw", None, 30, 45, 1e-3, 0.740741),
    # SGD passes coupled decay through momentum 0.9: lr_eff = 0.05/0.1 = 0.5
    ("sgd", None, 600, 1, 0.05, 1 / 300),
    ("sgd", None, 30, 45, 0.05, 1 / 675),
    ("sgd-nesterov", None, 30, 45, 0.05, 1 / 675),
    ("sgd", "decoupled", 600, 1, 0.05, 1 / 30),  # SGDW: lr_eff = lr = 0.05
    ("adam", None, 600, 1, 1e-3, 1e-4),  # Adam + L2: no timescale, the conventional value
])
def test_lambda_puts_the_decay_timescale_at_the_whole_run(
        optimizer: str, mode: str | None, epochs: int, steps_per_epoch: int, lr: float,
        lam: float) -> None:
    notes: list[str] = []
    config = optimizer_defaults(TrainConfig(optimizer=optimizer, decay_mode=mode,
                                            epochs=epochs), steps_per_epoch, notes)
    assert config.lr == pytest.approx(lr)
    assert config.weight_decay == pytest.approx(lam, rel=1e-5)
    assert len(notes) == 2 and notes[0].startswith(f"lr {lr:g}")
    assert notes[1].startswith(f"lambda {config.weight_decay:g}: ")


def test_a_short_run_keeps_tau_at_least_one_epoch_and_ten_steps() -> None:
    # 4 steps of 2 per epoch: tau = max(2, 2, 10) = 10 steps -> 1/(1e-3 · 10)
    config = optimizer_defaults(TrainConfig(steps=4), 2)
    assert config.weight_decay == pytest.approx(100.0)
    # 20 steps with 45 per epoch: one epoch, 45 steps -> 1/(1e-3 · 45)
    notes: list[str] = []
    config = optimizer_defaults(TrainConfig(steps=20), 45, notes)
    assert config.weight_decay == pytest.approx(22.2222, rel=1e-5)
    assert "at least one epoch" in notes[-1]


def test_an_explicit_lr_keeps_the_timescale_and_explicit_values_win() -> None:
    notes: list[str] = []
    config = optimizer_defaults(TrainConfig(optimizer="adamw", lr=2e-3, steps=600), 9, notes)
    assert config.weight_decay == pytest.approx(1 / 1.2, rel=1e-5)  # 1/(2e-3 · 600)
    assert [n.split()[0] for n in notes] == ["lambda"]
    notes = []
    config = optimizer_defaults(TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.0), 9,
                                notes)
    assert (config.lr, config.weight_decay, notes) == (2e-3, 0.0, [])


def test_a_run_with_every_default_prints_and_stores_each_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", SYN, "--epochs", "2", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # 8 training images: 1 batch of 8, so batches of 2 (4 steps per epoch, 8 steps)
    expected = {"optimizer": "adamw", "batch_size": 2, "lr": 0.001, "weight_decay": 100.0,
                "augment": "d4", "loss": "ce+dice", "class_weights": "enet",
                "decision": "adjusted", "tta": "auto", "checkpoint": "auto"}
    assert {k: saved[k] for k in expected} == expected
    for line in ("default batch size 2: 8 training images", "default augment d4: ",
                 "default lr 0.001: ", "default lambda 100: decay timescale tau",
                 "default loss ce+dice: ", "default class weights enet: ",
                 "default decision adjusted: ", "default checkpoint auto: "):
        assert line in err
    assert "optimizer: AdamW (decoupled)" in err
    decision = json.loads((run / "decision.json").read_text())
    assert decision["tta"] in ("none", "d4") and decision["rule"] == "adjusted"


# ---------------------------------------------------------------- batch, augmentation, weights

@pytest.mark.parametrize("n, batch", [(1, 1), (3, 2), (24, 2), (63, 2), (64, 4), (127, 4),
                                      (128, 8), (5000, 8)])
def test_small_training_splits_get_smaller_batches(n: int, batch: int) -> None:
    assert default_batch_size(n) == batch


def test_a_batch_larger_than_the_split_is_clipped_and_said() -> None:
    masks = [torch.zeros(4, 4, dtype=torch.uint8) for _ in range(5)]
    config, notes = resolve_defaults(TrainConfig(batch_size=64), _data(masks, ["a", "b"]))
    assert config.batch_size == 5
    assert "batch size 5: --batch-size 64 is more than the 5 training images" in notes


def test_upside_down_change_by_hand() -> None:
    sky = torch.zeros(8, 2, dtype=torch.uint8)
    sky[4:] = 1  # class 0 above, class 1 below: every class changes completely
    assert upside_down_change([sky], 2) == pytest.approx(1.0)
    dot = torch.zeros(8, 1, dtype=torch.uint8)
    dot[0] = 1  # class 1: one pixel in the top band (TV 1); class 0: bands 1-7 (TV 1/7)
    assert upside_down_change([dot], 2) == pytest.approx((7 * (1 / 7) + 1 * 1.0) / 8)
    even = torch.zeros(8, 3, dtype=torch.uint8)
    even[0], even[7] = 1, 1  # mirror-symmetric rows
    even[2, 0], even[5, 0] = 255, 255  # ignore pixels count for no class
    assert upside_down_change([even], 2) == pytest.approx(0.0)
    for height in (12, 5, 36):  # bands that do not divide the height evenly: still 0
        assert upside_down_change([torch.zeros(height, 4, dtype=torch.uint8)], 2) == 0.0
        stripe = torch.zeros(height, 4, dtype=torch.uint8)
        stripe[height // 2 - 1: height - height // 2 + 1] = 1  # centred: symmetric
        assert upside_down_change([stripe], 2) == pytest.approx(0.0, abs=1e-12)


def test_augmentation_follows_whether_the_labels_have_an_up_and_down() -> None:
    street = torch.zeros(16, 16, dtype=torch.uint8)
    street[8:] = 1  # sky above, road below
    config, notes = resolve_defaults(TrainConfig(), _data([street], ["sky", "road"]))
    assert config.augment == "light" and any(n.startswith("augment light:") for n in notes)
    cracks = torch.zeros(16, 16, dtype=torch.uint8)
    cracks[3, 2:12] = 1
    cracks[12, 5:15] = 1
    assert resolve_defaults(TrainConfig(), _data([cracks], ["bg", "crack"]))[0].augment == "d4"
    assert resolve_defaults(TrainConfig(augment="none"),
                            _data([street], ["sky", "road"]))[0].augment == "none"


def test_a_loss_without_class_weights_gets_none_by_default() -> None:
    rare = torch.zeros(10, 10, dtype=torch.uint8)
    rare[0, :3] = 1
    rare[5:, :] = 2
    config, notes = resolve_defaults(TrainConfig(loss="dice"), _data([rare], ["a", "b", "c"]))
    assert config.class_weights == "none"
    assert "class weights none: --loss dice takes none (--class-weights)" in notes


def test_class_weights_follow_the_class_count_and_the_rarest_share() -> None:
    rare = torch.zeros(10, 10, dtype=torch.uint8)
    rare[0, :3] = 1  # 3% of the pixels
    rare[5:, :] = 2
    config, notes = resolve_defaults(TrainConfig(), _data([rare], ["a", "pole", "c"]))
    assert config.class_weights == "enet"
    assert "class weights enet: pole is 3.00% of the labelled training pixels (under 5%) " \
           "(--class-weights)" in notes
    binary = rare.clamp(max=1)
    binary[5:] = 0
    assert resolve_defaults(TrainConfig(), _data([binary], ["bg", "fg"]))[0].class_weights \
        == "none"
    balanced = torch.arange(100).view(10, 10).remainder(3).to(torch.uint8)
    assert resolve_defaults(TrainConfig(), _data([balanced], ["a", "b", "c"]))[
        0].class_weights == "none"


def test_the_decision_is_adjusted_where_there_is_a_val_split() -> None:
    mask = torch.zeros(4, 4, dtype=torch.uint8)
    data = _data([mask], ["a", "b"])
    assert resolve_defaults(TrainConfig(), data)[0].decision == "adjusted"
    empty = SegData(data.info, data.train, SegSplit([], [], []))
    config, notes = resolve_defaults(TrainConfig(), empty)
    assert config.decision == "argmax"
    assert any(n.startswith("decision argmax: no val images") for n in notes)


# ---------------------------------------------------------------- loss from the class shares

def _data(masks: list[torch.Tensor], names: list[str]) -> SegData:
    images = [torch.zeros(3, *m.shape, dtype=torch.uint8) for m in masks]
    split = SegSplit(images, masks, [f"i{k}" for k in range(len(masks))])
    return SegData(DatasetInfo("t", len(names), names, [(0, 0, 0)] * len(names)), split, split)


def test_a_rare_class_gets_ce_plus_dice_and_balanced_data_ce() -> None:
    thin = torch.zeros(10, 10, dtype=torch.uint8)
    thin[0, :4] = 1  # 4 of 100 labelled pixels: 4% < 5%
    thin[9, :] = 255  # ignore pixels do not count: 4 of 90
    config, notes = resolve_defaults(TrainConfig(), _data([thin], ["bg", "crack"]))
    assert config.loss == "ce+dice"
    assert any("crack, is 4.44% of the labelled training pixels" in n for n in notes)
    half = torch.zeros(10, 10, dtype=torch.uint8)
    half[:5] = 1
    assert resolve_defaults(TrainConfig(), _data([half], ["bg", "fg"]))[0].loss == "ce"
    given = resolve_defaults(TrainConfig(loss="focal"), _data([thin], ["bg", "crack"]))
    assert given[0].loss == "focal"


# ---------------------------------------------------------------- input normalization

def _constant_folder(root: Path) -> None:
    """Two 64x64 train images of constant colours (10,20,30) and (50,60,90), one val (64x64:
    batches of one still give the ResNet's last BatchNorm 2x2 values)."""
    colours = {"train": [(10, 20, 30), (50, 60, 90)], "val": [(30, 40, 60)]}
    for split, rgbs in colours.items():
        for i, rgb in enumerate(rgbs):
            for sub, arr in (("images", np.full((64, 64, 3), rgb, np.uint8)),
                             ("masks", np.where(np.arange(64)[:, None] < 32 + i, 255, 0)
                              .repeat(64, 1).astype(np.uint8))):
                path = root / split / sub / f"{split}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)


def test_channel_stats_are_the_exact_mean_and_population_std() -> None:
    a = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4)
    b = torch.tensor([50, 60, 90], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 8)
    mean, std = channel_stats(SegSplit([a, b], [None, None], ["a", "b"]))
    assert mean == pytest.approx([30 / 255, 40 / 255, 60 / 255], abs=1e-12)
    assert std == pytest.approx([20 / 255, 20 / 255, 30 / 255], abs=1e-12)  # |a-b|/2


def test_dataset_statistics_are_stored_and_reused_by_evaluate_and_predict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _constant_folder(data)
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{data}", "--steps", "2", "--batch-size", "2",
                 "--out", str(run), "--quiet"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["normalize"] == "dataset"
    assert saved["input_mean"] == pytest.approx([30 / 255, 40 / 255, 60 / 255], abs=1e-9)
    assert saved["input_std"] == pytest.approx([20 / 255, 20 / 255, 30 / 255], abs=1e-9)
    seen: list[tuple] = []
    real = segdecay.inference.standardize

    def recording(x, mean, std):
        seen.append((tuple(mean), tuple(std)))
        return real(x, mean, std)

    monkeypatch.setattr(segdecay.inference, "standardize", recording)
    evaluate_run(run, split="val", quiet=True)
    predict_paths(run, data / "val" / "images", tmp_path / "pred", quiet=True)
    assert len(seen) == 2
    for mean, std in seen:
        assert mean == pytest.approx(saved["input_mean"]) and std == pytest.approx(
            saved["input_std"])


def test_pretrained_weights_keep_imagenet_statistics() -> None:
    split = SegSplit([torch.zeros(3, 4, 4, dtype=torch.uint8)],
                     [torch.zeros(4, 4, dtype=torch.uint8)], ["a"])
    data = SegData(DatasetInfo("t", 2, ["a", "b"], [(0, 0, 0)] * 2), split, split)
    config, _ = resolve_defaults(TrainConfig(encoder_weights="imagenet", loss="ce"), data)
    assert (config.normalize, config.input_mean, config.input_std) == (
        "imagenet", list(IMAGENET_MEAN), list(IMAGENET_STD))


# ---------------------------------------------------------------- evaluation size and cadence

def test_eval_size_follows_size_unless_given(tmp_path: Path) -> None:
    for extra, expected in (([], [32, 32]), (["--eval-size", "native"], []),
                            (["--eval-size", "64x64"], [64, 64])):
        run = tmp_path / f"run{len(extra)}{expected}"
        assert main(["train", "--data", "synthetic:size=64,n_train=4,n_val=2,n_test=2",
                     "--size", "32x32", "--steps", "1", "--batch-size", "2", "--out",
                     str(run), "--quiet", *extra]) == 0
        assert yaml.safe_load((run / "config.yaml").read_text())["eval_size"] == expected


def _val_epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh) if r["val_miou"]]


@pytest.mark.slow
def test_a_long_steps_run_on_a_tiny_dataset_validates_about_twenty_times(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _constant_folder(data)  # 2 train images, batch 1: 2 steps per epoch
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{data}", "--steps", "70", "--batch-size", "1",
                 "--out", str(run)]) == 0
    # 35 epochs -> every ceil(35/20) = 2 epochs: 2, 4, ..., 34, and always the last (35)
    assert _val_epochs(run) == [*range(2, 35, 2), 35]
    assert "default validation every 2 epochs: 18 of 35 epochs" in capsys.readouterr().err
    run1 = tmp_path / "run1"
    assert main(["train", "--data", f"folder:{data}", "--steps", "10", "--batch-size", "1",
                 "--eval-every", "1", "--out", str(run1), "--quiet"]) == 0
    assert _val_epochs(run1) == list(range(1, 6))


# ---------------------------------------------------------------- crops and d4 augmentation

def test_a_crop_without_size_is_a_native_scale_window() -> None:
    assert crop_fraction((256, 256), None, (320, 480)) == (0.8, 256 / 480)
    assert crop_fraction((96, 128), (192, 256), (360, 480)) == (0.5, 0.5)
    assert crop_fraction(None, (192, 256), (360, 480)) == (1.0, 1.0)
    # a 4x4 window of an 8x8 ramp holds 16 distinct pixels of the original, unscaled
    ramp = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    x, _ = augment_batch(ramp.clone(), torch.zeros(1, 8, 8, dtype=torch.uint8), (4, 4),
                         get_preset("none"), gen, crop_fraction((4, 4), None, (8, 8)),
                         mean=(0, 0, 0), std=(1, 1, 1))
    values = (x[0, 0] * 255).round().long()
    assert (values[:, 1:] - values[:, :-1] == 1).all()  # neighbours in a row differ by 1
    assert (values[1:] - values[:-1] == 8).all()  # rows are 8 apart: no rescaling


def test_d4_turns_square_samples_and_keeps_masks_aligned() -> None:
    ramp = torch.arange(16, dtype=torch.uint8).view(4, 4)
    images = (ramp * 16).view(1, 1, 4, 4).expand(64, 3, 4, 4).clone()
    masks = ramp.view(1, 4, 4).expand(64, 4, 4).clone()
    gen = torch.Generator().manual_seed(0)
    x, m = augment_batch(images, masks, (4, 4), get_preset("d4"), gen,
                         mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.equal((x[:, 0] * 255 / 16).round().long(), m)  # pixels and labels agree
    seen = {tuple(s.flatten().tolist()) for s in m}
    dihedral = set()
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(ramp.long(), k)
            dihedral.add(tuple((t.flip(-1) if flip else t).flatten().tolist()))
    assert seen == dihedral  # all eight symmetries of the square, and nothing else
    assert not math.isnan(float(x.sum()))
