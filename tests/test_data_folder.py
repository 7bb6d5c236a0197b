"""The generic images/masks folder loader, the image/mask readers and the dataset spec parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdecay.data import IGNORE_INDEX, SegData, load_dataset, parse_value
from segdecay.data.folder import load_folder
from segdecay.data.imageio import read_image, read_mask_raw, write_png
from segdecay.errors import UserError

H, W = 6, 8


def _img(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _index_mask(seed: int, n_classes: int = 3) -> np.ndarray:
    m = np.random.default_rng(seed + 100).integers(0, n_classes, (H, W), dtype=np.uint8)
    m[0, 0] = n_classes - 1  # every mask reaches the top class, so max+1 == n_classes
    return m


def make_folder(
    root: Path, n: int = 5, sub: str = "", masks: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Write ``n`` images (png) and index masks under ``root/sub``; returns the masks."""
    masks = masks if masks is not None else [_index_mask(i) for i in range(n)]
    base = root / sub if sub else root
    for i, m in enumerate(masks):
        _save(base / "images" / f"im{i:02d}.png", _img(i))
        _save(base / "masks" / f"im{i:02d}.png", m)
    return masks


def _all(split) -> dict[str, torch.Tensor]:
    return dict(zip(split.names, split.masks, strict=True))


# ---------------------------------------------------------------- imageio


def test_read_image_converts_gray_and_rgba(tmp_path: Path) -> None:
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    _save(tmp_path / "g.png", gray)
    t = read_image(tmp_path / "g.png")
    assert t.dtype == torch.uint8 and t.shape == (3, H, W)
    assert torch.equal(t[0], torch.from_numpy(gray)) and torch.equal(t[0], t[2])
    rgba = np.dstack([_img(1), np.full((H, W), 7, np.uint8)])
    _save(tmp_path / "a.png", rgba)
    t = read_image(tmp_path / "a.png")
    assert t.shape == (3, H, W)
    assert torch.equal(t.permute(1, 2, 0), torch.from_numpy(_img(1)))


def test_read_mask_raw_returns_palette_indices(tmp_path: Path) -> None:
    idx = _index_mask(0, 4)
    img = Image.frombytes("P", (W, H), idx.tobytes())
    img.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200, 50, 50, 50] + [0] * 756)
    img.save(tmp_path / "p.png")
    raw = read_mask_raw(tmp_path / "p.png")
    assert raw.ndim == 2 and np.array_equal(raw, idx)
    _save(tmp_path / "rgb.png", _img(3))
    assert read_mask_raw(tmp_path / "rgb.png").shape == (H, W, 3)


def test_write_png_roundtrip_and_no_temp_left(tmp_path: Path) -> None:
    arr = _index_mask(2, 5)
    write_png(tmp_path / "out" / "m.png", arr)
    assert np.array_equal(read_mask_raw(tmp_path / "out" / "m.png"), arr)
    write_png(tmp_path / "out" / "i.png", torch.from_numpy(_img(4)).permute(2, 0, 1))
    assert np.array_equal(read_image(tmp_path / "out" / "i.png").permute(1, 2, 0).numpy(), _img(4))
    write_png(tmp_path / "out" / "p.png", arr, palette=[(255, 0, 0)] * 5)
    assert np.array_equal(read_mask_raw(tmp_path / "out" / "p.png"), arr)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i.png", "m.png", "p.png"]


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\0\0\0"])
def test_unreadable_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken_file.png"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="broken_file.png"):
        read_image(bad)
    with pytest.raises(UserError, match="broken_file.png"):
        read_mask_raw(bad)


def test_truncated_png_is_user_error(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = _save(tmp_path / "full.png", noise)
    data = good.read_bytes()
    (tmp_path / "cut_short.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut_short.png"):
        read_image(tmp_path / "cut_short.png")


def test_missing_file_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere.png"):
        read_image(tmp_path / "nowhere.png")


# ---------------------------------------------------------------- mask formats


def test_index_masks_load_with_values_and_default_names(tmp_path: Path) -> None:
    masks = [_index_mask(i) for i in range(3)]
    masks[1][2, 3] = IGNORE_INDEX
    make_folder(tmp_path, sub="train", masks=masks)
    make_folder(tmp_path, n=2, sub="val")
    data = load_folder(tmp_path)
    assert isinstance(data, SegData)
    assert data.info.num_classes == 3
    assert data.info.class_names == ["class0", "class1", "class2"]
    assert len(data.info.palette) == 3 and len(set(data.info.palette)) == 3
    got = _all(data.train)
    for i, m in enumerate(masks):
        assert got[f"im{i:02d}"].dtype == torch.uint8
        assert np.array_equal(got[f"im{i:02d}"].numpy(), m)
    assert data.train.images[0].shape == (3, H, W)
    assert torch.equal(data.train.images[0].permute(1, 2, 0), torch.from_numpy(_img(0)))
    assert data.train.groups == data.train.names


def test_binary_masks_map_255_to_one(tmp_path: Path) -> None:
    masks = [np.where(_index_mask(i, 2) == 1, 255, 0).astype(np.uint8) for i in range(4)]
    make_folder(tmp_path, masks=masks)
    data = load_folder(tmp_path, val_fraction=0.25)
    assert data.info.num_classes == 2
    got = {**_all(data.train), **_all(data.val)}
    for i, m in enumerate(masks):
        assert np.array_equal(got[f"im{i:02d}"].numpy(), (m == 255).astype(np.uint8))


def test_binary_not_applied_when_more_classes_requested(tmp_path: Path) -> None:
    masks = [np.where(_index_mask(i, 2) == 1, 255, 0).astype(np.uint8) for i in range(3)]
    make_folder(tmp_path, masks=masks)
    data = load_folder(tmp_path, num_classes=3)
    m = data.train.masks[0].numpy()
    assert set(np.unique(m).tolist()) <= {0, IGNORE_INDEX} and IGNORE_INDEX in np.unique(m)


def test_rgb_masks_with_palette_and_ignore_colour(tmp_path: Path) -> None:
    colours = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]
    (tmp_path / "palette.txt").write_text(
        "# colours\n0 0 0 background\n255,0,0,road\n0 128 255\nignore 255 255 255\n"
    )
    idx = [_index_mask(i, 3) for i in range(3)]
    idx[0][1, 1] = IGNORE_INDEX
    lut = np.array(colours + [(255, 255, 255)], dtype=np.uint8)
    rgb = [lut[np.where(m == IGNORE_INDEX, 3, m)] for m in idx]
    for i, m in enumerate(rgb):
        _save(tmp_path / "images" / f"im{i:02d}.jpg", _img(i))
        _save(tmp_path / "masks" / f"im{i:02d}.png", m)
    data = load_folder(tmp_path, val_fraction=0.3)
    assert data.info.class_names == ["background", "road", "class2"]
    assert data.info.palette == colours
    got = {**_all(data.train), **_all(data.val)}
    for i, m in enumerate(idx):
        assert np.array_equal(got[f"im{i:02d}"].numpy(), m)


def test_rgb_mask_colour_not_in_palette(tmp_path: Path) -> None:
    (tmp_path / "palette.txt").write_text("0 0 0\n255 0 0\n")
    make_folder(tmp_path, n=2, masks=[np.zeros((H, W, 3), np.uint8)] * 2)
    odd = np.zeros((H, W, 3), np.uint8)
    odd[2, 2] = (1, 2, 3)
    _save(tmp_path / "masks" / "im01.png", odd)
    with pytest.raises(UserError, match=r"im01\.png.*\(1, 2, 3\)"):
        load_folder(tmp_path)


def test_rgb_mask_without_palette(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2, masks=[_img(7), _img(8)])
    with pytest.raises(UserError, match=r"im00\.png.*palette\.txt"):
        load_folder(tmp_path)


def test_classes_txt_gives_names_and_count(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3, masks=[_index_mask(i, 2) for i in range(3)])
    (tmp_path / "classes.txt").write_text("sky\nground\nwater\n")
    data = load_folder(tmp_path)
    assert data.info.num_classes == 3 and data.info.class_names == ["sky", "ground", "water"]
    data = load_folder(tmp_path, class_names=["a", "b"])
    assert data.info.class_names == ["a", "b"]


def test_label_out_of_range_names_file_value_and_count(tmp_path: Path) -> None:
    masks = [_index_mask(i, 3) for i in range(3)]
    masks[2][0, 1] = 7
    make_folder(tmp_path, masks=masks)
    with pytest.raises(UserError, match=r"im02\.png.* 7 .*3 classes"):
        load_folder(tmp_path, num_classes=3)


def test_ignore_folder_maps_zero_region_to_255(tmp_path: Path) -> None:
    masks = make_folder(tmp_path, n=3, sub="train")
    make_folder(tmp_path, n=1, sub="val")
    region = np.full((H, W), 255, np.uint8)
    region[:, :2] = 0
    _save(tmp_path / "train" / "ignore" / "im01.png", region)
    data = load_folder(tmp_path)
    got = _all(data.train)
    expected = masks[1].copy()
    expected[:, :2] = IGNORE_INDEX
    assert np.array_equal(got["im01"].numpy(), expected)
    assert np.array_equal(got["im00"].numpy(), masks[0])  # no ignore file: untouched


# ---------------------------------------------------------------- splits


def test_holdout_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    make_folder(tmp_path, n=10)
    a = load_folder(tmp_path, val_fraction=0.3, seed=1)
    b = load_folder(tmp_path, val_fraction=0.3, seed=1)
    assert a.train.names == b.train.names and a.val.names == b.val.names
    assert len(a.val) == 3 and len(a.train) == 7
    assert not set(a.train.names) & set(a.val.names)
    assert set(a.train.names) | set(a.val.names) == {f"im{i:02d}" for i in range(10)}
    others = [load_folder(tmp_path, val_fraction=0.3, seed=s).val.names for s in range(2, 6)]
    assert any(v != a.val.names for v in others)
    assert a.test is None


def test_holdout_keeps_at_least_one_val_image(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    data = load_folder(tmp_path, val_fraction=0.01)
    assert len(data.val) == 1 and len(data.train) == 2


def test_provided_val_split_under_root_images(tmp_path: Path) -> None:
    make_folder(tmp_path, n=4)
    _save(tmp_path / "val" / "images" / "v0.png", _img(20))
    _save(tmp_path / "val" / "masks" / "v0.png", _index_mask(20))
    data = load_folder(tmp_path, val_fraction=0.5)
    assert len(data.train) == 4 and data.val.names == ["v0"]


def test_provided_train_val_test_split(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3, sub="train")
    make_folder(tmp_path, n=2, sub="val")
    make_folder(tmp_path, n=2, sub="test")
    data = load_folder(tmp_path)
    assert (len(data.train), len(data.val)) == (3, 2)
    assert data.test is not None and len(data.test) == 2


def test_load_dataset_folder_spec(tmp_path: Path) -> None:
    make_folder(tmp_path, n=4)
    data = load_dataset(f"folder:{tmp_path}", seed=3, val_fraction=0.5)
    assert len(data.train) == 2 and len(data.val) == 2


# ---------------------------------------------------------------- errors


def test_image_without_mask(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    _save(tmp_path / "images" / "lonely.jpg", _img(9))
    with pytest.raises(UserError, match=r"lonely\.jpg.*masks[/\\]lonely\.png"):
        load_folder(tmp_path)


def test_mask_without_image(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    _save(tmp_path / "masks" / "orphan.png", _index_mask(9))
    with pytest.raises(UserError, match=r"orphan\.png"):
        load_folder(tmp_path)


def test_mask_size_mismatch_gives_both_sizes(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    _save(tmp_path / "masks" / "im01.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(UserError, match=rf"im01\.png.*{H + 1}x{W}.*{H}x{W}"):
        load_folder(tmp_path)


def test_unreadable_image_in_folder(tmp_path: Path) -> None:
    make_folder(tmp_path, n=3)
    (tmp_path / "images" / "im02.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"im02\.png"):
        load_folder(tmp_path)


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    # the path is the tmp folder's, whose name holds "images" too: match the words after it
    with pytest.raises(UserError, match=r"/images \(train split\) holds no images \(looked "
                                        r"for \.png"):
        load_folder(tmp_path)


def test_nonexistent_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no_such_dataset"):
        load_folder(tmp_path / "no_such_dataset")


def test_root_without_images_folder(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    with pytest.raises(UserError, match=r"has no images/ or train/images/ folder; expected "
                                        r"ROOT/images \+ ROOT/masks"):
        load_folder(tmp_path)


def test_bad_palette_line_names_palette_file(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2)
    (tmp_path / "palette.txt").write_text("0 0 0\nred green blue\n")
    with pytest.raises(UserError, match=r"palette\.txt, line 2"):
        load_folder(tmp_path)


@pytest.mark.parametrize("spec", ["imagenet:/x", "camvid:", "folder", "nonsense"])
def test_load_dataset_bad_spec_lists_forms(spec: str) -> None:
    with pytest.raises(UserError, match=r"camvid:PATH.*folder:PATH"):
        load_dataset(spec)


def test_load_dataset_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not_there"):
        load_dataset(f"folder:{tmp_path / 'not_there'}")


def test_load_dataset_synthetic_bad_key() -> None:
    with pytest.raises(UserError, match="bogus_key"):
        load_dataset("synthetic:bogus_key=3")


def test_parse_value() -> None:
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("0.5") == 0.5
    assert parse_value("true") is True
    assert parse_value("abc") == "abc"
