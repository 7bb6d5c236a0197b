"""The decoded-dataset cache: decode and check once, memory-map afterwards, never go stale."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segdecay.data.folder as folder_module
from segdecay.data import load_dataset
from segdecay.data.base import SegData
from segdecay.data.cache import cache_root, fingerprint
from segdecay.errors import UserError


def _write(root: Path, n: int = 6, h: int = 8, w: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        for sub, arr in (("images", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                         ("masks", rng.integers(0, 3, (h, w), dtype=np.uint8))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"im{i}.png")


def _count_decodes(monkeypatch) -> list[int]:
    calls = [0]
    real = folder_module.load_folder

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(folder_module, "load_folder", counting)
    return calls


def _same(a, b) -> bool:
    def equal(xs, ys) -> bool:
        return len(xs) == len(ys) and all(torch.equal(p, q) for p, q in zip(xs, ys, strict=True))

    return all(x.names == y.names and equal(x.images, y.images) and equal(x.masks, y.masks)
               for x, y in ((a.train, b.train), (a.val, b.val)))


def test_second_load_is_served_from_the_cache_and_equal(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "ds")
    calls = _count_decodes(monkeypatch)
    first = load_dataset(f"folder:{tmp_path / 'ds'}")
    second = load_dataset(f"folder:{tmp_path / 'ds'}")
    assert calls[0] == 1
    assert _same(first, second)
    assert second.info.class_names == first.info.class_names
    stack = second.train.stacked()
    assert stack is not None and stack[0].shape == (len(second.train), 3, 8, 10)
    assert len(list(cache_root().iterdir())) == 1


def test_a_touched_or_added_file_means_a_full_decode(tmp_path, monkeypatch) -> None:
    root = tmp_path / "ds"
    _write(root)
    calls = _count_decodes(monkeypatch)
    load_dataset(f"folder:{root}")
    mask = root / "masks" / "im0.png"
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    load_dataset(f"folder:{root}")
    assert calls[0] == 2
    Image.fromarray(np.full((8, 10), 7, np.uint8)).save(mask)  # now a label out of range?
    (root / "classes.txt").write_text("a\nb\nc\n")
    with pytest.raises(UserError, match="im0"):
        load_dataset(f"folder:{root}")
    assert calls[0] == 3


def test_options_are_part_of_the_key(tmp_path) -> None:
    _write(tmp_path / "ds")
    a = fingerprint(tmp_path / "ds", "folder", {"seed": 0})
    assert a == fingerprint(tmp_path / "ds", "folder", {"seed": 0})
    assert a != fingerprint(tmp_path / "ds", "folder", {"seed": 1})
    assert load_dataset(f"folder:{tmp_path / 'ds'}", seed=0).val.names != \
        load_dataset(f"folder:{tmp_path / 'ds'}", seed=1).val.names


def _in_memory(spec: str, monkeypatch) -> SegData:
    """The dataset decoded into memory, owing nothing to the cache files."""
    with monkeypatch.context() as m:
        m.setenv("SEGDECAY_CACHE", "off")
        return load_dataset(spec)


def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "ds")
    load_dataset(f"folder:{tmp_path / 'ds'}")
    first = _in_memory(f"folder:{tmp_path / 'ds'}", monkeypatch)
    (entry,) = cache_root().iterdir()
    blob = entry / "train.masks.u8"
    blob.write_bytes(blob.read_bytes()[:-5])  # truncated
    calls = _count_decodes(monkeypatch)
    assert _same(first, load_dataset(f"folder:{tmp_path / 'ds'}"))
    assert calls[0] == 1
    masks = entry / "val.masks.u8"
    masks.write_bytes(bytes([200]) * masks.stat().st_size)  # labels out of range
    assert _same(first, load_dataset(f"folder:{tmp_path / 'ds'}"))
    assert calls[0] == 2


def test_cache_off_and_broken_data_leave_nothing(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "ds")
    (tmp_path / "ds" / "masks" / "im1.png").unlink()
    with pytest.raises(UserError, match="im1"):
        load_dataset(f"folder:{tmp_path / 'ds'}")
    assert not any(cache_root().iterdir())
    monkeypatch.setenv("SEGDECAY_CACHE", "off")
    assert cache_root() is None
    _write(tmp_path / "ok")
    calls = _count_decodes(monkeypatch)
    for _ in range(2):  # cache off: each load decodes the folder again, and stores nothing
        data = load_dataset(f"folder:{tmp_path / 'ok'}")
        assert len(data.train) + len(data.val) == 6
    assert calls == [2]  # with the cache on, the second load would be a hit
