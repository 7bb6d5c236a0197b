"""Interrupted runs lose nothing: SIGKILL costs at most the current epoch, SIGINT/SIGTERM
cost nothing, and ``--resume`` ends with exactly the weights of an uninterrupted run.

All runs use one intra-op thread (in-process ``torch.set_num_threads(1)``, subprocesses
``OMP_NUM_THREADS=1``), which makes CPU training bit-reproducible across processes, so the
comparisons below are exact equalities, not tolerances.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import segdecay.training.epoch as epoch_module
from segdecay.cli import main
from segdecay.errors import UserError
from segdecay.training.state import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

SPEC = "synthetic:size=32,n_train=8,n_val=8,n_test=8"  # 2 steps per epoch at batch 4
STEPS_PER_EPOCH = 2
EPOCHS = 3
ARGS = ["--data", SPEC, "--epochs", str(EPOCHS), "--batch-size", "4", "--device", "cpu",
        "--dropout", "0.2", "--augment", "light", "--quiet",
        "--encoder", SMALL_ENCODER]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--out", str(out), *ARGS]) == 0
    return _final(out)


def _final(run: Path) -> dict:
    state = load_checkpoint(run / "last.pt")
    summary = json.loads((run / "summary.json").read_text())
    return {"model": state["model"], "history": state["history"], "summary": summary,
            "rows": (run / "metrics.csv").read_text().strip().splitlines()}


def _assert_same_run(got: dict, want: dict) -> None:
    assert got["summary"]["status"] == "completed"
    assert got["summary"]["final_val_miou"] == want["summary"]["final_val_miou"]
    assert got["summary"]["steps"] == want["summary"]["steps"]
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    keys = ["epoch", "step", "train_loss", "data_loss", "train_miou", "val_miou"]
    assert [{k: r[k] for k in keys} for r in got["history"]] == \
        [{k: r[k] for k in keys} for r in want["history"]]
    assert len(got["rows"]) == len(want["rows"]) == 1 + EPOCHS


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segdecay", "train", "--out", str(out),
                             *ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before {path.name} appeared: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path: Path, reference) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(out / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed"
    state = load_checkpoint(out / "last.pt")  # atomic: a kill never leaves half a file
    assert 1 <= state["epoch"] < EPOCHS
    assert not (out / "summary.json").exists()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    _assert_same_run(_final(out), reference)


@pytest.mark.slow
def test_sigterm_writes_checkpoint_exits_143_and_resumes_exactly(tmp_path: Path,
                                                                 reference) -> None:
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(out / "last.pt", proc)
    time.sleep(0.2)  # lands in epoch 2 or at its end: both must resume exactly (the
    # mid-epoch position is pinned down deterministically by the in-process test below)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    line, = err.strip().splitlines()
    assert "interrupted by SIGTERM" in line and f"--out {out} --resume" in line
    assert (out / "metrics.csv").is_file()
    state = load_checkpoint(out / "last.pt")
    assert state["step"] < EPOCHS * STEPS_PER_EPOCH
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    _assert_same_run(_final(out), reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_saves_position_and_resume_is_exact(
    tmp_path: Path, reference, monkeypatch: pytest.MonkeyPatch, capsys, sig: int
) -> None:
    """The signal arrives during the 3rd step (epoch 2, batch 1 of 2): the step finishes,
    last.pt stores the epoch's permutation and next batch, and resuming it is exact."""
    real, calls = epoch_module.augmented_batch, []

    def signalling_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(epoch_module, "augmented_batch", signalling_batch)
    out = tmp_path / "run"
    rc = main(["train", "--out", str(out), *ARGS])
    err = capsys.readouterr().err
    assert rc == 128 + sig
    assert f"interrupted by {signal.Signals(sig).name} in epoch 2/3 after step 3" in err
    assert len(calls) == 3  # stopped after finishing the step it was in
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["step"], state["next_batch"]) == (1, 3, 1)
    assert sorted(state["perm"].tolist()) == list(range(8))
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 2  # epoch 1
    monkeypatch.setattr(epoch_module, "augmented_batch", real)
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    _assert_same_run(_final(out), reference)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_truncated_checkpoint_is_refused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", SPEC, "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "--quiet"]) == 0
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="unreadable or truncated"):
        load_checkpoint(out / "last.pt")
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 2
