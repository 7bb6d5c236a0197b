"""The first decode streams into the cache files: same data as an in-memory decode, no memory
check (the data never has to fit), and a clean fallback when the cache folder cannot take it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segdecay.data.cache as cache_module
from segdecay.data import IGNORE_INDEX, SegData, load_dataset
from segdecay.data.cache import cache_root
from segdecay.errors import UserError
from tests.test_data_camvid import make_camvid


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rng_image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def index_masks_mixed_sizes(root: Path) -> str:
    """Index masks, images of three sizes, a seeded hold-out for val."""
    for i in range(7):
        h, w = (6, 8) if i % 3 == 0 else (5, 9) if i % 3 == 1 else (7, 7)
        _save(root / "images" / f"im{i}.png", _rng_image(i, h, w))
        mask = np.random.default_rng(50 + i).integers(0, 4, (h, w), dtype=np.uint8)
        mask[0, 0] = IGNORE_INDEX
        _save(root / "masks" / f"im{i}.png", mask)
    return f"folder:{root}"


def binary_masks_with_ignore_and_test(root: Path) -> str:
    """0/255 masks (binary), an ignore region, train/val/test folders."""
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            seed = {"train": 0, "val": 10, "test": 20}[split] + i
            _save(root / split / "images" / f"{split}{i}.png", _rng_image(seed, 6, 8))
            mask = np.where(np.random.default_rng(seed).random((6, 8)) > 0.5, 255, 0)
            _save(root / split / "masks" / f"{split}{i}.png", mask.astype(np.uint8))
    region = np.full((6, 8), 255, np.uint8)
    region[:, :3] = 0
    _save(root / "train" / "ignore" / "train1.png", region)
    return f"folder:{root}"


def rgb_masks_with_palette(root: Path) -> str:
    """RGB masks read through palette.txt, with an ignore colour."""
    (root / "palette.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "palette.txt").write_text("0 0 0 bg\n255 0 0 road\n0 128 255 car\n"
                                      "ignore 255 255 255\n")
    lut = np.array([(0, 0, 0), (255, 0, 0), (0, 128, 255), (255, 255, 255)], np.uint8)
    for i in range(5):
        _save(root / "images" / f"im{i}.png", _rng_image(i, 6, 8))
        idx = np.random.default_rng(i + 9).integers(0, 4, (6, 8))
        _save(root / "masks" / f"im{i}.png", lut[idx])
    return f"folder:{root}"


def camvid(root: Path) -> str:
    make_camvid(root)
    return f"camvid:{root}"


LAYOUTS = [index_masks_mixed_sizes, binary_masks_with_ignore_and_test, rgb_masks_with_palette,
           camvid]


def in_memory(spec: str, monkeypatch) -> SegData:
    with monkeypatch.context() as m:
        m.setenv("SEGDECAY_CACHE", "off")
        return load_dataset(spec)


def assert_same(a: SegData, b: SegData) -> None:
    assert vars(a.info) == vars(b.info)
    for name in ("train", "val", "test"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is None:
            continue
        assert x.names == y.names and x.groups == y.groups, name
        assert len(x.images) == len(y.images) and len(x.masks) == len(y.masks)
        for p, q in zip(x.images + x.masks, y.images + y.masks, strict=True):
            assert p.dtype == q.dtype == torch.uint8 and torch.equal(p, q), name


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_streamed_first_decode_equals_in_memory_decode(layout, tmp_path, monkeypatch) -> None:
    spec = layout(tmp_path / "ds")
    streamed = load_dataset(spec)
    entries = list(cache_root().iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # stored, no temp left
    reference = in_memory(spec, monkeypatch)
    assert_same(streamed, reference)
    assert_same(load_dataset(spec), reference)  # the cache hit


def test_streaming_needs_no_room_in_memory(tmp_path, monkeypatch) -> None:
    spec = index_masks_mixed_sizes(tmp_path / "ds")
    monkeypatch.setenv("SEGDECAY_MEMORY_LIMIT", "1K")  # far below the decoded size
    with pytest.raises(UserError, match="memory"):
        in_memory(spec, monkeypatch)
    data = load_dataset(spec)  # decoded into the cache files instead
    assert len(data.train) + len(data.val) == 7


def test_a_cache_folder_without_room_falls_back_to_memory(tmp_path, monkeypatch) -> None:
    spec = rgb_masks_with_palette(tmp_path / "ds")

    class Full:
        free = 0

    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: Full)
    data = load_dataset(spec)
    assert_same(data, in_memory(spec, monkeypatch))
    assert not [p for p in cache_root().iterdir() if p.name.startswith(".")]


def test_a_problem_found_in_the_second_pass_leaves_nothing(tmp_path, monkeypatch) -> None:
    root = tmp_path / "ds"
    index_masks_mixed_sizes(root)
    (root / "classes.txt").write_text("a\nb\n")  # masks hold 0..3: out of range
    with pytest.raises(UserError, match=r"label value\(s\) 2, 3 but there are 2 classes"):
        load_dataset(f"folder:{root}")
    assert not any(cache_root().iterdir())
