"""Reading and writing image and mask files, with errors that name the file.

Every data source decodes through here so that a missing, truncated or non-image file becomes a
``UserError`` naming that file instead of a Pillow traceback deep inside a loader. Masks are read
raw (palette indices, not colours) because the loaders decide how values map to classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from segdecay.errors import UserError
from segdecay.fileio import atomic_open

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_T = TypeVar("_T")
_R = TypeVar("_R")

_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)


def _open(path: str | os.PathLike[str], what: str) -> Image.Image:
    """Open and fully decode ``path``; any failure becomes a UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} is not a file: {path}")
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated/corrupt data only shows up here
    except _DECODE_ERRORS as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from exc
    return img


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a 16-bit or 32-bit grayscale image to 0..255 (Pillow's own convert would clip)."""
    arr = arr.astype(np.float64)
    top = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image as a ``uint8`` tensor ``[3, H, W]`` in RGB order.

    Grayscale, palette, RGBA and CMYK files are converted to RGB (alpha is dropped), and 16-bit
    grayscale is scaled to 8 bits, so every source yields the same layout.
    """
    img = _open(path, "image")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _wide_to_uint8(np.array(img))
        arr = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.array(img, dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_mask_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file without interpreting it.

    Returns a 2-D array for single-channel files: palette ("P") PNGs give their palette
    *indices*, ``L``/16-bit files their values, and 1-bit files 0/255. Colour files give an
    ``H x W x 3`` ``uint8`` array (alpha dropped). The caller maps values to classes.
    """
    img = _open(path, "mask")
    mode = img.mode
    if mode == "P":
        return np.array(img, dtype=np.uint8)
    if mode == "PA":
        return np.array(img)[:, :, 0].astype(np.uint8)
    if mode == "1":
        return np.array(img.convert("L"), dtype=np.uint8)
    if mode == "LA":
        return np.array(img)[:, :, 0].astype(np.uint8)
    if mode == "L" or mode.startswith("I"):
        return np.array(img)
    if mode == "F":
        arr = np.array(img)
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.rint(arr)):
            raise UserError(f"mask {path} holds non-integer floating-point values")
        return arr.astype(np.int64)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def _as_hwc_uint8(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bring a tensor/array into the ``H x W`` or ``H x W x C`` uint8 layout Pillow expects."""
    if isinstance(array, torch.Tensor):
        t = array.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[2] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        arr = t.numpy()
    else:
        arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"cannot write an array of shape {arr.shape} as PNG")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"values outside 0..255 (dtype {arr.dtype}) cannot be written as PNG")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def write_png(
    path: str | os.PathLike[str],
    array: np.ndarray | torch.Tensor,
    *,
    palette: list[tuple[int, int, int]] | None = None,
) -> None:
    """Write ``array`` as a PNG atomically, so a crash never leaves a half-written file.

    ``array`` is ``H x W`` (grayscale or indices), ``H x W x 3|4``, or a tensor ``[3, H, W]``.
    With ``palette`` a 2-D array is written as a palette PNG whose indices are the values.
    The data goes to a temporary file in the same folder and is moved into place with
    ``os.replace``.
    """
    path = Path(path)
    arr = _as_hwc_uint8(array)
    img = Image.fromarray(arr)
    if palette is not None:
        if arr.ndim != 2:
            raise ValueError("a palette can only be used with a 2-D index array")
        flat = [int(c) for rgb in palette[:256] for c in rgb]
        img = Image.frombytes("P", img.size, arr.tobytes())
        img.putpalette(flat + [0] * (768 - len(flat)))
    with atomic_open(path, "wb") as fh:
        img.save(fh, format="PNG")


def map_threaded(fn: Callable[[_T], _R], items: Iterable[_T], workers: int = 4) -> list[_R]:
    """``[fn(x) for x in items]`` on a few threads (zlib/JPEG decoding releases the GIL).

    Results keep the input order; the first exception (e.g. a UserError) is re-raised.
    """
    items = list(items)
    workers = max(1, min(workers, os.cpu_count() or 1, len(items)))
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))
