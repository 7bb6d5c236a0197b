"""Data-parallel training (DDP over gloo, on the CPU) is the single-process run, split.

Two processes with a global batch of 4 (2 images each, SyncBatchNorm, no augmentation) must
end with the weights of one process with batch 4, weight decay included; only rank 0 may
write files; a signal that reaches one rank stops both at the same step, and the resumed
run ends where the uninterrupted one does.

The model is a tiny conv net with BatchNorm (``segdecay.training.setup.build_model``
patched): the smp ResNet-18 U-Net at 32x32 with 4 images is so ill-conditioned in float32 that two
single-process runs that differ only in their thread count already part by ~5e-4 after 4
steps, which would hide a real bug. The tiny net's float32 noise stays near 1e-7, so the
test can use atol 1e-5 while each mistake it guards against moves weights far more (see
``test_a_doubled_decay_would_fail_the_tolerance``). The real model runs once via torchrun.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import segdecay.training.epoch as epoch_module
import segdecay.training.setup as training_setup
from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.training import Log, train
from segdecay.training.interrupt import TrainingInterrupted
from segdecay.training.state import load_checkpoint

SPEC = "synthetic:size=32,n_train=8,n_val=8,n_test=8"  # 2 global batches of 4 per epoch
LAMBDA = 0.5
ATOL = 1e-5
CONFIG = TrainConfig(
    data=SPEC, epochs=3, batch_size=4, device="cpu", augment="none", optimizer="sgd",
    lr=0.05, momentum=0.9, weight_decay=LAMBDA, decay_mode="penalty", sync_bn=True,
    amp=False,  # fp32: bf16 rounding of half batches would exceed ATOL
    # CE is a per-pixel mean: the ranks' halves average to the whole batch's (Dice's ratio
    # over the batch does not split so). ImageNet statistics: with the dataset's own, the
    # mid-epoch DDP resume differs from the uninterrupted run in the 8th digit of data_loss
    # (open; single-process resume stays exact, tests/test_interrupt.py).
    loss="ce", normalize="imagenet",
    # class weights would normalize each rank's half by its own weight sum; the decision
    # and test-time augmentation are chosen after training, apart from what this checks
    class_weights="none", decision="argmax", tta="none",
)

# The decay in the optimizer (coupled SGD, SGDW, AdamW) must act once per step, as the penalty.
OPTIMIZER_MODES = {"coupled": ("sgd", "coupled"), "sgdw": ("sgd", "decoupled"),
                   "adamw": ("adamw", "decoupled")}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    """Two conv+BatchNorm blocks and a 1x1 head: decayed weights, undecayed BN and bias."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        )
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.interpolate(self.head(self.body(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def tiny_model(arch: str, encoder: str, num_classes: int, **kwargs) -> nn.Module:
    """Stands in for ``segdecay.models.build_model``."""
    return TinyNet(num_classes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, base: str) -> None:
    """One DDP rank (spawned): run A; run B interrupted on rank 1 only, then resumed; run C
    diverges."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # One group for the three runs: train() uses a group it finds and leaves it open (the
    # group train() creates itself under torchrun is covered by the last test).
    dist.init_process_group("gloo")
    training_setup.build_model = tiny_model
    root = Path(base)
    # A: each rank is handed its own folder; rank 1 must leave its folder uncreated.
    train(CONFIG, root / f"a{rank}", log=Log(quiet=True))
    for name, (optimizer, mode) in OPTIMIZER_MODES.items():
        train(replace(CONFIG, optimizer=optimizer, decay_mode=mode), root / f"{name}_ddp",
              log=Log(quiet=True))
    # B: SIGTERM reaches rank 1 alone, during its 3rd step (epoch 2, batch 1 of 2).
    real, calls = epoch_module.augmented_batch, []

    def signalling_batch(*args, **kwargs):
        calls.append(1)
        if rank == 1 and len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    epoch_module.augmented_batch = signalling_batch
    try:
        train(CONFIG, root / "b", log=Log(quiet=True))
        stopped = None
    except TrainingInterrupted as exc:
        stopped = {"signum": exc.signum, "where": exc.where, "steps_run": len(calls)}
    (root / f"b_stop{rank}.json").write_text(json.dumps(stopped))
    epoch_module.augmented_batch = real
    train(CONFIG, root / "b", resume=True, log=Log(quiet=True))
    # C: a diverging run ends on every rank (rank 0 decides; nobody waits in a collective).
    summary = train(replace(CONFIG, lr=1e6), root / "c", log=Log(quiet=True))
    (root / f"c_status{rank}.json").write_text(json.dumps(summary["status"]))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Single-process references (lambda and 2 lambda) and the spawned 2-process runs."""
    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp_patch:
        mp_patch.setattr(training_setup, "build_model", tiny_model)
        train(CONFIG, base / "single", log=Log(quiet=True))
        train(replace(CONFIG, weight_decay=2 * LAMBDA), base / "single_2x", log=Log(quiet=True))
        for name, (optimizer, mode) in OPTIMIZER_MODES.items():
            train(replace(CONFIG, optimizer=optimizer, decay_mode=mode), base / name,
                  log=Log(quiet=True))
    mp.spawn(_worker, args=(2, _free_port(), str(base)), nprocs=2, join=True)
    return base


def _model(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.slow
def test_two_processes_end_with_the_single_process_weights(runs: Path) -> None:
    single, ddp = _model(runs / "single"), _model(runs / "a0")
    for name, tensor in single.items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(ddp[name], tensor, atol=ATOL, rtol=0, msg=name)
    one = load_checkpoint(runs / "single" / "last.pt")["history"]
    two = load_checkpoint(runs / "a0" / "last.pt")["history"]
    assert [r["val_miou"] for r in two] == [r["val_miou"] for r in one]  # exact counts
    for key in ("train_loss", "data_loss", "reg_term", "train_miou", "val_loss"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-5), key
    summary = json.loads((runs / "a0" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6


@pytest.mark.slow
def test_a_doubled_decay_would_fail_the_tolerance(runs: Path) -> None:
    # Had the penalty been counted once per rank (gradients summed instead of averaged, or
    # the term's gradient added on top of DDP's mean), the decay would act twice per step:
    # the 2-lambda run shows how far that moves the weights, 3-4 orders above ATOL.
    single, doubled = _model(runs / "single"), _model(runs / "single_2x")
    assert _max_diff(single, doubled) > 100 * ATOL
    assert _max_diff(single, _model(runs / "a0")) < ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMIZER_MODES))
def test_decay_in_the_optimizer_acts_once_per_step_under_ddp(runs: Path, name: str) -> None:
    single, ddp = _model(runs / name), _model(runs / f"{name}_ddp")
    for key, tensor in single.items():
        torch.testing.assert_close(ddp[key], tensor, atol=ATOL, rtol=0, msg=key)
    decay = json.loads((runs / f"{name}_ddp" / "decay.json").read_text())
    assert (decay["optimizer"], decay["decay_mode"]) == OPTIMIZER_MODES[name]
    assert decay["world_size"] == 2


@pytest.mark.slow
def test_only_rank_0_writes_files(runs: Path) -> None:
    assert not (runs / "a1").exists()
    written = {p.name for p in (runs / "a0").iterdir()}
    assert {"config.yaml", "decay.json", "metrics.csv", "summary.json", "last.pt", "best.pt",
            "report.html"} <= written
    assert not [p for p in (runs / "b").iterdir()  # no temp files; .lock is the run's lock
                if p.name.startswith(".") and p.name != ".lock"]


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_both_at_the_same_step_and_resume_is_exact(
    runs: Path,
) -> None:
    stops = [json.loads((runs / f"b_stop{r}.json").read_text()) for r in (0, 1)]
    for stop in stops:  # rank 0 never got the signal but stopped with rank 1
        assert stop == {"signum": signal.SIGTERM, "where": "in epoch 2/3 after step 3",
                        "steps_run": 3}
    # The resumed 2-process run ends exactly where the uninterrupted one (A) did.
    assert _max_diff(_model(runs / "b"), _model(runs / "a0")) == 0.0
    resumed = load_checkpoint(runs / "b" / "last.pt")["history"]
    straight = load_checkpoint(runs / "a0" / "last.pt")["history"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in straight]
    assert len((runs / "b" / "metrics.csv").read_text().strip().splitlines()) == 4


@pytest.mark.slow
def test_a_diverging_run_stops_on_every_rank(runs: Path) -> None:
    assert [json.loads((runs / f"c_status{r}.json").read_text()) for r in (0, 1)] == \
        ["diverged", "diverged"]
    assert json.loads((runs / "c" / "summary.json").read_text())["status"] == "diverged"


def test_each_rank_gets_its_rows_of_the_single_process_augmented_batch() -> None:
    # Every rank draws the augmentation of the whole global batch from the shared seeded
    # generator and keeps its rows: the images differ between ranks (distinct random
    # transforms) yet together they are exactly the single-process batch, and the generator
    # ends in the same state on every rank (so the next epoch's permutation agrees).
    from segdecay.data.synthetic import make_synthetic

    split = make_synthetic(size=32, n_train=8, n_val=1, n_test=1).train
    cfg = replace(CONFIG, augment="strong")
    idx = torch.tensor([5, 2, 7, 0])

    def batch(rows):
        gen = torch.Generator().manual_seed(3)
        x, m = epoch_module.augmented_batch(split, idx, cfg, (32, 32), gen, torch.device("cpu"),
                                            rows)
        return x, m, gen.get_state()

    whole, rank0, rank1 = batch(None), batch(slice(0, 2)), batch(slice(2, 4))
    assert torch.equal(torch.cat([rank0[0], rank1[0]]), whole[0])
    assert torch.equal(torch.cat([rank0[1], rank1[1]]), whole[1])
    assert torch.equal(rank0[2], whole[2]) and torch.equal(rank1[2], whole[2])


def test_global_batch_must_divide_by_the_processes(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc = main(["train", "--out", str(tmp_path / "run"), "--data", SPEC, "--batch-size", "3",
               "--device", "cpu", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--batch-size 3" in err and "divisible by the 2 processes" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_trains_the_real_model_data_parallel(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "segdecay", "train", "--out", str(out), "--data", SPEC, "--epochs", "1",
         "--batch-size", "4", "--device", "cpu", "--sync-bn", "--quiet"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    decay = json.loads((out / "decay.json").read_text())
    assert (decay["batch_size"], decay["steps_per_epoch"]) == (4, 2)  # global batch
    assert load_checkpoint(out / "last.pt")["step"] == 2
