"""Decoded datasets kept on disk, so a folder is decoded and fully checked once.

The key is a SHA-256 of the loader, its options, and every file's relative path, size and
modification time. A hit is the fast path: instead of decoding and checking every file, the
uint8 arrays are memory-mapped (pages are read on demand, so a dataset larger than memory
trains from the page cache) and a sample of masks is checked for labels out of range. Any
added, removed, resized or touched file changes the key, which means a full decode and scan.
Only a clean dataset is cached: a problem found by the loader raises before anything is kept.

``SEGDECAY_CACHE`` names the cache folder (default ``~/.cache/segdecay``); ``off`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit

FORMAT = 1
SAMPLE_MASKS = 8  # masks re-checked on a hit (the fast path)


def cache_root() -> Path | None:
    """Where decoded datasets live, or None when caching is off."""
    where = os.environ.get("SEGDECAY_CACHE", "")
    if where.lower() in ("off", "0", "none", "false"):
        return None
    return Path(where).expanduser() if where else Path.home() / ".cache" / "segdecay"


def fingerprint(root: Path, kind: str, options: dict[str, Any]) -> str:
    """SHA-256 of the loader, its options, and (path, size, mtime) of every file under root."""
    digest = hashlib.sha256(json.dumps([FORMAT, kind, options], sort_keys=True).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # a dangling link: the loader reports it
                st = None
            rel = path.relative_to(root).as_posix()
            digest.update(f"{rel}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n"
                          .encode())
    return digest.hexdigest()


def _split_meta(split: SegSplit) -> dict[str, Any]:
    return {"names": list(split.names), "groups": list(split.groups),
            "shapes": [list(img.shape[-2:]) for img in split.images]}


def _write_split(folder: Path, name: str, split: SegSplit) -> None:
    with open(folder / f"{name}.images.u8", "wb") as f:
        for img in split.images:
            f.write(img.contiguous().numpy().tobytes())
    with open(folder / f"{name}.masks.u8", "wb") as f:
        for mask in split.masks:
            f.write(mask.contiguous().numpy().tobytes())


def save(key: str, data: SegData) -> None:
    """Write ``data`` under ``key`` atomically (a folder renamed into place); best effort."""
    root = cache_root()
    if root is None:
        return
    target = root / key
    if target.exists():
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    except OSError:
        return  # a read-only home must not stop training
    try:
        splits = {"train": data.train, "val": data.val, "test": data.test}
        meta = {"format": FORMAT, "info": vars(data.info),
                "splits": {n: _split_meta(s) for n, s in splits.items() if s is not None}}
        for name, split in splits.items():
            if split is not None:
                _write_split(tmp, name, split)
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _map(path: Path, size: int) -> torch.Tensor:
    if size == 0:
        return torch.zeros(0, dtype=torch.uint8)
    # Copy-on-write mapping: tensors are writable views, and nothing goes back to the file.
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=(size,)))


def _read_split(folder: Path, name: str, meta: dict[str, Any]) -> SegSplit:
    shapes = [tuple(s) for s in meta["shapes"]]
    n_pix = [h * w for h, w in shapes]
    images = _map(folder / f"{name}.images.u8", 3 * sum(n_pix))
    masks = _map(folder / f"{name}.masks.u8", sum(n_pix))
    split = SegSplit(images=[], masks=[], names=list(meta["names"]),
                     groups=list(meta["groups"]))
    at = 0
    for (h, w), n in zip(shapes, n_pix, strict=True):
        split.images.append(images[3 * at:3 * (at + n)].view(3, h, w))
        split.masks.append(masks[at:at + n].view(h, w))
        at += n
    if len(set(shapes)) == 1:  # one mapping, no stacking copy
        split._stack = (images.view(len(shapes), 3, *shapes[0]),
                        masks.view(len(shapes), *shapes[0]))
    return split


def _labels_ok(split: SegSplit, num_classes: int) -> bool:
    """Fast-path value check: a sample of masks holds only classes and the ignore index."""
    step = max(1, len(split) // SAMPLE_MASKS)
    for mask in split.masks[::step]:
        values = torch.unique(mask)
        if bool(((values >= num_classes) & (values != IGNORE_INDEX)).any()):
            return False
    return True


def load(key: str) -> SegData | None:
    """The cached dataset under ``key``, or None (missing, unreadable or failing the sample)."""
    root = cache_root()
    folder = root / key if root is not None else None
    if folder is None or not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            return None
        info = DatasetInfo(**{**meta["info"],
                              "palette": [tuple(c) for c in meta["info"]["palette"]]})
        splits = {n: _read_split(folder, n, m) for n, m in meta["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        splits = None  # truncated or foreign files: decode again
    if splits is None or not all(_labels_ok(s, info.num_classes) for s in splits.values()):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return SegData(info=info, train=splits["train"], val=splits["val"],
                   test=splits.get("test"))


def cached(root: Path, kind: str, options: dict[str, Any],
           loader: Callable[[], SegData]) -> SegData:
    """``loader()`` through the cache: decode and check once, memory-map afterwards."""
    if cache_root() is None:
        return loader()
    key = fingerprint(root, kind, options)
    data = load(key)
    if data is None:
        data = loader()
        save(key, data)
    return data
