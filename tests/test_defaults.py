"""Defaults that follow the optimizer and the data: each resolved as documented, stored in
config.yaml, and used by evaluate and predict."""

from __future__ import annotations

import csv
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
from segdecay.decay import tau_for_lambda
from segdecay.decay.defaults import optimizer_defaults
from segdecay.runs import evaluate_run, predict_paths
from segdecay.training.defaults import channel_stats, resolve_defaults
from segdecay.training.epoch import crop_fraction

SYN = "synthetic:size=32,n_train=8,n_val=8,n_test=8"


# ---------------------------------------------------------------- lr and lambda per optimizer

@pytest.mark.parametrize("optimizer, mode, lr, lam", [
    ("sgd", None, 0.05, 5e-4),  # the classic default: tau = 1/(0.05/(1-0.9)·5e-4) = 4000 steps
    ("sgd-nesterov", None, 0.05, 5e-4),
    ("sgd", "decoupled", 0.05, 5e-3),  # SGDW shrinks by lr·lambda: 1/(0.05·5e-3) = 4000
    ("adamw", None, 1e-3, 0.25),  # 1/(1e-3·0.25) = 4000 steps
    ("adam", None, 1e-3, 1e-4),  # Adam + L2: no timescale, the conventional value
])
def test_lr_and_lambda_defaults_follow_the_optimizer(optimizer: str, mode: str | None,
                                                     lr: float, lam: float) -> None:
    config, notes = optimizer_defaults(TrainConfig(optimizer=optimizer, decay_mode=mode))
    assert config.lr == pytest.approx(lr) and config.weight_decay == pytest.approx(lam)
    assert len(notes) == 2 and notes[0].startswith(f"lr {lr:g}")
    if not (optimizer == "adam"):
        used = mode or ("decoupled" if optimizer == "adamw" else "coupled")
        assert tau_for_lambda(config.weight_decay, 1, optimizer, used, config.lr,
                              0.9) == pytest.approx(4000)


def test_an_explicit_lr_keeps_the_timescale_and_explicit_values_win() -> None:
    config, notes = optimizer_defaults(TrainConfig(optimizer="adamw", lr=2e-3))
    assert config.weight_decay == pytest.approx(0.125)  # 1/(2e-3·0.125) = 4000 steps
    assert [n.split()[0] for n in notes] == ["lambda"]
    config, notes = optimizer_defaults(TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.0))
    assert (config.lr, config.weight_decay, notes) == (2e-3, 0.0, [])


def test_an_adamw_run_without_lr_prints_and_stores_adam_scale_defaults(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", SYN, "--optimizer", "adamw", "--steps", "1",
                 "--batch-size", "4", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "default lr 0.001: the Adam-scale default for adamw" in err
    assert "default lambda 0.25" in err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["lr"], saved["weight_decay"]) == (0.001, 0.25)


# ---------------------------------------------------------------- loss from the class shares

def _data(masks: list[torch.Tensor], names: list[str]) -> SegData:
    images = [torch.zeros(3, *m.shape, dtype=torch.uint8) for m in masks]
    split = SegSplit(images, masks, [f"i{k}" for k in range(len(masks))])
    return SegData(DatasetInfo("t", len(names), names, [(0, 0, 0)] * len(names)), split, split)


def test_a_rare_class_gets_ce_plus_dice_and_balanced_data_ce() -> None:
    thin = torch.zeros(10, 10, dtype=torch.uint8)
    thin[0, :4] = 1  # 4 of 100 labelled pixels: 4% < 5%
    thin[9, :] = 255  # ignore pixels do not count: 4 of 90
    config, notes = resolve_defaults(TrainConfig(), _data([thin], ["bg", "crack"]), 1)
    assert config.loss == "ce+dice"
    assert any("crack, is 4.44% of the labelled training pixels" in n for n in notes)
    half = torch.zeros(10, 10, dtype=torch.uint8)
    half[:5] = 1
    assert resolve_defaults(TrainConfig(), _data([half], ["bg", "fg"]), 1)[0].loss == "ce"
    given = resolve_defaults(TrainConfig(loss="focal"), _data([thin], ["bg", "crack"]), 1)
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
    config, _ = resolve_defaults(TrainConfig(encoder_weights="imagenet", loss="ce"), data, 1)
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
