"""The weights a run answers with (``--checkpoint``): its best validation's or its final
ones (by default the best only where val shows them better beyond noise), and everything
after training (the val table, the decision, evaluate, predict) uses the same."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from segdecay.config import TrainConfig
from segdecay.data.base import DatasetInfo, SegData, SegSplit
from segdecay.errors import UserError
from segdecay.runs import evaluate_run
from segdecay.training import loop, train
from segdecay.training.defaults import resolve_defaults

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

# Its last epoch ends worse than an earlier one by construction: :func:`last_epoch_ends_worse`.
SMALL_RUN = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=6,
                        encoder=SMALL_ENCODER, batch_size=4, optimizer="adamw", lr=0.02,
                        schedule="constant", augment="flip", eval_every=1, tta="none",
                        checkpoint="best")


@pytest.fixture(scope="module", autouse=True)
def last_epoch_ends_worse():
    """Every run of this module ends its last epoch with its segmentation head negated, so
    the final weights score below an earlier validation's whatever the CPU's arithmetic
    (training alone peaks at the last epoch on some CPUs and not on others)."""
    original = loop.train_one_epoch

    def train_then_spoil_the_last(run, progress, net, epoch, started):
        result = original(run, progress, net, epoch, started)
        if epoch + 1 == run.epochs:
            with torch.no_grad():
                for parameter in run.model.segmentation_head.parameters():
                    parameter.neg_()
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train_one_epoch", train_then_spoil_the_last)
        yield


def _val_by_epoch(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as f:
        return {int(r["epoch"]): float(r["val_miou"]) for r in csv.DictReader(f)
                if r["val_miou"]}


def _best_epoch(vals: dict[int, float]) -> int:
    return max(vals, key=lambda e: (vals[e], -e))  # the first of equal scores


@pytest.fixture(scope="module")
def best_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("answer") / "best"
    return run, train(SMALL_RUN, run)


def test_checkpoint_best_answers_with_its_best_validation_and_decides_for_it(
        best_run) -> None:
    run, summary = best_run
    vals = _val_by_epoch(run)
    best = _best_epoch(vals)
    assert best != SMALL_RUN.epochs, f"val peaked at the last epoch ({vals}): no test"
    assert yaml.safe_load((run / "config.yaml").read_text())["checkpoint"] == "best"
    assert (summary["answer_epoch"], summary["answer_checkpoint"]) == (best, "best")
    assert summary["val_miou"] == pytest.approx(vals[best], abs=1e-9)
    assert summary["final_val_miou"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)
    decision = json.loads((run / "decision.json").read_text())
    assert decision["val_miou_argmax"] == pytest.approx(vals[best], abs=1e-9)
    # the per-class val table is that of the same weights
    assert summary["val"]["miou"] == pytest.approx(vals[best], abs=1e-9)


def test_evaluate_loads_the_weights_the_run_answers_with(best_run, tmp_path) -> None:
    run, _ = best_run
    vals = _val_by_epoch(run)
    scored = {how: evaluate_run(run, split="val", checkpoint=how, decision="argmax",
                                tta="none", quiet=True, out=tmp_path / f"{how}.json")
              for how in ("run", "best", "last")}
    assert scored["run"]["checkpoint"] == "best"
    assert scored["run"]["miou"] == pytest.approx(vals[_best_epoch(vals)], abs=1e-9)
    assert scored["last"]["miou"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)
    assert scored["run"]["miou"] != pytest.approx(scored["last"]["miou"], abs=1e-9)


def test_checkpoint_last_answers_with_the_final_weights(tmp_path) -> None:
    run = tmp_path / "last"
    summary = train(replace(SMALL_RUN, checkpoint="last"), run)
    vals = _val_by_epoch(run)
    assert _best_epoch(vals) != SMALL_RUN.epochs
    assert (summary["answer_epoch"], summary["answer_checkpoint"]) == (SMALL_RUN.epochs, "last")
    assert "checkpoint_evidence" not in summary
    assert summary["val_miou"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)
    decision = json.loads((run / "decision.json").read_text())
    assert decision["val_miou_argmax"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)
    scored = evaluate_run(run, split="val", decision="argmax", quiet=True)
    assert scored["checkpoint"] == "last"
    assert scored["miou"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)


def test_a_run_resumed_after_its_best_epoch_still_answers_with_it(best_run, tmp_path) -> None:
    straight_run, straight = best_run
    best = _best_epoch(_val_by_epoch(straight_run))

    class Stop(Exception):
        pass

    def stop_after_best(row: dict) -> None:
        if row["epoch"] == best + 1:
            raise Stop

    run = tmp_path / "resumed"
    with pytest.raises(Stop):
        train(SMALL_RUN, run, on_epoch=stop_after_best)
    resumed = train(SMALL_RUN, run, resume=True)
    assert resumed["answer_epoch"] == best
    assert resumed["val_miou"] == pytest.approx(straight["val_miou"], abs=1e-9)


def test_auto_keeps_the_best_validation_only_beyond_two_bootstrap_ses(tmp_path) -> None:
    run = tmp_path / "auto"
    summary = train(replace(SMALL_RUN, checkpoint="auto"), run)
    evidence = summary["checkpoint_evidence"]
    vals = _val_by_epoch(run)
    best = _best_epoch(vals)
    # the gain is the val mIoU of best.pt minus that of last.pt, scored by evaluate
    scored = {how: evaluate_run(run, split="val", checkpoint=how, decision="argmax",
                                tta="none", quiet=True, out=tmp_path / f"{how}.json")["miou"]
              for how in ("best", "last")}
    assert evidence["val_gain"] == pytest.approx(scored["best"] - scored["last"], abs=1e-9)
    assert evidence["val_gain"] > 0 and evidence["val_images"] == 8
    kept = evidence["val_gain"] > 2 * evidence["val_gain_se"]
    assert evidence["best"] is kept
    answer = "best" if kept else "last"
    assert summary["answer_checkpoint"] == answer
    assert summary["answer_epoch"] == (best if kept else SMALL_RUN.epochs)
    assert summary["val_miou"] == pytest.approx(scored[answer], abs=1e-9)
    default = evaluate_run(run, split="val", decision="argmax", tta="none", quiet=True,
                           out=tmp_path / "run.json")
    assert default["checkpoint"] == answer


def test_auto_keeps_the_final_weights_when_the_gain_is_within_the_noise(monkeypatch,
                                                                        tmp_path) -> None:
    # with the evidence bar raised out of reach, auto answers with the final weights
    import segdecay.training.evaluate as evaluate_module
    monkeypatch.setattr(evaluate_module, "EVIDENCE_SES", 1e9)
    run = tmp_path / "auto-final"
    summary = train(replace(SMALL_RUN, checkpoint="auto"), run)
    vals = _val_by_epoch(run)
    assert _best_epoch(vals) != SMALL_RUN.epochs
    assert summary["checkpoint_evidence"]["best"] is False
    assert (summary["answer_checkpoint"], summary["answer_epoch"]) == ("last", SMALL_RUN.epochs)
    assert summary["val_miou"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)
    decision = json.loads((run / "decision.json").read_text())
    assert decision["val_miou_argmax"] == pytest.approx(vals[SMALL_RUN.epochs], abs=1e-9)


def _data(n_val: int) -> SegData:
    mask = torch.zeros(4, 4, dtype=torch.uint8)
    mask[0, 0] = 1
    split = SegSplit([torch.zeros(3, 4, 4, dtype=torch.uint8)], [mask], ["i0"])
    val = split if n_val else SegSplit([], [], [])
    return SegData(DatasetInfo("t", 2, ["a", "b"], [(0, 0, 0)] * 2), split, val)


def test_the_default_is_auto_with_val_images_and_last_without() -> None:
    config, notes = resolve_defaults(TrainConfig(), _data(1))
    assert config.checkpoint == "auto"
    assert any(n.startswith("checkpoint auto: the run answers with the weights of its best "
                            "validation if they beat the final weights by over two "
                            "bootstrap SEs over the 1 val images") for n in notes)
    config, notes = resolve_defaults(TrainConfig(), _data(0))
    assert config.checkpoint == "last"
    assert not any(n.startswith("checkpoint") for n in notes)
    assert resolve_defaults(TrainConfig(checkpoint="auto"), _data(0))[0].checkpoint == "last"
    assert resolve_defaults(TrainConfig(checkpoint="best"), _data(1))[0].checkpoint == "best"
    with pytest.raises(UserError, match="--checkpoint best: there are no val images"):
        resolve_defaults(TrainConfig(checkpoint="best"), _data(0))
