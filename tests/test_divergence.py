"""A diverging run stops with a reason instead of training on NaNs or raising.

``train`` must return a summary with ``"status": "diverged"`` and the reason (so a tuner can
record a failed trial and go on), write it to summary.json, and the CLI must exit with 3 and
one line naming the reason. A healthy run says ``"status": "completed"``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

from segdecay.cli import EXIT_DIVERGED, main
from segdecay.config import TrainConfig
from segdecay.training import Log, train
from segdecay.training.divergence import DIVERGENCE_NORM_FACTOR, divergence_reason

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

SPEC = "synthetic:size=32,n_train=8,n_val=8,n_test=8"
TINY = TrainConfig(data=SPEC, epochs=2, batch_size=4, device="cpu", optimizer="sgd",
                   encoder=SMALL_ENCODER)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nan_loss_stops_the_run_with_status_diverged(tmp_path: Path) -> None:
    config = TrainConfig(**{**TINY.to_dict(), "lr": 1e30})
    summary = train(config, tmp_path / "run", log=Log(quiet=True))  # returns, never raises
    assert summary["status"] == "diverged"
    assert "loss is nan" in summary["reason"] and "epoch 1" in summary["reason"]
    assert summary["diverged_at_epoch"] == 1 and summary["final_val_miou"] is None
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["reason"] == summary["reason"]
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1 and rows[0]["train_loss"] == "nan"
    assert not (tmp_path / "run" / "last.pt").exists()  # no NaN weights saved as a good state


def test_exploding_weights_stop_the_run_before_the_loss_turns_nan(tmp_path: Path) -> None:
    # Coupled decay with lr·lambda = 1000 multiplies the decayed weights by about -999 per
    # step (SGDW refuses such a pair up front; coupled SGD is the user's own L2 gradient):
    # batch norm keeps the loss finite while the weight norm explodes.
    config = TrainConfig(**{**TINY.to_dict(), "lr": 1.0, "weight_decay": 1000.0,
                            "decay_mode": "coupled", "momentum": 0.0})
    summary = train(config, tmp_path / "run", log=Log(quiet=True))
    assert summary["status"] == "diverged"
    assert "weight norm" in summary["reason"], summary["reason"]
    assert summary["weight_norm"] > DIVERGENCE_NORM_FACTOR * summary["initial_weight_norm"]


def test_cli_exits_3_with_the_reason_on_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["train", "--data", SPEC, "--epochs", "2", "--batch-size", "4", "--device", "cpu",
               "--optimizer", "sgd", "--lr", "1e30", "--encoder", SMALL_ENCODER,
               "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_DIVERGED == 3
    line, = err.strip().splitlines()
    assert line.startswith("segdecay train: diverged: train loss is nan at epoch 1")
    assert "Traceback" not in err


def test_healthy_run_is_completed(tmp_path: Path) -> None:
    summary = train(TrainConfig(**{**TINY.to_dict(), "epochs": 1, "lr": 0.01}), tmp_path / "ok",
                    log=Log(quiet=True))
    assert summary["status"] == "completed"
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(("loss", "norm", "needle"), [
    (math.nan, 1.0, "loss is nan"),
    (math.inf, 1.0, "loss is inf"),
    (1.0, math.nan, "weight norm is nan"),
    (1.0, 2.0 * DIVERGENCE_NORM_FACTOR, "exceeds"),
    (1.0, 0.5 * DIVERGENCE_NORM_FACTOR, None),
    (1e6, 0.0, None),  # a large but finite loss is not divergence by itself
])
def test_divergence_reason(loss: float, norm: float, needle: str | None) -> None:
    reason = divergence_reason(3, loss, norm, 1.0, TINY)
    if needle is None:
        assert reason is None
    else:
        assert reason is not None and needle in reason and "--lr" in reason
