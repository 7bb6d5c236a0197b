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
Binary-looking masks with a few other values (a stray value, JPEG compression) are refused
with the files and values named, unless ``--mask-encoding`` says how to read them.
An ``ignore/`` region mask marks with 0 the pixels that carry no label. Every mistake in the
folder is a UserError naming the file at fault, before any training starts.

Each check runs once, in :func:`scan_folder`: without a ``problems`` list the first mistake
raises (``train``); with one, every mistake is appended and the scan goes on with the samples
that are fine (``segdecay check-data``).
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segdecay.data.base import (
    IGNORE_INDEX,
    DatasetInfo,
    SegData,
    SegSplit,
    attempt,
    report,
)
from segdecay.data.cache import CacheWriter
from segdecay.data.imageio import IMAGE_SUFFIXES, map_threaded, read_image, read_mask_raw
from segdecay.errors import UserError
from segdecay.resources import DISK_CACHE_HINT, cache_bytes, check_cache_fits, image_size

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

_PALETTE_LINE = re.compile(
    r"^([0-9]+)\s*[,\s]\s*([0-9]+)\s*[,\s]\s*([0-9]+)(?:\s*[,\s]\s*(.*))?$"
)

# Files that operating systems drop into folders; never data, never worth an error.
_JUNK = {"thumbs.db", "desktop.ini"}


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


def _read_text(path: Path) -> str:
    """A small text file as UTF-8; undecodable or unreadable files are UserErrors."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_palette(path: Path) -> _Palette:
    """Parse ``palette.txt``; lines are ``R G B [name]``, ``R,G,B[,name]`` or ``ignore R G B``."""
    colours: list[tuple[int, int, int]] = []
    names: list[str | None] = []
    ignore: list[tuple[int, int, int]] = []
    seen: dict[tuple[int, int, int], int] = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
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
        # More than 3 digits is out of range anyway (and int() refuses > 4300 digits).
        rgb_values = tuple(int(v) if len(v) <= 3 else 256 for v in m.group(1, 2, 3))
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
        for ln in _read_text(path).splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if not names:
        raise UserError(f"{path} lists no class names")
    return names


def _by_stem(folder: Path, what: str, problems: list[str] | None) -> dict[str, Path]:
    """Image files in ``folder`` keyed by stem; other files and duplicate stems are problems."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name.lower() in _JUNK or p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            report(problems, f"{what}s folder {folder} holds {p.name}, which is not an image file "
                   f"(expected {' '.join(IMAGE_SUFFIXES)}); move it out of the folder")
        elif p.stem in found:
            report(problems, f"{what} {p} and {found[p.stem]} have the same name; keep only one")
        else:
            found[p.stem] = p
    return found


def _collect(split_dir: Path, split: str, problems: list[str] | None) -> list[_Sample]:
    """Pair ``images/`` with ``masks/`` (and ``ignore/``) inside one split folder."""
    img_dir, mask_dir, ign_dir = split_dir / "images", split_dir / "masks", split_dir / "ignore"
    images = _by_stem(img_dir, "image", problems)
    if not images:
        report(problems, f"images folder {img_dir} ({split} split) holds no images "
               f"(looked for {' '.join(IMAGE_SUFFIXES)})")
    if not mask_dir.is_dir():
        report(problems, f"{img_dir} has no matching masks folder {mask_dir}; {_LAYOUT}")
        return []
    masks = _by_stem(mask_dir, "mask", problems)
    ignores = _by_stem(ign_dir, "ignore mask", problems) if ign_dir.is_dir() else {}
    if images and not masks:
        report(problems, f"masks folder {mask_dir} ({split} split) holds no masks "
               f"for the {len(images)} images in {img_dir}")
        return []
    for stem, img in images.items():
        if stem not in masks:
            report(problems, f"image {img} has no mask; expected {mask_dir / (stem + '.png')}")
    for stem, mask in masks.items():
        if stem not in images:
            report(problems,
                   f"mask {mask} has no image; expected {img_dir / stem}.<png|jpg|...>")
    for stem, ign in ignores.items():
        if stem not in images:
            report(problems,
                   f"ignore mask {ign} has no image; expected {img_dir / stem}.<png|...>")
    return [_Sample(stem, images[stem], masks[stem], ignores.get(stem))
            for stem in sorted(images) if stem in masks]


def _labelled(region: np.ndarray) -> np.ndarray:
    """An ignore/ region mask as booleans: True where pixels carry a label (non-zero)."""
    return region.any(axis=2) if region.ndim == 3 else region != 0


def _decode(sample: _Sample, problems: list[str] | None = None) -> bool:
    """Read the files of one sample and check that their sizes agree; False if unusable."""
    sample.image = attempt(problems, read_image, sample.image_path)
    sample.raw = attempt(problems, read_mask_raw, sample.mask_path)
    region = attempt(problems, read_mask_raw, sample.ignore_path) if sample.ignore_path else None
    if sample.image is None or sample.raw is None:
        return False
    h, w = sample.image.shape[-2:]
    ok = True
    if sample.raw.shape[:2] != (h, w):
        mh, mw = sample.raw.shape[:2]
        report(problems, f"mask {sample.mask_path} is {mh}x{mw} (HxW) but image "
               f"{sample.image_path} is {h}x{w}")
        ok = False
    if region is not None:
        if region.shape[:2] != (h, w):
            rh, rw = region.shape[:2]
            report(problems, f"ignore mask {sample.ignore_path} is {rh}x{rw} (HxW) but image "
                   f"{sample.image_path} is {h}x{w}")
            ok = False
        sample.region = _labelled(region)
    elif sample.ignore_path is not None:
        ok = False
    return ok


def _decode_all(samples: list[_Sample], problems: list[str] | None) -> list[_Sample]:
    """Decode every sample on a few threads; the usable ones, problems in file order."""
    if problems is None:
        map_threaded(_decode, samples, workers=4)
        return samples

    def one(sample: _Sample) -> list[str]:
        found: list[str] = []
        _decode(sample, found)
        return found

    found = map_threaded(one, samples, workers=4)
    for messages in found:
        problems.extend(messages)
    return [s for s, messages in zip(samples, found, strict=True) if not messages]


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


def _find_splits(
    root: Path, problems: list[str] | None = None
) -> tuple[Path, Path | None, Path | None]:
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
            report(problems, f"{d} exists but has no images/ folder; {_LAYOUT}")
            found.append(None)
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


def _index_mask(
    s: _Sample, palette: _Palette | None, palette_path: Path, problems: list[str] | None
) -> np.ndarray | None:
    """One raw mask as class values: RGB through the palette, grey-as-RGB as its first
    channel, index masks as they are; None (when collecting) for a colour mask without one."""
    raw = s.raw
    assert raw is not None
    if raw.ndim != 3:
        return raw
    if palette is not None:
        return attempt(problems, _colour_to_index, s, palette, palette_path)
    if np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2]):
        return raw[..., 0]  # grey levels saved as RGB: values are indices
    report(problems, f"mask {s.mask_path} is a colour (RGB) image; add {palette_path} with "
           "one 'R G B name' line per class, or save masks as index PNGs")
    return None


@dataclass
class _LabelPlan:
    """The dataset-wide reading of mask values: binary 0/255 or class ids, and the classes."""

    binary: bool
    num_classes: int
    names: list[str]
    encoding: str  # binary | index | palette: how mask values were read


BINARY_THRESHOLD = 128  # --mask-encoding binary: values at or above it are the foreground
LOSSY_SUFFIXES = {".jpg", ".jpeg"}
STRAY_SHARE = 0.05  # masks with values besides 0/255, as a share of those holding 255


def _binary_with_strays(samples: list[_Sample], values: list[np.ndarray | None]) -> str | None:
    """Why masks that hold 0 and 255 and a few other values look like binary masks damaged
    (an editor's stray value, JPEG compression) rather than class ids with 255 as ignore;
    None when they do not. Read as class ids, their foreground would be ignored."""
    def is_lossy(i: int) -> bool:
        return samples[i].mask_path.suffix.lower() in LOSSY_SUFFIXES

    # a JPEG foreground may hold no exact 255 at all (compression moves it to 250-254)
    with_255 = [i for i, v in enumerate(values) if v is not None and (
        IGNORE_INDEX in v or (is_lossy(i) and len(v) and v.max() >= BINARY_THRESHOLD))]
    odd = [i for i, v in enumerate(values) if v is not None and len(np.setdiff1d(
        v, [0, IGNORE_INDEX]))]
    if not with_255 or not odd:
        return None
    lossy = [i for i in odd if is_lossy(i)]
    if not lossy and len(odd) > max(1, STRAY_SHARE * len(with_255)):
        return None  # other values in many masks: class ids, 255 the ignore label
    def others(i: int) -> str:
        return ", ".join(str(int(v)) for v in np.setdiff1d(values[i], [0, IGNORE_INDEX])[:6])

    shown = "; ".join(f"{samples[i].mask_path}: {others(i)}" for i in (lossy or odd)[:3])
    why = (f"{len(lossy)} mask(s) are JPEG, whose compression changes label values"
           if lossy else f"only {len(odd)} of the {len(with_255)} masks holding 255 hold "
           "other values")
    more = "; ..." if len(odd) > 3 else ""
    return (f"masks look binary (0 and 255, or near it) but {why} ({shown}{more}); read as "
            "class ids, the foreground would be ignored or split into many classes and never "
            f"trained. Give --mask-encoding binary (values >= {BINARY_THRESHOLD} are the "
            "foreground) or --mask-encoding index (values are class ids, 255 ignore), or fix "
            "the masks")


def _plan_labels(
    samples: list[_Sample],
    values: list[np.ndarray | None],
    palette: _Palette | None,
    num_classes: int | None,
    names: list[str] | None,
    problems: list[str] | None = None,
    encoding: str = "auto",
) -> tuple[_LabelPlan, set[int]]:
    """Decide binary/index and the class count from every mask's distinct values (so the
    decision needs no mask in memory); also the samples rejected on the way (collecting).
    ``encoding`` (a choice of ``--mask-encoding``, checked with TrainConfig) auto reads 0/255
    masks as binary and others as class ids, and refuses binary-looking masks with stray
    values (:func:`_binary_with_strays`)."""
    seen: set[int] = set()
    for v in values:
        if v is not None:
            seen.update(v.tolist())
    if encoding == "binary" and palette is not None:
        raise UserError("--mask-encoding binary: the masks are decoded with palette.txt "
                        "into class ids; drop the option, or palette.txt")
    binary = encoding == "binary" or (
        encoding == "auto" and palette is None and num_classes in (None, 2)
        and IGNORE_INDEX in seen and seen <= {0, IGNORE_INDEX})
    if encoding == "auto" and not binary and palette is None and num_classes in (None, 2):
        strays = _binary_with_strays(samples, values)
        if strays is not None:
            report(problems, strays)
            binary = True  # collecting: go on as the likelier reading
    rejected: set[int] = set()
    if binary:
        if num_classes not in (None, 2):
            raise UserError(f"--mask-encoding binary makes 2 classes, but num_classes is "
                            f"{num_classes}")
        if names is None:
            num_classes, names = 2, ["background", "foreground"]
    elif num_classes is None:
        # Inferred from the values: class ids must be 0..254; offending masks are dropped.
        labels: set[int] = set()
        for i, (s, v) in enumerate(zip(samples, values, strict=True)):
            if v is None or not len(v):
                continue
            if v.min() < 0:
                report(problems, f"mask {s.mask_path} has negative label value {int(v.min())}")
                rejected.add(i)
            elif v.max() > IGNORE_INDEX:
                report(problems, f"mask {s.mask_path} has label values above {IGNORE_INDEX - 1}; "
                       f"give masks with class ids 0..{IGNORE_INDEX - 1} ({IGNORE_INDEX} = ignore)")
                rejected.add(i)
            else:
                labels.update(v.tolist())
        labels.discard(IGNORE_INDEX)
        num_classes = int(max(labels)) + 1 if labels else 1
        names = [f"class{i}" for i in range(num_classes)]
    assert names is not None and num_classes is not None
    kind = "binary" if binary else "palette" if palette is not None else "index"
    return _LabelPlan(binary, num_classes, names, kind), rejected


def _final_mask(
    s: _Sample, arr: np.ndarray, plan: _LabelPlan, problems: list[str] | None = None
) -> torch.Tensor | None:
    """Class values to the uint8 training mask: binary mapping, range check, ignore region."""
    if plan.binary:
        arr = np.where(arr >= BINARY_THRESHOLD, 1, 0).astype(np.uint8)
    n = plan.num_classes
    bad_px = ((arr >= n) & (arr != IGNORE_INDEX)) | (arr < 0)
    if bad_px.any():
        bad = np.unique(arr[bad_px])
        shown = ", ".join(str(int(v)) for v in bad[:5])
        report(problems, f"mask {s.mask_path} has label value(s) {shown} but there are "
               f"{n} classes (0..{n - 1}, {IGNORE_INDEX} = ignore)")
        return None
    out = arr.astype(np.uint8)
    if s.region is not None:
        out = np.where(s.region, out, np.uint8(IGNORE_INDEX)).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(out))


def _to_masks(
    samples: list[_Sample],
    root: Path,
    palette: _Palette | None,
    num_classes: int | None,
    names: list[str] | None,
    problems: list[str] | None = None,
    encoding: str = "auto",
) -> tuple[list[torch.Tensor | None], _LabelPlan]:
    """Turn raw masks of all splits into index masks, deciding binary/index/RGB dataset-wide.

    The mask of a sample with a problem is None (only when collecting problems).
    """
    index = [_index_mask(s, palette, root / "palette.txt", problems) for s in samples]
    values = [None if a is None else np.unique(a) for a in index]
    plan, rejected = _plan_labels(samples, values, palette, num_classes, names, problems,
                                  encoding)
    masks = [None if a is None or i in rejected else _final_mask(s, a, plan, problems)
             for i, (s, a) in enumerate(zip(samples, index, strict=True))]
    return masks, plan


def _stream_into_cache(
    writer: CacheWriter,
    parts: dict[str, list[_Sample]],
    sizes: dict[int, tuple[int, int] | None],
    root: Path,
    palette: _Palette | None,
    num_classes: int | None,
    names: list[str] | None,
    encoding: str = "auto",
) -> tuple[dict[str, SegSplit], _LabelPlan]:
    """Decode every final split straight into the cache files, holding a few pairs at a time.

    Pass one writes images and keeps only each mask's distinct values; the dataset-wide label
    plan follows; pass two decodes the masks again and writes them. Problems raise.
    """
    jobs = [(split, i, s) for split, samples in parts.items() for i, s in enumerate(samples)]
    for split, samples in parts.items():
        writer.allocate(split, [sizes[id(s)] for s in samples])  # type: ignore[misc]

    def first(job: tuple[str, int, _Sample]) -> np.ndarray:
        split, i, s = job
        _decode(s)
        assert s.image is not None
        writer.put_image(split, i, s.image)
        arr = _index_mask(s, palette, root / "palette.txt", None)
        assert arr is not None
        s.image = s.raw = s.region = None
        return np.unique(arr)

    values = map_threaded(first, jobs, workers=4)
    plan, _ = _plan_labels([s for _, _, s in jobs], list(values), palette, num_classes, names,
                           encoding=encoding)

    def second(job: tuple[str, int, _Sample]) -> None:
        split, i, s = job
        s.raw = read_mask_raw(s.mask_path)
        if s.ignore_path is not None:
            s.region = _labelled(read_mask_raw(s.ignore_path))
        arr = _index_mask(s, palette, root / "palette.txt", None)
        assert arr is not None
        mask = _final_mask(s, arr, plan)
        assert mask is not None
        writer.put_mask(split, i, mask)
        s.raw = s.region = None

    map_threaded(second, jobs, workers=4)
    splits = {split: writer.split(split, [s.name for s in samples], [s.name for s in samples])
              for split, samples in parts.items()}
    return splits, plan


def _holdout(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/val indices: ``round(n * val_fraction)`` (at least 1) held out."""
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def _decode_in_memory(
    split_samples: dict[str, list[_Sample]],
    root: Path,
    palette: _Palette | None,
    num_classes: int | None,
    names: list[str] | None,
    val_fraction: float,
    seed: int,
    problems: list[str] | None,
    encoding: str = "auto",
) -> tuple[SegSplit, SegSplit, SegSplit | None, _LabelPlan]:
    """Decode every sample into memory (cache off, or collecting problems for check-data)."""
    all_samples = [s for group in split_samples.values() for s in group]
    usable = {id(s) for s in _decode_all(all_samples, problems)}
    good = [s for s in all_samples if id(s) in usable]
    masks, plan = _to_masks(good, root, palette, num_classes, names, problems, encoding)
    mask_of = {id(s): m for s, m in zip(good, masks, strict=True) if m is not None}

    def build(samples: list[_Sample]) -> SegSplit:
        kept = [s for s in samples if id(s) in mask_of]
        images = []
        for s in kept:
            assert s.image is not None
            images.append(s.image)
        return SegSplit(
            images=images,
            masks=[mask_of[id(s)] for s in kept],
            names=[s.name for s in kept],
            groups=[s.name for s in kept],
        )

    train = build(split_samples["train"])
    if "val" in split_samples:
        val = build(split_samples["val"])
    elif len(train) >= 2:
        train_idx, val_idx = _holdout(len(train), val_fraction, seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    else:
        val = build([])
    test = build(split_samples["test"]) if "test" in split_samples else None
    return train, val, test, plan


def load_folder(
    root: Path,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    problems: list[str] | None = None,
    writer: CacheWriter | None = None,
    mask_encoding: str = "auto",
) -> SegData:
    """Load a generic images/masks folder (layouts in the module docstring) into memory.

    ``mask_encoding`` says how mask values are read: ``binary`` (values >= 128 are the
    foreground), ``index`` (class ids, 255 ignore) or ``auto``, which reads 0/255 masks as
    binary, others as class ids, and refuses binary-looking masks with stray values; the
    reading is ``info.mask_encoding``.

    Without a provided ``val`` split, ``val_fraction`` of the training images (at least one)
    is held out with a generator seeded by ``seed``, so the split is reproducible.

    Without ``problems`` the first mistake raises a UserError. With a list, every mistake is
    appended to it and the dataset is built from the samples that are fine (splits may be
    empty); only a folder that cannot be read at all still raises. With a cache ``writer``
    (and no list) samples are decoded into its files rather than memory.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist; {_LAYOUT}")
    if not root.is_dir():
        raise UserError(f"dataset path {root} is not a folder; {_LAYOUT}")
    train_dir, val_dir, test_dir = _find_splits(root, problems)
    palette = None
    if (root / "palette.txt").is_file():
        palette = attempt(problems, _read_palette, root / "palette.txt")
    setup = attempt(problems, _class_setup, root, num_classes, class_names, palette)
    num_classes, names = setup if setup is not None else (None, None)

    split_samples = {"train": _collect(train_dir, "train", problems)}
    if val_dir is not None:
        split_samples["val"] = _collect(val_dir, "val", problems)
    else:
        if not 0.0 < val_fraction < 1.0:
            raise UserError(
                f"option val_fraction must be between 0 and 1 (exclusive), got {val_fraction}"
            )
        if len(split_samples["train"]) == 1:
            report(problems, f"images folder {train_dir / 'images'} holds only one image; a "
                   "validation split needs at least two images, or provide val/images + "
                   "val/masks")
    if test_dir is not None:
        split_samples["test"] = _collect(test_dir, "test", problems)

    all_samples = [s for group in split_samples.values() for s in group]
    sizes = {id(s): image_size(s.image_path) for s in all_samples}
    if writer is not None and problems is None and None not in sizes.values():
        parts = dict(split_samples)
        if "val" not in parts:
            train_idx, val_idx = _holdout(len(parts["train"]), val_fraction, seed)
            parts["val"] = [parts["train"][i] for i in val_idx]
            parts["train"] = [parts["train"][i] for i in train_idx]
        splits, plan = _stream_into_cache(writer, parts, sizes, root, palette, num_classes,
                                          names, mask_encoding)
        train, val, test = splits["train"], splits["val"], splits.get("test")
    else:
        too_big = check_cache_fits(cache_bytes(hw for hw in sizes.values() if hw is not None),
                                   f"dataset folder {root}", len(all_samples),
                                   hint=DISK_CACHE_HINT)
        if too_big:
            raise UserError(too_big)
        train, val, test, plan = _decode_in_memory(
            split_samples, root, palette, num_classes, names, val_fraction, seed, problems,
            mask_encoding)
    num_classes, names = plan.num_classes, plan.names

    colours = list(palette.colours) if palette is not None else default_palette(num_classes)
    info = DatasetInfo(
        name=root.name or "folder",
        num_classes=num_classes,
        class_names=names,
        palette=colours,
        mask_encoding=plan.encoding,
    )
    return SegData(info=info, train=train, val=val, test=test)
