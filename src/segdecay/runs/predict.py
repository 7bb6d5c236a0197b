"""``segdecay predict``: index masks (palette PNGs) and colour overlays for new images."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segdecay.config import parse_size
from segdecay.data.imageio import read_image
from segdecay.decision import apply_bias
from segdecay.errors import UserError
from segdecay.fileio import atomic_open
from segdecay.inference import predict_logits
from segdecay.models import output_stride
from segdecay.runs.folder import inference_choice, load_run

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
        return files
    raise UserError(f"{path}: no such file or folder")


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        image.save(fh, format="PNG")


def output_names(inputs: list[Path]) -> list[str]:
    """NAME of each input's NAME_mask.png: its stem, or (x.png beside x.jpg) its name with
    the dot as an underscore; refused if two would still be the same."""
    stems = Counter(p.stem for p in inputs)
    names = [p.stem if stems[p.stem] == 1 else p.name.replace(".", "_") for p in inputs]
    clash = [n for n, k in Counter(names).items() if k > 1]
    if clash:
        raise UserError(f"two inputs would both write {clash[0]}_mask.png; rename one")
    return names


@torch.no_grad()
def predict_paths(
    run: str | Path,
    input_path: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "run",
    eval_size: str | None = None,
    device: str = "auto",
    quiet: bool = False,
    decision: str = "run",
    tta: str = "run",
) -> list[Path]:
    """Write NAME_mask.png (class indices, palette attached) and NAME_overlay.png per image
    (NAME_SUFFIX_... where two inputs share a name),
    each pixel decided as the run chose (``decision="argmax"``: by the plain logits), with
    the run's test-time augmentation (``tta``: another group, or none)."""
    bias, group, _ = inference_choice(run, decision, tta)
    config, meta, model, dev = load_run(run, checkpoint, device)
    hw = parse_size(eval_size, "--eval-size") if eval_size else parse_size(
        config.eval_size, "eval_size")
    inputs = _inputs(Path(input_path))  # before creating --out: a typo leaves no folder
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    palette = np.array(meta["palette"], dtype=np.uint8).reshape(-1, 3)
    flat = palette.flatten().tolist() + [0] * (768 - palette.size)
    written = []
    names = output_names(inputs)
    for path, name in zip(inputs, names, strict=True):
        image = read_image(path)
        logits = predict_logits(model, image[None].to(dev), tuple(image.shape[-2:]), hw,
                                output_stride(model), channels_last=config.channels_last,
                                amp=config.amp, mean=config.input_mean, std=config.input_std,
                                tta=group)
        pred = apply_bias(logits, bias).argmax(1)[0].to("cpu", torch.uint8).numpy()
        mask = Image.fromarray(pred)  # mode L; putpalette turns it into P, values kept
        mask.putpalette(flat)
        mask_path = out / f"{name}_mask.png"
        _save_png(mask, mask_path)
        rgb = image.permute(1, 2, 0).numpy().astype(np.float32)
        overlay = (0.5 * rgb + 0.5 * palette[pred].astype(np.float32)).astype(np.uint8)
        overlay_path = out / f"{name}_overlay.png"
        _save_png(Image.fromarray(overlay), overlay_path)
        written += [mask_path, overlay_path]
        if not quiet:
            print(f"{path} -> {mask_path.name}, {overlay_path.name}")
    return written
