"""--ema: the moving average of the weights, by hand, against torch's SWA, and in a run."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from segdecay.config import TrainConfig, from_dict
from segdecay.errors import UserError
from segdecay.runs import evaluate_run
from segdecay.runs.folder import load_run
from segdecay.training import train
from segdecay.training.averaging import WeightAverage, horizon_steps
from segdecay.training.state import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=4,
                   encoder=SMALL_ENCODER,
                   batch_size=4, augment="light", optimizer="adamw", lr=2e-3, ema=0.5,
                   decision="argmax", tta="none")


def _scalar_model(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(value)
        model[1].running_mean.fill_(10 * value)
        model[1].num_batches_tracked.fill_(int(value))
    return model


def test_the_average_is_a_running_mean_within_the_horizon_then_an_ema_by_hand():
    model = _scalar_model(1.0)
    average = WeightAverage(model, horizon=3)
    seen = []
    for value in [1.0, 2.0, 3.0, 4.0, 5.0]:
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(10 * value)
            model[1].num_batches_tracked.fill_(int(value))
        average.update(model)
        seen.append(float(average.module[0].weight))
    # mean(1) = 1, mean(1,2) = 1.5, mean(1,2,3) = 2, then decay 2/3: 2 + (4-2)/3, and
    # 8/3 + (5 - 8/3)/3 = 31/9.
    assert seen == pytest.approx([1.0, 1.5, 2.0, 8 / 3, 31 / 9], abs=1e-6)
    assert float(average.module[1].running_mean) == pytest.approx(310 / 9, abs=1e-5)
    assert int(average.module[1].num_batches_tracked) == 5  # integers follow the raw model
    assert float(model[0].weight.detach()) == 5.0  # the raw weights are untouched


def test_within_the_horizon_it_matches_torch_swa_and_beyond_it_an_ema_of_decay_1_minus_1_over_h():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    horizon, steps = 6, 10
    ours = WeightAverage(model, horizon)
    swa = AveragedModel(model, use_buffers=True)  # torch's equal-weight running mean
    reference = None
    decay = 1 - 1 / horizon
    for step in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model(torch.randn(2, 3, 8, 8))  # train-mode BatchNorm moves its running stats
        ours.update(model)
        if step < horizon:
            swa.update_parameters(model)
            for a, b in zip(ours.module.parameters(), swa.module.parameters(), strict=True):
                torch.testing.assert_close(a, b)
            mean = ours.module[1].running_mean
            torch.testing.assert_close(mean, swa.module[1].running_mean)
            reference = [p.detach().clone() for p in ours.module.parameters()]
        else:  # written out: decay·average + (1 - decay)·current
            reference = [decay * r + (1 - decay) * p.detach()
                         for r, p in zip(reference, model.parameters(), strict=True)]
            for a, r in zip(ours.module.parameters(), reference, strict=True):
                torch.testing.assert_close(a, r)
    assert ours.count == steps


def test_the_horizon_is_a_fraction_of_the_run_and_the_option_is_checked():
    assert horizon_steps(0.1, 1350) == 135
    assert horizon_steps(0.001, 100) == 1
    assert horizon_steps(1.0, 40) == 40
    with pytest.raises(UserError, match="--ema 1.5: must be between 0 and 1"):
        from_dict({"ema": 1.5}, "command line")
    with pytest.raises(UserError, match="must be >= 0|between 0 and 1"):
        from_dict({"ema": -0.1}, "command line")


def test_a_run_scores_and_saves_the_average_and_resumes_it_exactly(tmp_path):
    straight = train(TINY, tmp_path / "a")
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    assert last["average"] == {"count": 8, "horizon": 4}  # 4 epochs x 2 steps, half the run
    raw, averaged = last["trained_model"], last["model"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)
    # evaluate loads "model": scoring the run folder again gives the summary's val mIoU.
    again = evaluate_run(tmp_path / "a", split="val", checkpoint="last", quiet=True)
    assert again["miou"] == pytest.approx(straight["final_val_miou"], abs=1e-12)
    _, _, model, _ = load_run(tmp_path / "a", checkpoint="last")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, averaged[name]), name
    # Interrupted after epoch 2 and resumed: the same average, the same raw weights.
    def stop(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "b", on_epoch=stop)
    resumed = train(TINY, tmp_path / "b", resume=True)
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for key in ("model", "trained_model"):
        for name, tensor in last[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    assert resumed["final_val_miou"] == straight["final_val_miou"]


def test_averaging_leaves_the_training_trajectory_alone(tmp_path):
    """The optimizer steps the raw weights: with and without --ema they end bit-identical."""
    train(replace(TINY, ema=0.0), tmp_path / "plain")
    train(TINY, tmp_path / "ema")
    plain = load_checkpoint(tmp_path / "plain" / "last.pt")
    ema = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert "trained_model" not in plain and "average" not in plain
    for name, tensor in plain["model"].items():
        assert torch.equal(tensor, ema["trained_model"][name]), name
    assert [r["train_loss"] for r in plain["history"]] == [
        r["train_loss"] for r in ema["history"]]
