"""The SegNet CamVid loader: void remapping, sequence groups, class info, layout errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdecay.data import IGNORE_INDEX, load_dataset
from segdecay.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, load_camvid
from segdecay.errors import UserError

H, W = 4, 6
REAL_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"

FILES = {
    "train": ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"],
    "val": ["0016E5_07959", "0016E5_07961"],
    "test": ["0001TP_008550", "Seq05VD_f02370"],
}


def _label(seed: int) -> np.ndarray:
    lab = np.random.default_rng(seed).integers(0, 11, (H, W), dtype=np.uint8)
    lab[0, 0] = 11  # one void pixel per map
    return lab


def make_camvid(root: Path) -> dict[str, np.ndarray]:
    """A tiny SegNet-layout CamVid; returns the label map written for each file stem."""
    labels = {}
    for k, (split, stems) in enumerate(FILES.items()):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for j, stem in enumerate(stems):
            seed = 10 * k + j
            rgb = np.random.default_rng(seed + 1000).integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / split / f"{stem}.png")
            labels[stem] = _label(seed)
            Image.fromarray(labels[stem]).save(root / f"{split}annot" / f"{stem}.png")
    return labels


def test_fake_camvid_void_groups_and_classes(tmp_path: Path) -> None:
    labels = make_camvid(tmp_path)
    data = load_camvid(tmp_path)
    assert data.info.num_classes == 11
    assert data.info.class_names == CAMVID_CLASSES
    assert data.info.class_names[0] == "Sky" and data.info.class_names[10] == "Bicyclist"
    assert data.info.palette[3] == (128, 64, 128) == CAMVID_PALETTE[3]
    assert data.test is not None
    for split, stems in FILES.items():
        part = data.split(split)
        assert part.names == sorted(stems)
        assert part.groups == [s.split("_")[0] for s in sorted(stems)]
        for name, mask, image in zip(part.names, part.masks, part.images, strict=True):
            assert mask.dtype == torch.uint8 and image.shape == (3, H, W)
            expected = np.where(labels[name] == 11, IGNORE_INDEX, labels[name])
            assert np.array_equal(mask.numpy(), expected)
            assert mask[0, 0] == IGNORE_INDEX
    assert data.train.groups == ["0001TP", "0006R0", "Seq05VD"]


def test_load_dataset_camvid_spec(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    data = load_dataset(f"camvid:{tmp_path}")
    assert len(data.train) == 3 and len(data.val) == 2
    with pytest.raises(UserError, match="num_classes"):
        load_dataset(f"camvid:{tmp_path}", num_classes=5)


def test_label_above_void_names_file_and_value(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    bad = _label(0)
    bad[1, 1] = 12
    Image.fromarray(bad).save(tmp_path / "valannot" / "0016E5_07961.png")
    with pytest.raises(UserError, match=r"0016E5_07961\.png.*12"):
        load_camvid(tmp_path)


def test_missing_folder_names_folder_and_layout(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    for p in (tmp_path / "valannot").iterdir():
        p.unlink()
    (tmp_path / "valannot").rmdir()
    with pytest.raises(UserError, match=r"valannot.*trainannot"):
        load_camvid(tmp_path)


def test_image_without_label_map(tmp_path: Path) -> None:
    make_camvid(tmp_path)
    (tmp_path / "trainannot" / "0006R0_f00930.png").unlink()
    with pytest.raises(UserError, match=r"0006R0_f00930\.png"):
        load_camvid(tmp_path)


def test_nonexistent_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="camvid_missing"):
        load_camvid(tmp_path / "camvid_missing")


@pytest.mark.slow
def test_real_camvid() -> None:
    if not (REAL_CAMVID / "trainannot").is_dir():
        pytest.skip(f"real CamVid not found at {REAL_CAMVID} (../shared/data/camvid)")
    data = load_camvid(REAL_CAMVID)
    assert data.test is not None
    assert (len(data.train), len(data.val), len(data.test)) == (367, 101, 233)
    for split in (data.train, data.val, data.test):
        assert split.uniform_size() == (360, 480)
        labels = torch.unique(torch.stack(split.masks)).tolist()
        assert IGNORE_INDEX in labels
        assert set(labels) <= set(range(11)) | {IGNORE_INDEX}
        assert set(split.groups) <= {"0001TP", "0006R0", "0016E5", "Seq05VD"}
