"""segdecay's recipes next to two plain peer recipes, side by side in one invocation.

The peers are written here directly with torch and segmentation_models_pytorch, not through
segdecay's engine, so they stay an independent yardstick; only the decoded images come from
``segdecay.data.load_dataset`` (the same pixels for every row). Every row trains the same
model (smp Unet/ResNet-18 from scratch by default) at the same input size, crop, batch and
number of steps, and is scored on the whole test split at label resolution:

- ``torchvision``: torchvision's segmentation reference: SGD 0.01, momentum 0.9, coupled
  weight decay 1e-4 on every parameter, poly(0.9) per step, plain cross-entropy;
- ``smp``: the segmentation_models_pytorch example: Adam 2e-4, no decay, Dice loss, cosine
  to 1e-5;
- ``segdecay-defaults``: ``segdecay train`` with its defaults at that protocol (no recipe
  file: only the protocol's budget flags); ``--without PART,...`` adds a row of the defaults
  without one of their training-time parts (``decay``, ``augment``, ``class-weights``,
  ``loss``, ``adamw``: see :data:`WITHOUT`), and every segdecay row is also scored without
  its decision rule and without its test-time augmentation (the same weights, paired), and
  at its final weights instead of its best validation's (the same run), so the table says
  what each default bought; ``--recipe NAME=FILE.yaml`` adds segdecay rows
  from a config file (say, a tune's chosen recipe).

Every row trains with bf16 autocast where bf16 is native (AVX512-BF16, AMX, a GPU with bf16)
and in fp32 elsewhere, as ``segdecay train`` does; ``--amp``/``--no-amp`` force it.

CamVid (30 epochs at 192x256, evaluated from 192x256 inputs at the labels' 360x480)::

    .venv/bin/python benchmarks/peer_recipes.py --data camvid:../shared/data/camvid \\
        --size 192x256 --epochs 30 --seeds 0,1 --out runs/peers/camvid

CrackForest (random 256x256 crops, 600 steps, whole 320x480 test images)::

    .venv/bin/python benchmarks/peer_recipes.py --data folder:../shared/data/crackforest \\
        --crop 256x256 --steps 600 --seeds 0,1 --out runs/peers/crackforest

Prints one table (mIoU; foreground IoU and Dice on binary data; minutes) and the per-class
IoU, and writes ``results.json`` in ``--out``. A recipe with ``decision: adjusted`` is scored
as its run decides; the table also lists, seed by seed, its plain argmax score and, for the
peers, what the same logit adjustment chosen on val would make of them (their own rows stay
argmax), so the decision rule's share of a margin shows. Rows train one after another, so
minutes are comparable within one invocation. Rerunning the same command resumes: rows already in
``results.json`` are kept, not retrained.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from segdecay.config import TrainConfig, load_config, parse_size
from segdecay.data import load_dataset
from segdecay.data.base import IGNORE_INDEX, SegSplit
from segdecay.decision import DecisionSweep, choose_tau_on_evidence, log_prior
from segdecay.fileio import atomic_write_text
from segdecay.losses import class_pixel_counts
from segdecay.runs import evaluate_run
from segdecay.runs.folder import is_finished, read_summary
from segdecay.training import Log, train
from segdecay.training.hardware import resolve_amp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Protocol:
    """What every row shares: data, model, input geometry, batch, steps, precision."""

    data: str
    arch: str
    encoder: str
    size: tuple[int, int] | None
    crop: tuple[int, int] | None
    eval_size: tuple[int, int] | None
    batch_size: int
    epochs: int | None
    steps: int | None
    amp: bool
    vflip: bool
    norm: str  # how the peers normalize: imagenet | per-image


@dataclass(frozen=True)
class PeerRecipe:
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    loss: str


PEERS = {
    "torchvision": PeerRecipe("sgd", 0.01, 1e-4, "poly", "ce"),
    "smp": PeerRecipe("adam", 2e-4, 0.0, "cosine", "dice"),
}


# ---------------------------------------------------------------- peers: data and scoring

def _normalize(x: torch.Tensor, norm: str) -> torch.Tensor:
    """uint8 -> float input: ImageNet mean/std, or each image to zero mean and unit std."""
    x = x.float() / 255.0
    if norm == "per-image":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        return (x - mean) / std
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _resized(images: torch.Tensor, masks: torch.Tensor,
             size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split at ``size`` (bilinear images, nearest masks), once."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images, masks
    img = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    msk = F.interpolate(masks[:, None].float(), size=size, mode="nearest")[:, 0]
    return img.round().clamp(0, 255).to(torch.uint8), msk.to(torch.uint8)


def _batch(images: torch.Tensor, masks: torch.Tensor, index: torch.Tensor,
           protocol: Protocol, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random crop and random flips of each chosen image."""
    x, m = images[index], masks[index].long()
    if protocol.crop is not None:
        ch, cw = protocol.crop
        h, w = x.shape[-2:]
        xs, ms = [], []
        for i in range(len(index)):
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            xs.append(x[i, :, top:top + ch, left:left + cw])
            ms.append(m[i, top:top + ch, left:left + cw])
        x, m = torch.stack(xs), torch.stack(ms)
    flips = torch.rand(len(index), 2, generator=gen)
    for i in range(len(index)):
        if flips[i, 0] < 0.5:
            x[i], m[i] = x[i].flip(-1), m[i].flip(-1)
        if protocol.vflip and flips[i, 1] < 0.5:
            x[i], m[i] = x[i].flip(-2), m[i].flip(-2)
    return _normalize(x, protocol.norm), m


def _loss(name: str) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    return smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE_INDEX)


def _optimizer_and_schedule(model: nn.Module, recipe: PeerRecipe, steps: int):
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr,
                               weight_decay=recipe.weight_decay)
    if recipe.schedule == "poly":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 - t / steps) ** 0.9)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-5)
    return opt, sched


def confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """k x k counts (rows: truth), ignore pixels left out."""
    keep = target != IGNORE_INDEX
    return torch.bincount(target[keep] * k + pred[keep], minlength=k * k).view(k, k)


def scores(conf: torch.Tensor) -> dict:
    """Per-class IoU and Dice over the whole split; NaN for a class absent and unpredicted."""
    conf = conf.double()
    tp = conf.diag()
    fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
    iou = (tp / (tp + fp + fn)).tolist()
    dice = (2 * tp / (2 * tp + fp + fn)).tolist()
    present = [v for v in iou if not math.isnan(v)]
    return {"miou": sum(present) / len(present), "iou": iou, "dice": dice}


@torch.no_grad()
def score_split(model: nn.Module, split: SegSplit, k: int, protocol: Protocol,
                sweep: DecisionSweep | None = None) -> dict:
    """Whole images: input at ``eval_size`` (or native), logits at label size; ``sweep``
    also counts every adjusted decision."""
    model.eval()
    conf = torch.zeros(k, k, dtype=torch.long)
    for image, mask in zip(split.images, split.masks, strict=True):
        x = _normalize(image[None], protocol.norm)
        if protocol.eval_size is not None:
            x = F.interpolate(x, size=protocol.eval_size, mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32), mode="reflect")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=protocol.amp):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        logits = F.interpolate(logits[..., :h, :w].float(), size=mask.shape[-2:],
                               mode="bilinear", align_corners=False)
        conf += confusion(logits.argmax(1)[0], mask.long(), k)
        if sweep is not None:
            sweep.update(logits, mask[None].long())
    return scores(conf)


def score_test(model: nn.Module, data, protocol: Protocol) -> dict:
    """The peer's test scores (argmax), and in ``adjusted`` what segdecay's ``--decision
    adjusted`` would make of this model: t chosen on val (as
    :func:`segdecay.decision.choose_tau_on_evidence` does), the same test pass scored with
    it. The peer's
    own row stays plain argmax; this only says how much of a segdecay row's gain the
    decision rule alone would give any model."""
    k = data.info.num_classes
    prior = log_prior(class_pixel_counts(data.train.masks, k).pixels.tolist())
    val, test = DecisionSweep(prior, IGNORE_INDEX), DecisionSweep(prior, IGNORE_INDEX)
    result = score_split(model, data.test, k, protocol, test)
    score_split(model, data.val, k, protocol, val)
    mious = val.mious()
    tau = choose_tau_on_evidence(mious, val.per_image(), val.taus)["tau"]
    chosen = test.result(tau)
    return {**result, "adjusted": {
        "tau": tau, "val_miou": mious[tau], "val_miou_argmax": mious[0.0],
        "miou": chosen["miou"], "iou": chosen["iou"], "dice": chosen["dice"]}}


def train_peer(recipe: PeerRecipe, protocol: Protocol, seed: int) -> dict:
    """One peer run: train on train/, score on test/; returns scores and minutes."""
    data = load_dataset(protocol.data)
    k = data.info.num_classes
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = smp.create_model(protocol.arch, protocol.encoder, encoder_weights=None,
                             classes=k).to(memory_format=torch.channels_last)
    images, masks = _resized(*data.train.stacked(), protocol.size)
    n = len(images)
    steps = protocol.steps or protocol.epochs * max(1, n // protocol.batch_size)
    opt, sched = _optimizer_and_schedule(model, recipe, steps)
    loss_fn = _loss(recipe.loss)
    started = time.perf_counter()
    model.train()
    order, cursor = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if cursor + protocol.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        index = order[cursor:cursor + protocol.batch_size]
        cursor += protocol.batch_size
        x, m = _batch(images, masks, index, protocol, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=protocol.amp):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits.float(), m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    minutes = (time.perf_counter() - started) / 60
    return {**score_test(model, data, protocol), "minutes": minutes, "steps": steps,
            "class_names": data.info.class_names}


# ---------------------------------------------------------------- segdecay rows

def segdecay_config(protocol: Protocol, seed: int, base: TrainConfig | None) -> TrainConfig:
    """The protocol's data, model, geometry, batch and budget over a recipe (or defaults)."""
    config = base or TrainConfig()
    size = list(protocol.size) if protocol.size else None
    crop = list(protocol.crop) if protocol.crop else None
    eval_size = list(protocol.eval_size) if protocol.eval_size else None
    return replace(config, data=protocol.data, arch=protocol.arch, encoder=protocol.encoder,
                   size=size, crop=crop, eval_size=eval_size, batch_size=protocol.batch_size,
                   epochs=protocol.epochs or config.epochs, steps=protocol.steps,
                   amp=protocol.amp, seed=seed)


# What a "defaults without PART" row changes: the part's plain alternative (no decay, the
# horizontal flips every recipe uses, no class weights, plain CE, and for AdamW with its
# timescale rule the classic SGD recipe: lr 0.05, momentum 0.9, lambda 5e-4).
WITHOUT = {
    "decay": {"weight_decay": 0.0},
    "augment": {"augment": "flip"},
    "class-weights": {"class_weights": "none"},
    "loss": {"loss": "ce"},
    "adamw": {"optimizer": "sgd", "weight_decay": 5e-4},
}
DEFAULTS_ROW = "segdecay-defaults"


def without_rows(parts: str) -> dict[str, dict]:
    """``--without`` as recipe rows: name -> the options that differ from the defaults."""
    rows = {}
    for part in (p.strip() for p in parts.split(",") if p.strip()):
        if part not in WITHOUT:
            raise SystemExit(f"--without {part}: choose from {', '.join(WITHOUT)}")
        rows[f"defaults-without-{part}"] = WITHOUT[part]
    return rows


def _headline(payload: dict) -> dict:
    return {k: payload[k] for k in ("miou", "iou", "dice")}


def train_segdecay(config: TrainConfig, out: Path) -> dict:
    """One segdecay run through its engine, scored on test by ``segdecay evaluate``; a run
    an interrupted invocation left behind is resumed, a finished one reused."""
    if is_finished(out):
        summary = read_summary(out)
    else:
        summary = train(config, out, log=Log(), resume=(out / "last.pt").exists())
    test = evaluate_run(out, split="test", quiet=True)
    row = {"miou": test["miou"], "iou": test["iou"], "dice": test["dice"],
           "val_miou": summary.get("val_miou", summary["final_val_miou"]),  # of its answer
           "minutes": summary["train_seconds"] / 60, "steps": summary["steps"],
           "class_names": summary["class_names"]}
    decision = summary.get("decision")
    if decision:  # scored as the run decides; the same weights without each post-hoc part
        def scored(name: str, **how: str) -> dict:
            return _headline(evaluate_run(out, split="test", quiet=True,
                                          out=out / f"eval_test_{name}.json", **how))
        row["decision"] = {"tau": decision["tau"], "tta": decision.get("tta", "none"),
                           "val_miou": decision["val_miou"],
                           "val_miou_argmax": decision["val_miou_argmax"],
                           "argmax": scored("argmax", decision="argmax", tta="none"),
                           "without_decision": scored("no_decision", decision="argmax"),
                           "without_tta": scored("no_tta", tta="none"),
                           "last_argmax": scored("last_argmax", checkpoint="last",
                                                 decision="argmax", tta="none"),
                           "test_seconds": test["seconds"]}
    return row


# ---------------------------------------------------------------- table

def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _spread(values: list[float]) -> str:
    return f"±{statistics.stdev(values):.3f}" if len(values) > 1 else ""


def print_table(results: dict[str, list[dict]]) -> None:
    """One row per recipe, means over seeds (± sample SD), then per-class IoU."""
    first = next(iter(results.values()))[0]
    names, binary = first["class_names"], len(first["class_names"]) == 2
    head = f"{'recipe':<22} {'seeds':>5} {'test mIoU':>14}"
    head += f" {'fg IoU':>14} {'fg Dice':>14}" if binary else ""
    print(head + f" {'val mIoU':>8} {'minutes':>8} {'steps':>6}")
    for name, runs in results.items():
        miou = [r["miou"] for r in runs]
        line = f"{name:<22} {len(runs):>5} {_mean(miou):>8.3f}{_spread(miou):>6}"
        if binary:
            fg_iou, fg_dice = [r["iou"][1] for r in runs], [r["dice"][1] for r in runs]
            line += f" {_mean(fg_iou):>8.3f}{_spread(fg_iou):>6}"
            line += f" {_mean(fg_dice):>8.3f}{_spread(fg_dice):>6}"
        val = [r["val_miou"] for r in runs if r.get("val_miou") is not None]  # ours only
        line += f" {_mean(val):>8.3f}" if len(val) == len(runs) else f" {'-':>8}"
        line += f" {_mean([r['minutes'] for r in runs]):>8.1f} {runs[0]['steps']:>6}"
        print(line)
    print_margins(results, binary)
    print_decisions(results, binary)
    print_bought(results, binary)
    print("\nper-class test IoU (mean over seeds)")
    print(f"{'class':<14}" + "".join(f" {n[:12]:>12}" for n in results))
    for c, cname in enumerate(names):
        print(f"{cname[:14]:<14}" + "".join(
            f" {_mean([r['iou'][c] for r in runs]):>12.3f}" for runs in results.values()))


def _score(run: dict, binary: bool) -> float:
    """The headline metric: foreground Dice on binary data, else mIoU."""
    return run["dice"][1] if binary else run["miou"]


def print_margins(results: dict[str, list[dict]], binary: bool) -> None:
    """Each segdecay row minus the better peer (higher mean), seed by seed on shared seeds."""
    peers = [name for name in results if name in PEERS]
    if not peers:
        return
    best = max(peers, key=lambda name: _mean([_score(r, binary) for r in results[name]]))
    metric = "fg Dice" if binary else "test mIoU"
    peer_by_seed = {r["seed"]: _score(r, binary) for r in results[best]}
    print(f"\n{metric} minus the better peer ({best}), per seed")
    for name, runs in results.items():
        if name in PEERS:
            continue
        diffs = [_score(r, binary) - peer_by_seed[r["seed"]] for r in runs
                 if r["seed"] in peer_by_seed]
        if diffs:
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            print(f"{name:<22} mean {_mean(diffs):+.3f}  ({per_seed})")


def _decision_pair(run: dict, binary: bool) -> tuple[float, float, float] | None:
    """(t, headline with argmax, headline with t chosen on val) of a row that has both."""
    if "decision" in run:  # a segdecay row: its t against argmax, both without TTA
        d = run["decision"]
        if "without_tta" in d:
            return d["tau"], _score(d["argmax"], binary), _score(d["without_tta"], binary)
        return d["tau"], _score(d["argmax"], binary), _score(run, binary)
    if "adjusted" in run:  # a peer, and what segdecay's decision rule makes of it
        a = run["adjusted"]
        return a["tau"], _score(run, binary), _score(a, binary)
    return None


def print_decisions(results: dict[str, list[dict]], binary: bool) -> None:
    """Each row's argmax against the logit adjustment chosen on val, seed by seed: what the
    decision rule alone buys (the peers' own rows stay argmax)."""
    lines = []
    for name, runs in results.items():
        pairs = [p for p in (_decision_pair(r, binary) for r in runs) if p]
        if len(pairs) != len(runs):
            continue
        taus = ", ".join(f"{t:g}" for t, _, _ in pairs)
        gains = ", ".join(f"{b - a:+.3f}" for _, a, b in pairs)
        own = "own" if "decision" in runs[0] else "not its own"
        lines.append(f"{name:<22} t {taus:<12} argmax {_mean([a for _, a, _ in pairs]):.3f}"
                     f"  adjusted {_mean([b for _, _, b in pairs]):.3f}  ({gains}; {own})")
    if lines:
        metric = "fg Dice" if binary else "test mIoU"
        print(f"\n{metric}: argmax against argmax(logit - t*log prior), t chosen on val")
        print("\n".join(lines))


def print_bought(results: dict[str, list[dict]], binary: bool) -> None:
    """What each default bought, seed by seed on the same seeds: the defaults minus the
    same weights without the decision rule or the test-time augmentation, the same run's
    final weights instead of its best validation's (both argmax, one pass), and minus each
    ``defaults-without-PART`` row (its own training run)."""
    base = {r["seed"]: r for r in results.get(DEFAULTS_ROW, [])}
    if not base:
        return
    lines = []
    for part in ("without_decision", "without_tta"):
        diffs = [_score(r, binary) - _score(r["decision"][part], binary)
                 for r in base.values() if part in r.get("decision", {})]
        if diffs:
            lines.append((part.replace("_", " ").replace("without ", ""), diffs))
    diffs = [_score(r["decision"]["argmax"], binary) - _score(r["decision"]["last_argmax"],
                                                                binary)
             for r in base.values() if "last_argmax" in r.get("decision", {})]
    if diffs:  # the checkpoint the run answers with against its final weights, both argmax
        lines.append(("checkpoint", diffs))
    for name, runs in results.items():
        if name.startswith("defaults-without-"):
            diffs = [_score(base[r["seed"]], binary) - _score(r, binary) for r in runs
                     if r["seed"] in base]
            lines.append((name.removeprefix("defaults-without-"), diffs))
    if lines:
        metric = "fg Dice" if binary else "test mIoU"
        print(f"\nwhat each default bought: {metric} of {DEFAULTS_ROW} minus the row without it")
        for part, diffs in lines:
            per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
            print(f"{part:<22} mean {_mean(diffs):+.3f}  ({per_seed})")


# ---------------------------------------------------------------- results file

def _as_read_back(values: dict) -> dict:
    """Plain values as results.json gives them back (tuples as lists), so they compare."""
    return json.loads(json.dumps(values))


def _protocol_json(protocol: Protocol) -> dict:
    return _as_read_back(protocol.__dict__)


def finished_rows(path: Path, protocol: Protocol) -> dict[str, list[dict]]:
    """Rows an earlier invocation of the same protocol finished, so a rerun resumes; a
    results file of another protocol is refused rather than mixed in."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved["protocol"] != _protocol_json(protocol):
        raise SystemExit(f"{path} holds another protocol ({saved['protocol']}); give "
                         "another --out or remove it")
    return saved["results"]


def write_results(path: Path, protocol: Protocol, results: dict[str, list[dict]]) -> None:
    """Atomic: a run killed mid-write keeps the rows it had."""
    atomic_write_text(path, json.dumps({"protocol": protocol.__dict__, "results": results},
                                       indent=1))


def _recipe_option(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--recipe '{text}': expected NAME=CONFIG.yaml")
    return name, path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="camvid:PATH or folder:PATH (with test/)")
    p.add_argument("--rows", default=f"torchvision,smp,{DEFAULTS_ROW}",
                   help=f"which built-in rows to run (torchvision, smp, {DEFAULTS_ROW})")
    p.add_argument("--without", default="", metavar="PART,...",
                   help="rows of the defaults without a part: " + ", ".join(WITHOUT))
    p.add_argument("--recipe", type=_recipe_option, action="append", default=[],
                   metavar="NAME=CONFIG.yaml", help="a segdecay row from a config file")
    p.add_argument("--seeds", default="0")
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--size", help="training input HxW (whole images resized)")
    p.add_argument("--crop", help="random crop HxW")
    p.add_argument("--eval-size", help="evaluation input HxW (default: --size, else native)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, help="epochs of n // batch steps")
    p.add_argument("--steps", type=int, help="optimizer steps (instead of --epochs)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for every row (default: where bf16 is native)")
    p.add_argument("--vflip", action=argparse.BooleanOptionalAction, default=None,
                   help="peers flip vertically too (default: on for folder: data)")
    p.add_argument("--peer-norm", choices=("imagenet", "per-image"),
                   help="peers' input normalization (default: per-image for folder: data, "
                        "ImageNet mean/std for camvid:)")
    p.add_argument("--out", default="runs/peers")
    args = p.parse_args()
    if (args.epochs is None) == (args.steps is None):
        p.error("give exactly one of --epochs and --steps")
    return args


def main() -> None:
    args = parse_args()
    folder = args.data.strip().lower().startswith("folder:")
    size = parse_size(args.size, "--size")
    protocol = Protocol(
        data=args.data, arch=args.arch, encoder=args.encoder, size=size,
        crop=parse_size(args.crop, "--crop"),
        eval_size=parse_size(args.eval_size, "--eval-size") or size,
        batch_size=args.batch_size, epochs=args.epochs, steps=args.steps,
        amp=resolve_amp(args.amp, torch.device("cpu")),
        vflip=folder if args.vflip is None else args.vflip,
        norm=args.peer_norm or ("per-image" if folder else "imagenet"))
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    extra = {name: load_config(path) for name, path in args.recipe}
    extra.update({name: TrainConfig(**changes)
                  for name, changes in without_rows(args.without).items()})
    out = Path(args.out)
    results = finished_rows(out / "results.json", protocol)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in rows + list(extra):
            recipe = row_recipe(name, protocol, seed, extra)
            kept = [r for r in results.get(name, []) if r["seed"] == seed]
            if kept:
                check_same_recipe(kept[0], recipe, name, seed, out)
                _fill_val(kept[0], out / f"{name}-seed{seed}")
                print(f"== {name} seed {seed}: in {out / 'results.json'}, kept", flush=True)
                continue
            print(f"== {name} seed {seed}", flush=True)
            if name in PEERS:
                result = train_peer(PEERS[name], protocol, seed)
            else:
                result = train_segdecay(TrainConfig(**recipe), out / f"{name}-seed{seed}")
            results.setdefault(name, []).append({**result, "seed": seed, "recipe": recipe})
            write_results(out / "results.json", protocol, results)
    print_table(results)


def _fill_val(row: dict, run: Path) -> None:
    """A kept segdecay row from before rows stored val mIoU: read it from its run folder."""
    if "val_miou" not in row and is_finished(run):
        row["val_miou"] = read_summary(run)["final_val_miou"]


def row_recipe(name: str, protocol: Protocol, seed: int, extra: dict) -> dict:
    """What a row trains, as plain values: the peer recipe, or segdecay's config."""
    if name in PEERS:
        return _as_read_back(PEERS[name].__dict__)
    return _as_read_back(asdict(segdecay_config(protocol, seed, extra.get(name))))


def check_same_recipe(row: dict, recipe: dict, name: str, seed: int, out: Path) -> None:
    """A kept row must have been trained with the recipe given now: an edited recipe file
    would otherwise be reported with the old one's numbers (rows from before the recipe was
    stored are kept, with a note). An option segdecay gained after the row was stored
    counts as unchanged at its default, which is what the row trained with."""
    if "recipe" not in row:
        print(f"   note: {name} seed {seed} predates stored recipes; kept unchecked", flush=True)
        return
    stored = {**_added_options(name, row["recipe"], recipe), **row["recipe"]}
    changed = sorted(k for k in set(stored) | set(recipe) if stored.get(k) != recipe.get(k))
    if changed:
        raise SystemExit(f"{out / 'results.json'}: row {name} seed {seed} was trained with "
                         f"another recipe ({', '.join(changed)} differ); move "
                         f"{out / 'results.json'} and {out / f'{name}-seed{seed}'} aside or "
                         "name the recipe anew")


def _added_options(name: str, stored: dict, recipe: dict) -> dict:
    """TrainConfig's defaults of the options a stored segdecay recipe predates."""
    if name in PEERS:
        return {}
    defaults = _as_read_back(asdict(TrainConfig()))
    return {k: defaults[k] for k in recipe if k not in stored and k in defaults}


if __name__ == "__main__":
    main()
