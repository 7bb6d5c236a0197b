"""How a folder's mask values are read: binary 0/255, class ids, or refused when binary
masks carry stray values (an editor's touch, JPEG compression) that would otherwise turn the
foreground into an ignored label."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from segdecay.cli import main
from segdecay.data import load_dataset
from segdecay.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402


def _folder(root: Path, masks: list[np.ndarray], suffix: str = ".png") -> Path:
    """train/images + train/masks (and a val split of the first two) from ``masks``."""
    for split, items in (("train", masks), ("val", masks[:2])):
        for i, mask in enumerate(items):
            image = np.stack([mask] * 3, axis=-1).astype(np.uint8)
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "images" / f"m{i}.png")
            Image.fromarray(mask.astype(np.uint8)).save(
                root / split / "masks" / f"m{i}{suffix}", quality=75)
    return root


def _binary_masks(n: int = 10) -> list[np.ndarray]:
    masks = []
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        m[4 + i: 12 + i, 6:20] = 255
        masks.append(m)
    return masks


def test_clean_binary_masks_are_read_as_two_classes(tmp_path: Path) -> None:
    data = load_dataset(f"folder:{_folder(tmp_path / 'd', _binary_masks())}")
    assert data.info.num_classes == 2 and data.info.mask_encoding == "binary"
    assert int(data.train.masks[0].max()) == 1


def test_one_stray_value_is_refused_with_the_file_and_value(tmp_path: Path) -> None:
    masks = _binary_masks()
    masks[3][0, 0] = 7
    root = _folder(tmp_path / "d", masks)
    with pytest.raises(UserError) as err:
        load_dataset(f"folder:{root}")
    text = str(err.value)
    assert "m3.png: 7" in text and "--mask-encoding binary" in text
    assert "the foreground would be ignored" in text
    binary = load_dataset(f"folder:{root}", mask_encoding="binary")
    assert binary.info.num_classes == 2
    assert int(binary.train.masks[binary.train.names.index("m3")][0, 0]) == 0  # 7 < 128
    index = load_dataset(f"folder:{root}", mask_encoding="index")
    assert index.info.num_classes == 8 and index.info.mask_encoding == "index"


def test_jpeg_masks_are_refused_even_when_every_mask_has_noise(tmp_path: Path) -> None:
    masks = _binary_masks()
    for m in masks:  # a ragged edge, so compression leaves values between 0 and 255
        m[::3, 20] = 255
    root = _folder(tmp_path / "d", masks, suffix=".jpg")
    with pytest.raises(UserError, match=r"are JPEG, whose compression changes label values"):
        load_dataset(f"folder:{root}")
    data = load_dataset(f"folder:{root}", mask_encoding="binary")
    assert data.info.num_classes == 2


def test_jpeg_binary_masks_without_an_exact_255_are_refused_too(tmp_path: Path) -> None:
    """A foreground saved at 230 and compressed holds values near 230, none of them 255:
    read as class ids it would make some 230 classes."""
    masks = [np.where(m > 0, 230, 0).astype(np.uint8) for m in _binary_masks()]
    root = _folder(tmp_path / "d", masks, suffix=".jpg")
    values = set()
    for path in (root / "train" / "masks").iterdir():
        values |= set(np.unique(np.asarray(Image.open(path))).tolist())
    assert 255 not in values and max(values) >= 128  # the case, as the files hold it
    with pytest.raises(UserError, match=r"are JPEG, whose compression changes label values"):
        load_dataset(f"folder:{root}")
    data = load_dataset(f"folder:{root}", mask_encoding="binary")
    assert data.info.num_classes == 2
    assert int(data.train.masks[0].max()) == 1


def test_class_ids_with_255_as_ignore_are_not_mistaken_for_binary(tmp_path: Path) -> None:
    masks = []
    for i in range(10):
        m = np.full((32, 32), i % 3, np.uint8)
        m[0, :] = 255  # ignore border in every mask; classes 1 and 2 in most
        masks.append(m)
    data = load_dataset(f"folder:{_folder(tmp_path / 'd', masks)}")
    assert data.info.num_classes == 3 and data.info.mask_encoding == "index"


@pytest.mark.slow
def test_check_data_names_the_stray_files_and_exits_2(tmp_path: Path) -> None:
    masks = _binary_masks()
    masks[5][1, 1] = 7
    root = _folder(tmp_path / "d", masks)
    proc = subprocess.run([sys.executable, "-m", "segdecay", "check-data", f"folder:{root}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "m5.png: 7" in proc.stdout and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "segdecay", "check-data", f"folder:{root}",
                           "--mask-encoding", "binary"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_train_refuses_and_records_the_reading_it_was_told(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = _binary_masks()
    masks[2][0, 0] = 7
    root = _folder(tmp_path / "d", masks)
    assert main(["train", "--data", f"folder:{root}", "--steps", "1", "--out",
                 str(tmp_path / "refused")]) == 2
    assert "m2.png: 7" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "config.yaml").exists()
    run = tmp_path / "run"
    assert main(["train", "--data", f"folder:{root}", "--steps", "1", "--mask-encoding",
                 "binary", "--tta", "none", "--encoder", SMALL_ENCODER, "--out",
                 str(run)]) == 0
    assert "default mask encoding binary: values >= 128 are class 1 of 2 (as --mask-encoding " \
        "says)" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["mask_encoding"] == "binary"
