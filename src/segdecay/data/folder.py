"""A generic ``images/`` + ``masks/`` folder, so users can train on their own data.

Accepted layouts (``ROOT`` is the path given by the user)::

    ROOT/images/  ROOT/masks/  [ROOT/ignore/]           train only: a seeded hold-out gives val
    ROOT/val/images/ ROOT/val/masks/ [ROOT/val/ignore/]  optional provided val split
    ROOT/train/{images,masks,[ignore]}/                  or the split form, with
    ROOT/val/{images,masks,[ignore]}/                    optional val and
    ROOT/test/{images,masks,[ignore]}/                   optional test split
    ROOT/classes.txt   optional: one class name per line
    ROOT/palette.txt   optional: ``R G B [name]`` per class line, ``ignore R G B`` lines

Images and masks pair up by file stem. Masks may be index PNGs (values are class ids, 255 is
ignore), binary 0/255 masks (255 becomes class 1) or RGB masks decoded with ``palette.txt``.
An ``ignore/`` region mask marks with 0 the pixels that carry no label. Every mistake in the
folder is a UserError naming the file at fault, before any training starts.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segdecay.data.base import IGNORE_INDEX, DatasetInfo, SegData, SegSplit
from segdecay.data.imageio import IMAGE_SUFFIXES, map_threaded, read_image, read_mask_raw
from segdecay.errors import UserError

# tab20 (matplotlib), reordered so that the first ten are the strong tab10 colours.
DEFAULT_PALETTE: list[tuple[int, int, int]] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
]

_LAYOUT = (
    "expected ROOT/images + ROOT/masks (optionally ROOT/val/images + ROOT/val/masks), or "
    "ROOT/train/{images,masks} + ROOT/val/{images,masks} (+ optional ROOT/test/{images,masks})"
)

_PALETTE_LINE = re.compile(r"^(\d+)\s*[,\s]\s*(\d+)\s*[,\s]\s*(\d+)(?:\s*[,\s]\s*(.*))?$")


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct colours: tab20 first, then evenly spread hues (deterministic)."""
    colours = list(DEFAULT_PALETTE[:n])
    k = 0
    while len(colours) < n:
        h = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65 if k % 2 else 0.9, 0.95 if k % 3 else 0.7)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
        k += 1
    return colours


@dataclass
class _Palette:
    """Parsed ``palette.txt``: class colours and names, plus colours that mean ignore."""

    colours: list[tuple[int, int, int]]
    names: list[str | None]
    ignore: list[tuple[int, int, int]]


@dataclass
class _Sample:
    """One image with its mask (and optional ignore region) before mapping to classes."""

    name: str
    image_path: Path
    mask_path: Path
    ignore_path: Path | None
    image: torch.Tensor | None = None
    raw: np.ndarray | None = None
    region: np.ndarray | None = None


def _read_palette(path: Path) -> _Palette:
    """Parse ``palette.txt``; lines are ``R G B [name]``, ``R,G,B[,name]`` or ``ignore R G B``."""
    colours: list[tuple[int, int, int]] = []
    names: list[str | None] = []
    ignore: list[tuple[int, int, int]] = []
    seen: dict[tuple[int, int, int], int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        is_ignore = text.lower().startswith("ignore")
        if is_ignore:
            text = text[len("ignore") :].lstrip(" \t,:")
        m = _PALETTE_LINE.match(text)
        if m is None:
            raise UserError(
                f"{path}, line {lineno}: cannot parse {line.strip()!r}; expected 'R G B [name]', "
                "'R,G,B[,name]' or 'ignore R G B'"
            )
        rgb_values = tuple(int(v) for v in m.group(1, 2, 3))
        if any(v > 255 for v in rgb_values):
            raise UserError(f"{path}, line {lineno}: colour values must be 0..255")
        rgb = (rgb_values[0], rgb_values[1], rgb_values[2])
        if rgb in seen:
            raise UserError(
                f"{path}, line {lineno}: colour {rgb} already given on line {seen[rgb]}"
            )
        seen[rgb] = lineno
        if is_ignore:
            ignore.append(rgb)
        else:
            colours.append(rgb)
            name = (m.group(4) or "").strip().strip(",").strip()
            names.append(name or None)
    if not colours:
        raise UserError(f"{path} lists no class colours")
    return _Palette(colours, names, ignore)


def _read_classes(path: Path) -> list[str]:
    """Class names from ``classes.txt``: one per line, blank and ``#`` lines skipped."""
    names = [
        ln.strip()
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if not names:
        raise UserError(f"{path} lists no class names")
    return names


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    """Image-like files in ``folder`` keyed by stem; two files with one stem is an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in found:
            raise UserError(f"{what} {p} and {found[p.stem]} have the same name; keep only one")
        found[p.stem] = p
    return found


def _collect(split_dir: Path, split: str) -> list[_Sample]:
    """Pair ``images/`` with ``masks/`` (and ``ignore/``) inside one split folder."""
    img_dir, mask_dir, ign_dir = split_dir / "images", split_dir / "masks", split_dir / "ignore"
    if not mask_dir.is_dir():
        raise UserError(f"{img_dir} has no matching masks folder {mask_dir}; {_LAYOUT}")
    images = _by_stem(img_dir, "image")
    if not images:
        raise UserError(
            f"images folder {img_dir} ({split} split) holds no images "
            f"(looked for {' '.join(IMAGE_SUFFIXES)})"
        )
    masks = _by_stem(mask_dir, "mask")
    ignores = _by_stem(ign_dir, "ignore mask") if ign_dir.is_dir() else {}
    for stem, img in images.items():
        if stem not in masks:
            raise UserError(f"image {img} has no mask; expected {mask_dir / (stem + '.png')}")
    for stem, mask in masks.items():
        if stem not in images:
            raise UserError(f"mask {mask} has no image; expected {img_dir / stem}.<png|jpg|...>")
    for stem, ign in ignores.items():
        if stem not in images:
            raise UserError(f"ignore mask {ign} has no image; expected {img_dir / stem}.<png|...>")
    return [_Sample(stem, images[stem], masks[stem], ignores.get(stem)) for stem in sorted(images)]


def _decode(sample: _Sample) -> _Sample:
    """Read the files of one sample and check that their sizes agree."""
    sample.image = read_image(sample.image_path)
    h, w = sample.image.shape[-2:]
    sample.raw = read_mask_raw(sample.mask_path)
    if sample.raw.shape[:2] != (h, w):
        mh, mw = sample.raw.shape[:2]
        raise UserError(
            f"mask {sample.mask_path} is {mh}x{mw} (HxW) but image {sample.image_path} is {h}x{w}"
        )
    if sample.ignore_path is not None:
        region = read_mask_raw(sample.ignore_path)
        if region.shape[:2] != (h, w):
            rh, rw = region.shape[:2]
            raise UserError(
                f"ignore mask {sample.ignore_path} is {rh}x{rw} (HxW) but image "
                f"{sample.image_path} is {h}x{w}"
            )
        sample.region = region.any(axis=2) if region.ndim == 3 else region != 0
    return sample


def _colour_to_index(sample: _Sample, palette: _Palette, palette_path: Path) -> np.ndarray:
    """Map an RGB mask to class indices through the palette; unknown colours are errors."""
    raw = sample.raw
    assert raw is not None and raw.ndim == 3
    lookup = {rgb: i for i, rgb in enumerate(palette.colours)}
    lookup.update({rgb: IGNORE_INDEX for rgb in palette.ignore})
    keys = (
        (raw[..., 0].astype(np.uint32) << 16)
        | (raw[..., 1].astype(np.uint32) << 8)
        | raw[..., 2].astype(np.uint32)
    )
    uniq, inverse = np.unique(keys, return_inverse=True)
    mapped = np.empty(len(uniq), dtype=np.uint8)
    for j, key in enumerate(uniq.tolist()):
        rgb = (key >> 16, (key >> 8) & 255, key & 255)
        if rgb not in lookup:
            raise UserError(
                f"mask {sample.mask_path} has colour {rgb} (RGB) that is not in {palette_path}"
            )
        mapped[j] = lookup[rgb]
    return mapped[inverse.reshape(-1)].reshape(keys.shape)


def _find_splits(root: Path) -> tuple[Path, Path | None, Path | None]:
    """The train, val and test split folders of ``root`` (val/test None when absent)."""
    if (root / "train" / "images").is_dir():
        train = root / "train"
    elif (root / "images").is_dir():
        train = root
    else:
        raise UserError(f"dataset folder {root} has no images/ or train/images/ folder; {_LAYOUT}")
    found: list[Path | None] = []
    for name in ("val", "test"):
        d = root / name
        if (d / "images").is_dir():
            found.append(d)
        elif d.is_dir():
            raise UserError(f"{d} exists but has no images/ folder; {_LAYOUT}")
        else:
            found.append(None)
    return train, found[0], found[1]


def _class_setup(
    root: Path,
    num_classes: int | None,
    class_names: list[str] | None,
    palette: _Palette | None,
) -> tuple[int | None, list[str] | None]:
    """Class count and names from the arguments, classes.txt or palette.txt (None if unknown)."""
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if num_classes is not None and num_classes != len(class_names):
            raise UserError(
                f"option num_classes={num_classes} disagrees with class_names, which has "
                f"{len(class_names)} names"
            )
        num_classes = len(class_names)
    if num_classes is not None and num_classes < 1:
        raise UserError(f"option num_classes must be at least 1, got {num_classes}")
    if num_classes is not None and num_classes > IGNORE_INDEX:
        raise UserError(f"option num_classes must be at most {IGNORE_INDEX}, got {num_classes}")

    names: list[str] | None = class_names
    if names is None and (root / "classes.txt").is_file():
        file_names = _read_classes(root / "classes.txt")
        if num_classes is not None and len(file_names) != num_classes:
            raise UserError(
                f"{root / 'classes.txt'} lists {len(file_names)} classes but option "
                f"num_classes is {num_classes}"
            )
        names = file_names
    if palette is not None:
        n_pal = len(palette.colours)
        expected = num_classes if num_classes is not None else len(names) if names else None
        if expected is not None and expected != n_pal:
            raise UserError(
                f"{root / 'palette.txt'} lists {n_pal} class colours but there are "
                f"{expected} classes (from the options or classes.txt)"
            )
        if names is None:
            names = [n or f"class{i}" for i, n in enumerate(palette.names)]
    if names is not None:
        num_classes = len(names)
    elif num_classes is not None:
        names = [f"class{i}" for i in range(num_classes)]
    return num_classes, names


def _to_masks(
    samples: list[_Sample],
    root: Path,
    palette: _Palette | None,
    num_classes: int | None,
    names: list[str] | None,
) -> tuple[list[torch.Tensor], int, list[str]]:
    """Turn raw masks of all splits into index masks, deciding binary/index/RGB dataset-wide."""
    palette_path = root / "palette.txt"
    index: list[np.ndarray] = []
    for s in samples:
        raw = s.raw
        assert raw is not None
        if raw.ndim == 3:
            if palette is not None:
                raw = _colour_to_index(s, palette, palette_path)
            elif np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(
                raw[..., 0], raw[..., 2]
            ):
                raw = raw[..., 0]  # grey levels saved as RGB: values are indices
            else:
                raise UserError(
                    f"mask {s.mask_path} is a colour (RGB) image; add {palette_path} with one "
                    "'R G B name' line per class, or save masks as index PNGs"
                )
        index.append(raw)

    values: set[int] = set()
    for arr in index:
        values.update(np.unique(arr).tolist())
    binary = (
        palette is None
        and num_classes in (None, 2)
        and IGNORE_INDEX in values
        and values <= {0, IGNORE_INDEX}
    )
    if binary:
        index = [np.where(arr == IGNORE_INDEX, 1, 0).astype(np.uint8) for arr in index]
        if names is None:
            num_classes, names = 2, ["background", "foreground"]
    if num_classes is None:
        labels = values - {IGNORE_INDEX}
        if any(v < 0 for v in labels):
            bad = min(labels)
            s = next(s for s, a in zip(samples, index, strict=True) if (a == bad).any())
            raise UserError(f"mask {s.mask_path} has negative label value {bad}")
        num_classes = max(labels) + 1 if labels else 1
        if num_classes > IGNORE_INDEX:
            s = next(s for s, a in zip(samples, index, strict=True) if (a >= IGNORE_INDEX).any())
            raise UserError(
                f"mask {s.mask_path} has label values above {IGNORE_INDEX - 1}; give masks with "
                f"class ids 0..254 (255 = ignore)"
            )
        names = [f"class{i}" for i in range(num_classes)]
    assert names is not None

    masks: list[torch.Tensor] = []
    for s, arr in zip(samples, index, strict=True):
        bad_px = ((arr >= num_classes) & (arr != IGNORE_INDEX)) | (arr < 0)
        if bad_px.any():
            bad = np.unique(arr[bad_px])
            shown = ", ".join(str(int(v)) for v in bad[:5])
            raise UserError(
                f"mask {s.mask_path} has label value(s) {shown} but there are {num_classes} "
                f"classes (0..{num_classes - 1}, {IGNORE_INDEX} = ignore)"
            )
        out = arr.astype(np.uint8)
        if s.region is not None:
            out = np.where(s.region, out, np.uint8(IGNORE_INDEX)).astype(np.uint8)
        masks.append(torch.from_numpy(np.ascontiguousarray(out)))
    return masks, num_classes, names


def _holdout(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/val indices: ``round(n * val_fraction)`` (at least 1) held out."""
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def load_folder(
    root: Path,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> SegData:
    """Load a generic images/masks folder (layouts in the module docstring) into memory.

    Without a provided ``val`` split, ``val_fraction`` of the training images (at least one)
    is held out with a generator seeded by ``seed``, so the split is reproducible.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist; {_LAYOUT}")
    if not root.is_dir():
        raise UserError(f"dataset path {root} is not a folder; {_LAYOUT}")
    train_dir, val_dir, test_dir = _find_splits(root)
    palette = _read_palette(root / "palette.txt") if (root / "palette.txt").is_file() else None
    num_classes, names = _class_setup(root, num_classes, class_names, palette)

    split_samples = {"train": _collect(train_dir, "train")}
    if val_dir is not None:
        split_samples["val"] = _collect(val_dir, "val")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise UserError(
                f"option val_fraction must be between 0 and 1 (exclusive), got {val_fraction}"
            )
        if len(split_samples["train"]) < 2:
            raise UserError(
                f"images folder {train_dir / 'images'} holds only one image; a validation "
                "split needs at least two images, or provide val/images + val/masks"
            )
    if test_dir is not None:
        split_samples["test"] = _collect(test_dir, "test")

    all_samples = [s for group in split_samples.values() for s in group]
    map_threaded(_decode, all_samples, workers=4)
    masks, num_classes, names = _to_masks(all_samples, root, palette, num_classes, names)
    mask_of = {id(s): m for s, m in zip(all_samples, masks, strict=True)}

    def build(samples: list[_Sample]) -> SegSplit:
        images = []
        for s in samples:
            assert s.image is not None
            images.append(s.image)
        return SegSplit(
            images=images,
            masks=[mask_of[id(s)] for s in samples],
            names=[s.name for s in samples],
            groups=[s.name for s in samples],
        )

    train = build(split_samples["train"])
    if "val" in split_samples:
        val = build(split_samples["val"])
    else:
        train_idx, val_idx = _holdout(len(train), val_fraction, seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    test = build(split_samples["test"]) if "test" in split_samples else None

    colours = list(palette.colours) if palette is not None else default_palette(num_classes)
    info = DatasetInfo(
        name=root.name or "folder",
        num_classes=num_classes,
        class_names=names,
        palette=colours,
    )
    return SegData(info=info, train=train, val=val, test=test)
