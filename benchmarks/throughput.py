"""Training speed of segdecay's engine against a plain PyTorch loop, measured in one run.

    .venv/bin/python benchmarks/throughput.py [--size 192x256] [--batch-size 8]
        [--images 48] [--camvid ../shared/data/camvid] [--sizes 96x128,192x256,360x480]

1. The plain loop is written the usual way: a Dataset that normalizes and flips one image
   at a time, a shuffling DataLoader, an NCHW fp32 model, ``loss.item()`` every step. It
   uses the same smp U-Net/ResNet-18, batch, input size, loss and optimizer as the engine.
2. The engine runs ``segdecay.train`` with its defaults and with each speed option off, and
   with all of them off, one run each. Its epochs are timed from metrics.csv, the first
   (start-up) and the last (the final evaluation) left out, and the fastest counts.
3. With ``--camvid``: how fast the input pipeline (batch draw + augmentation) delivers
   images against how fast the model consumes them, and at each of ``--sizes`` the engine's
   speed and memory in a fresh process: RSS once the data is loaded, and the peak RSS while
   training (the high-water mark is reset after loading; Linux).
``--parts`` picks the parts to run: ``speed`` and ``camvid`` by default; ``compile`` adds the
engine with ``--compile`` (opt-in: inductor compiles for minutes on a CPU, and is slower
than eager there).

Every figure is images per second; ratios are against the plain loop of this same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from segdecay.config import TrainConfig, parse_size
from segdecay.data import load_dataset
from segdecay.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segdecay.decay.defaults import optimizer_defaults
from segdecay.training.hardware import resolve_amp, resolve_device

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


class PlainDataset(torch.utils.data.Dataset):
    """The usual per-sample dataset: uint8 in memory, float + flip in __getitem__."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = (self.images[i].float() / 255.0 - MEAN) / STD
        y = self.masks[i].long()
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x, y


def resized(split, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images and masks at ``hw`` (done once, outside any timing)."""
    images = torch.stack([F.interpolate(im[None].float(), size=hw, mode="bilinear",
                                        align_corners=False)[0].round().byte()
                          for im in split.images])
    masks = torch.stack([F.interpolate(m[None, None].float(), size=hw, mode="nearest")[0, 0]
                         .byte() for m in split.masks])
    return images, masks


def plain_loop(images, masks, num_classes: int, config: TrainConfig, steps: int) -> float:
    """Images/second of a textbook training loop (after two warm-up steps)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    config = optimizer_defaults(config, max(1, len(images) // config.batch_size))
    model = smp.Unet(config.encoder, encoder_weights=None, classes=num_classes)
    if config.optimizer.startswith("sgd"):
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
    loader = torch.utils.data.DataLoader(PlainDataset(images, masks),
                                         batch_size=config.batch_size, shuffle=True,
                                         drop_last=True)
    model.train()
    done, total, started = 0, 0.0, None
    while done < steps + 2:
        for x, y in loader:
            if done == 2:
                started = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            loss.backward()
            opt.step()
            total += loss.item()
            done += 1
            if done == steps + 2:
                break
    return steps * config.batch_size / (time.perf_counter() - started)


def engine_speed(config: TrainConfig, data, timed_epochs: int = 2) -> float:
    """Images/second of segdecay.train: the best of its epochs after the first (start-up) and
    before the last (the final evaluation), timed from metrics.csv, so one run gives every
    measurement and a compiled model compiles once."""
    from segdecay.training import Log, train

    with tempfile.TemporaryDirectory() as tmp:
        train(replace(config, epochs=timed_epochs + 2, eval_every=1000), Path(tmp), data=data,
              log=Log(quiet=True), checkpoints=False)
        seconds = [float(row["seconds"])
                   for row in csv.DictReader((Path(tmp) / "metrics.csv").open())]
    fastest = min(b - a for a, b in zip(seconds[:-2], seconds[1:-1], strict=True))
    return (len(data.train) // config.batch_size) * config.batch_size / fastest


def speed_settings(config: TrainConfig) -> tuple[bool, bool, bool]:
    """What a run's speed options resolve to on this machine: channels_last, bf16, compile."""
    amp = resolve_amp(config.amp, resolve_device(config.device))
    return bool(config.channels_last), amp, bool(config.compile)


def engine_variants(base: TrainConfig, data, with_compile: bool, repeats: int):
    """(name, img/s) of the engine with its defaults and with each speed option off. A variant
    that resolves to the settings of one already timed (``--no-amp`` where bf16 autocast is
    off by default anyway) is said once, not trained again."""
    speed_options = ["channels_last", "amp"]  # on by default (amp: where bf16 is native)
    variants = [("segdecay defaults", {})]
    if with_compile:
        variants.append(("segdecay defaults + compile", {"compile": True}))
    variants += [(f"segdecay, {opt} off", {opt: False}) for opt in speed_options]
    variants += [("segdecay, all speed options off", {o: False for o in speed_options})]
    timed: dict[tuple[bool, bool, bool], str] = {}
    for name, change in variants:
        config = replace(base, **change)
        settings = speed_settings(config)
        if settings in timed:
            print(f"{name:<44} same settings as '{timed[settings]}' here (bf16 autocast is "
                  f"{'on' if settings[1] else 'off'} by default on this machine)", flush=True)
            continue
        timed[settings] = name
        yield name, engine_speed(config, data, timed_epochs=repeats)


def pipeline_speed(config: TrainConfig, data, batches: int = 20) -> float:
    """Images/second the input pipeline delivers: index draw, batch gather, augmentation."""
    from segdecay.training.epoch import augmented_batch

    hw = parse_size(config.size, "--size")
    gen = torch.Generator().manual_seed(0)
    n = len(data.train)
    augmented_batch(data.train, torch.arange(config.batch_size), config, hw, gen,
                    torch.device("cpu"))
    started = time.perf_counter()
    for _ in range(batches):
        idx = torch.randperm(n, generator=gen)[: config.batch_size]
        augmented_batch(data.train, idx, config, hw, gen, torch.device("cpu"))
    return batches * config.batch_size / (time.perf_counter() - started)


_CHILD = """
import json, sys
from dataclasses import replace
sys.path.insert(0, {bench!r})
from throughput import engine_speed
from segdecay.config import TrainConfig
from segdecay.data import load_dataset
config = TrainConfig(**json.loads(sys.argv[1]))
data = load_dataset(config.data)
data.train = data.train.subset(list(range({images})))
data.val = data.val.subset(list(range(8)))
data.train.stacked(), data.val.stacked()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
loaded = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
speed = engine_speed(config, data)
print(json.dumps({{"speed": speed, "loaded_mib": loaded, "peak_mib": status("VmHWM:")}}))
"""


def sized_run(config: TrainConfig, images: int) -> dict:
    """Speed and peak RSS of a fresh process training on CamVid at ``config.size``."""
    code = _CHILD.format(bench=str(Path(__file__).parent), images=images)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config.to_dict())],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="192x256")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=96, help="training images per epoch")
    parser.add_argument("--camvid", default=None, help="CamVid folder for part 3")
    parser.add_argument("--sizes", default="96x128,192x256,288x384,352x480")
    parser.add_argument("--repeats", type=int, default=2,
                        help="best of N per measurement: N plain loops, N epochs of one run")
    parser.add_argument("--parts", default="speed,camvid",
                        help="speed, compile (opt-in: compiling takes minutes on a CPU), "
                             "camvid (needs --camvid)")
    args = parser.parse_args()
    hw = parse_size(args.size, "--size")
    spec = f"synthetic:size={max(hw)},n_train={args.images},n_val=8,n_test=8"
    # The plain loop's recipe: SGD with coupled decay, CE, flips; nothing decided after the
    # last epoch (decision, test-time augmentation), which no timed epoch holds anyway.
    base = TrainConfig(data=spec, size=list(hw), batch_size=args.batch_size, optimizer="sgd",
                       augment="flip", loss="ce", class_weights="none", decision="argmax",
                       tta="none")
    data = load_dataset(spec)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"U-Net/{base.encoder}, batch {base.batch_size}, {hw[0]}x{hw[1]}, "
          f"{base.optimizer} (amp default: {base.amp})", flush=True)

    parts = set(args.parts.split(","))
    results = {}
    if "speed" in parts:
        images, masks = resized(data.train, hw)
        steps = args.images // args.batch_size
        plain = max(plain_loop(images, masks, data.info.num_classes, base, steps)
                    for _ in range(args.repeats))
        print(f"{'plain PyTorch loop (NCHW fp32)':<44} {plain:7.2f} img/s   1.00x", flush=True)
        for name, speed in engine_variants(base, data, "compile" in parts, args.repeats):
            results[name] = speed
            print(f"{name:<44} {speed:7.2f} img/s {speed / plain:6.2f}x", flush=True)

    if args.camvid and "camvid" in parts:
        cam = replace(base, data=f"camvid:{args.camvid}", augment="light")
        camdata = load_dataset(cam.data)
        pipe = pipeline_speed(cam, camdata)
        model = results.get("segdecay defaults") or engine_speed(base, data)
        print(f"\nCamVid input pipeline ({cam.augment} augmentation, {hw[0]}x{hw[1]}): "
              f"{pipe:.1f} img/s, {pipe / model:.1f}x what the model consumes "
              f"({model:.2f} img/s)", flush=True)
        print(f"\n{'CamVid input':>12} {'img/s':>7} {'s/step':>7} {'RSS after load':>14} "
              f"{'peak in training (MiB)':>22}")
        for text in args.sizes.split(","):
            size = list(parse_size(text, "--sizes"))
            r = sized_run(replace(cam, size=size, eval_size=size), images=args.images)
            print(f"{text:>12} {r['speed']:7.2f} {base.batch_size / r['speed']:7.2f} "
                  f"{r['loaded_mib']:14.0f} {r['peak_mib']:22.0f}", flush=True)


if __name__ == "__main__":
    main()
