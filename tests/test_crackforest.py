"""CrackForest from ../shared: the real thin-foreground data the defaults were measured on.

Slow (about 20 s): it decodes the 118 images, checks them and the data-fitted defaults against
numpy on the same files, then trains a few steps and scores the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdecay.config import TrainConfig, load_config
from segdecay.data import load_dataset
from segdecay.runs import evaluate_run
from segdecay.training import Log, train
from segdecay.training.defaults import resolve_defaults

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "crackforest"
SPEC = f"folder:{ROOT}"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    if not (ROOT / "train" / "images").is_dir():
        pytest.skip(f"CrackForest not found at {ROOT} (../shared/data/crackforest)")
    return load_dataset(SPEC)


def _numpy_train_facts() -> tuple[float, np.ndarray, np.ndarray]:
    """Foreground share and per-channel mean/std of the training files, read with PIL."""
    masks = [np.asarray(Image.open(p)) for p in sorted((ROOT / "train/masks").glob("*.png"))]
    images = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255
              for p in sorted((ROOT / "train/images").glob("*.jpg"))]
    pixels = np.concatenate([x.reshape(-1, 3) for x in images])
    share = sum(int((m == 255).sum()) for m in masks) / sum(m.size for m in masks)
    return share, pixels.mean(0), pixels.std(0)


def test_crackforest_loads_as_a_binary_folder_with_fixed_splits(data):
    assert (len(data.train), len(data.val), len(data.test)) == (78, 20, 20)
    assert data.info.num_classes == 2
    for split in (data.train, data.val, data.test):
        assert split.uniform_size() == (320, 480)
        assert {int(v) for m in split.masks for v in m.unique()} <= {0, 1}


def test_defaults_on_crackforest_match_numpy_and_pick_a_foreground_loss(data):
    """1.6% crack pixels (the dataset README's figure) is under the 5% threshold: ce+dice;
    input statistics are the training pixels' own, to float64 precision."""
    share, mean, std = _numpy_train_facts()
    assert 0.01 < share < 0.02
    config, notes = resolve_defaults(TrainConfig(data=SPEC), data)
    assert config.loss == "ce+dice"
    # cracks have no up and down; two classes take no class weights
    assert (config.augment, config.class_weights, config.decision) == ("d4", "none",
                                                                       "adjusted")
    assert any(f"{100 * share:.2f}%" in line for line in notes)
    assert config.input_mean == pytest.approx(mean.tolist(), abs=1e-9)
    assert config.input_std == pytest.approx(std.tolist(), abs=1e-9)


def test_a_short_d4_run_stores_its_statistics_and_scores_the_crack_class(data, tmp_path):
    config = TrainConfig(data=SPEC, steps=3, batch_size=2, crop=[64, 64], augment="d4",
                         optimizer="adamw", device="cpu", tta="none")
    summary = train(config, tmp_path / "run", log=Log(quiet=True), data=data)
    assert summary["status"] == "completed"
    stored = load_config(tmp_path / "run" / "config.yaml")
    _, mean, _ = _numpy_train_facts()
    assert stored.input_mean == pytest.approx(mean.tolist(), abs=1e-9)
    assert stored.lr == 1e-3 and stored.loss == "ce+dice"
    result = evaluate_run(tmp_path / "run", split="test", checkpoint="last", quiet=True)
    assert result["split"] == "test" and len(result["iou"]) == 2
    # every pixel of the 20 whole 320x480 test masks is scored, at label resolution
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 20 * 320 * 480
    truth = sum(int((m == 1).sum()) for m in data.test.masks)
    assert confusion[1].sum() == truth
