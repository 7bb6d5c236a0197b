"""Decoded datasets kept on disk, so a folder is decoded and fully checked once.

The key is a SHA-256 of the loader, its options, and every file's relative path, size and
modification time. A hit is the fast path: instead of decoding and checking every file, the
uint8 arrays are memory-mapped (pages are read on demand, so a dataset larger than memory
trains from the page cache) and a sample of masks is checked for labels out of range. Any
added, removed, resized or touched file changes the key, which means a full decode and scan.
Only a clean dataset is cached: a problem found by the loader raises before anything is kept.

The first decode streams: loaders read every image's size from its header, the cache
preallocates one file per split (:class:`CacheWriter`), and each pair is decoded straight
into its slot, so a dataset larger than memory is decoded once into the page cache and is
memory-mapped from then on. Only when the cache folder cannot be written (read-only, full)
does the loader fall back to decoding into memory, where the memory check applies.

``SEGDECAY_CACHE`` names the cache folder (default ``~/.cache/segdecay``); ``off`` disables it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit

FORMAT = 2
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


def _meta(data: SegData) -> dict[str, Any]:
    """meta.json of a cache entry: format, class info, and each split's names and shapes."""
    splits = {"train": data.train, "val": data.val, "test": data.test}
    return {"format": FORMAT, "info": vars(data.info),
            "splits": {n: _split_meta(s) for n, s in splits.items() if s is not None}}


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
        for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
            if split is not None:
                _write_split(tmp, name, split)
        (tmp / "meta.json").write_text(json.dumps(_meta(data)), encoding="utf-8")
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


class CacheUnavailable(Exception):
    """The cache folder cannot take the dataset (no space, read-only): decode into memory."""


class CacheWriter:
    """Preallocated split files of one dataset, filled pair by pair by a loader's threads.

    Writes are ``pwrite`` calls at each sample's offset (a full disk is an OSError, never a
    SIGBUS from a mapped page), and :meth:`split` maps the finished files copy-on-write.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._shapes: dict[str, list[tuple[int, int]]] = {}
        self._offsets: dict[str, list[int]] = {}
        self._fds: dict[str, tuple[int, int]] = {}

    def allocate(self, split: str, shapes: Sequence[tuple[int, int]]) -> None:
        """Reserve room for ``split``'s samples of these (H, W), in this order."""
        shapes = [(int(h), int(w)) for h, w in shapes]
        offsets, at = [], 0
        for h, w in shapes:
            offsets.append(at)
            at += h * w
        try:
            if shutil.disk_usage(self.folder).free < 4 * at:
                raise CacheUnavailable(f"{self.folder}: no room for {4 * at} bytes")
            fds = []
            for part, size in (("images", 3 * at), ("masks", at)):
                fd = os.open(self.folder / f"{split}.{part}.u8",
                             os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
                fds.append(fd)
                if size:
                    os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise CacheUnavailable(str(exc)) from exc
        self._shapes[split], self._offsets[split] = shapes, offsets
        self._fds[split] = (fds[0], fds[1])

    def _check(self, split: str, index: int, got: tuple[int, ...], what: str) -> None:
        if got != self._shapes[split][index]:
            raise CacheUnavailable(f"{what} {index} of {split} is {got}, the header said "
                                   f"{self._shapes[split][index]}")

    def put_image(self, split: str, index: int, image: torch.Tensor) -> None:
        """Write sample ``index``'s ``uint8 [3, H, W]`` image into its slot."""
        self._check(split, index, tuple(image.shape[-2:]), "image")
        self._write(self._fds[split][0], 3 * self._offsets[split][index], image)

    def put_mask(self, split: str, index: int, mask: torch.Tensor) -> None:
        """Write sample ``index``'s ``uint8 [H, W]`` mask into its slot."""
        self._check(split, index, tuple(mask.shape), "mask")
        self._write(self._fds[split][1], self._offsets[split][index], mask)

    @staticmethod
    def _write(fd: int, offset: int, tensor: torch.Tensor) -> None:
        data = memoryview(tensor.contiguous().numpy()).cast("B")
        try:
            while len(data):
                done = os.pwrite(fd, data, offset)
                data, offset = data[done:], offset + done
        except OSError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def split(self, split: str, names: list[str], groups: list[str]) -> SegSplit:
        """The filled split as memory-mapped tensors (call once every slot is written)."""
        for fd in self._fds.pop(split):
            os.close(fd)
        meta = {"names": names, "groups": groups,
                "shapes": [list(s) for s in self._shapes[split]]}
        return _read_split(self.folder, split, meta)

    def close(self) -> None:
        """Close what is still open (after a failure)."""
        for fds in self._fds.values():
            for fd in fds:
                os.close(fd)
        self._fds.clear()


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


def _streamed(key: str, loader: Callable[[CacheWriter | None], SegData]) -> SegData | None:
    """Decode straight into a new cache entry; None when the cache folder cannot take it."""
    root = cache_root()
    assert root is not None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    except OSError:
        return None
    writer = CacheWriter(tmp)
    try:
        data = loader(writer)
        (tmp / "meta.json").write_text(json.dumps(_meta(data)), encoding="utf-8")
        try:
            os.rename(tmp, root / key)  # the mapped files stay valid under their new name
        except OSError:  # another process stored it first: ours stays mapped until dropped
            shutil.rmtree(tmp, ignore_errors=True)
        return data
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, CacheUnavailable):
            return None
        raise
    finally:
        writer.close()


def lookup(root: Path, kind: str, options: dict[str, Any]) -> SegData | None:
    """A cached entry, or None (a miss, or the cache off): no decoding."""
    if cache_root() is None:
        return None
    return load(fingerprint(root, kind, options))


def cached(root: Path, kind: str, options: dict[str, Any],
           loader: Callable[[CacheWriter | None], SegData]) -> SegData:
    """``loader`` through the cache: decode and check once, memory-map afterwards.

    ``loader(writer)`` decodes into the writer's files; ``loader(None)`` decodes into memory
    (cache off or not writable).
    """
    if cache_root() is None:
        return loader(None)
    key = fingerprint(root, kind, options)
    data = load(key)
    if data is None:
        data = _streamed(key, loader)
    if data is None:
        data = loader(None)
        save(key, data)
    return data
