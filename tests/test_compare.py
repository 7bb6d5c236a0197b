"""segdecay compare: variants, paired statistics, per-image scores, resumable runs, report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy import stats

from segdecay.cli import main
from segdecay.config import TrainConfig
from segdecay.errors import UserError
from segdecay.models import build_model
from segdecay.runs import evaluate_run
from segdecay.studies.compare import CompareOptions, Variant, parse_variant, run_compare
from segdecay.studies.compare.per_image import image_confusions, image_miou
from segdecay.studies.compare.statistics import holm, paired_difference
from segdecay.studies.compare.variants import load_variants, preset_variants
from segdecay.studies.workers import claim, release

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=6", epochs=2, batch_size=4,
                   optimizer="sgd", encoder=SMALL_ENCODER)


# ---------------------------------------------------------------- variants


def test_a_variant_merges_over_the_base_config() -> None:
    v = parse_variant("wd: --weight-decay 1e-3 --decay-mode decoupled --no-channels-last")
    assert v.name == "wd"
    assert v.options == {"weight_decay": 1e-3, "decay_mode": "decoupled",
                         "channels_last": False}
    config = v.config(TINY)
    assert (config.weight_decay, config.decay_mode, config.channels_last) == \
        (1e-3, "decoupled", False)
    assert (config.epochs, config.batch_size, config.data) == (2, 4, TINY.data)
    assert TINY.weight_decay == TrainConfig().weight_decay  # the base is not modified


@pytest.mark.parametrize("text, needle", [
    ("no colon --lr 1", "NAME:"),
    ("x: --no-such-option 1", "--variant 'x': unrecognized arguments: --no-such-option"),
    ("x: --weight-decay -1", ">= 0"),
    ("x: --epochs 0", "at least 1"),
    ("../up: --lr 1", "plain name"),
])
def test_bad_variants_are_user_errors(text: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        parse_variant(text)


def test_variants_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("variants:\n  base: {}\n  heavy: {weight-decay: 0.01, dropout: 0.1}\n")
    got = load_variants(f)
    assert [(v.name, v.options) for v in got] == [
        ("base", {}), ("heavy", {"weight_decay": 0.01, "dropout": 0.1})]
    f.write_text("variants:\n  bad: {weight_decay: lots}\n")
    with pytest.raises(UserError, match="weight_decay"):
        load_variants(f)


def test_an_unknown_choice_in_a_variants_file_is_refused_up_front(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before any run: one line naming the file, the variant, the key and the choices."""
    f = tmp_path / "v.yaml"
    f.write_text("variants:\n  fine: {optimizer: adamw}\n  typo: {optimizer: adamx}\n")
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", TINY.data, "--out", str(out), "--variants", str(f),
               "--seeds", "1", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == (f"segdecay compare: error: --variants {f}: variant 'typo': "
                           "'optimizer' 'adamx': unknown choice; choose one of sgd, "
                           "sgd-nesterov, adam, adamw")
    assert not out.exists()  # nothing trained


def test_presets_hold_the_documented_variants() -> None:
    reg = preset_variants("regularizers", TINY, 1e-3, 6)
    assert [v.name for v in reg] == ["none", "l2-coupled", "decoupled", "l1", "dropout",
                                     "decoupled+dropout"]
    by = {v.name: v.config(TINY) for v in reg}
    assert by["none"].weight_decay == 0 and by["none"].l1 == 0 and by["none"].dropout == 0
    assert by["l2-coupled"].decay_mode == "coupled" and by["decoupled"].decay_mode == "decoupled"
    # Same timescale: SGD's coupled decay runs through momentum, lr_eff = lr / (1 - beta).
    assert TINY.optimizer == "sgd" and TINY.momentum == 0.9
    assert by["l2-coupled"].weight_decay == 1e-3
    assert by["decoupled"].weight_decay == pytest.approx(1e-2)
    assert by["decoupled+dropout"].weight_decay == pytest.approx(1e-2)
    adamw = preset_variants("regularizers", replace(TINY, optimizer="adamw"), 1e-3, 6)
    assert {v.name: v.options["weight_decay"] for v in adamw}["decoupled"] == 1e-3
    assert by["l1"].weight_decay == 0
    imb = preset_variants("imbalance", TINY, 1e-3, 6)
    assert {(v.config(TINY).loss, v.config(TINY).class_weights) for v in imb} == {
        ("ce", "none"), ("ce", "inverse"), ("ce", "median"), ("ce", "enet"),
        ("dice", "none"), ("focal", "none"), ("ce+dice", "none")}
    assert all(v.config(TINY).weight_decay == 1e-3 for v in imb)


# ---------------------------------------------------------------- statistics


A = [0.61, 0.58, 0.64, 0.55, 0.60, 0.63, 0.59]
B = [0.57, 0.58, 0.60, 0.50, 0.59, 0.58, 0.60]


def test_paired_difference_equals_scipy_and_hand_values() -> None:
    got = paired_difference(A, B)
    # d = 0.04, 0, 0.04, 0.05, 0.01, 0.05, -0.01: mean 0.18/7
    assert got["mean_diff"] == pytest.approx(0.18 / 7)
    d = [a - b for a, b in zip(A, B, strict=True)]
    assert got["sd"] == pytest.approx(stats.tstd(d))
    ref = stats.ttest_rel(A, B)
    assert got["t"] == pytest.approx(ref.statistic) and got["p_t"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert got["p_wilcoxon"] == pytest.approx(stats.wilcoxon(A, B).pvalue)


def test_paired_difference_edge_cases() -> None:
    same = paired_difference([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["mean_diff"] == 0 and same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0
    one = paired_difference([0.5], [0.4])
    assert one["mean_diff"] == pytest.approx(0.1) and math.isnan(one["p_t"])
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_holm_step_down_by_hand() -> None:
    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04), max(0.04, 0.04) -> 0.03 0.04 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    got = holm([0.5, math.nan, 0.3])  # NaN was attempted: m = 3; 3 * 0.3, 2 * 0.5 -> 0.9, 1
    assert got[0] == pytest.approx(1.0) and math.isnan(got[1]) and got[2] == pytest.approx(0.9)


def _mean_abs_init(config: TrainConfig, num_classes: int, decayed) -> float:
    """mean|w| at initialisation over the tensors ``decayed(name, param)`` picks (float64)."""
    torch.manual_seed(config.seed)
    model = build_model(config.arch, config.encoder, num_classes)
    chosen = [p.detach().double().flatten() for n, p in model.named_parameters()
              if decayed(n, p)]
    return torch.cat(chosen).abs().mean().item()


@pytest.mark.parametrize("no_decay, decayed", [
    ("ndim<2", lambda n, p: p.ndim >= 2),  # the default: conv and linear kernels decay
    ("none", lambda n, p: True),  # every tensor decays, BatchNorm scales (1.0) included
])
def test_the_l1_preset_alpha_is_lambda_times_initial_mean_abs_weight(no_decay, decayed) -> None:
    """alpha = lambda * mean|w0| over the decayed tensors of the seed's fresh model, exactly."""
    base = replace(TINY, no_decay=no_decay, seed=3)
    (l1,) = [v for v in preset_variants("regularizers", base, 1e-3, 6) if v.name == "l1"]
    assert l1.options["l1"] == pytest.approx(1e-3 * _mean_abs_init(base, 6, decayed), rel=1e-6)


def test_per_image_miou_by_hand() -> None:
    target = torch.tensor([[[0, 0], [1, 1]], [[2, 2], [2, 255]]])
    preds = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 1]]])
    cm = image_confusions(preds, target, 3)
    assert cm[0].tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert cm[1].tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 2]]  # the 255 pixel is left out
    # image 0: class 0 IoU 1/2, class 1 IoU 2/3 -> 7/12; image 1: class 0 0/1, class 2 2/3
    assert image_miou(cm).tolist() == pytest.approx([7 / 12, 1 / 3])


# ---------------------------------------------------------------- runs


def test_claims_keep_workers_apart(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "a" / "seed0"
    assert claim(folder) and claim(folder)  # our own claim is ours
    lock = folder.parent / ".seed0.claim"
    host = lock.read_text().rsplit(":", 1)[0]
    lock.write_text(f"{host}:{os.getppid()}")  # a live other process holds it
    assert not claim(folder)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.write_text(f"{host}:{dead}")  # its owner died: taken over
    assert claim(folder)
    release(folder)
    assert not lock.exists()


@pytest.mark.slow
def test_compare_end_to_end_and_rerun_trains_nothing(tmp_path: Path, one_torch_thread,
                                                     capsys) -> None:
    options = CompareOptions(variants=[Variant("none", {"weight_decay": 0.0}),
                                       Variant("wd", {"weight_decay": 0.05})], seeds=[0, 1])
    payload = run_compare(TINY, options, tmp_path, quiet=True)
    assert payload["split"] == "test" and payload["baseline"] == "none"
    assert [v["variant"] for v in payload["variants"]] == ["none", "wd"]
    assert all(v["seeds"] == [0, 1] for v in payload["variants"])
    (pair,) = payload["paired"]
    assert pair["eval_miou"]["n"] == 2 and pair["images"]["n"] == 6
    # synthetic images are each their own group: the image is the unit, and says so
    assert (pair["images"]["unit"], pair["images"]["n_units"]) == ("image", 6)
    # each run folder scored on its own by `segdecay evaluate`'s path, and the paired test
    # by scipy: compare's rows and statistics must be these
    # (on the base's images: a synthetic dataset is drawn from the seed unless its spec
    # fixes one, and compare scores every seed's runs on the same test images)
    same_images = f"{TINY.data},seed={TINY.seed}"
    scored = {(v, s): evaluate_run(tmp_path / "runs" / v / f"seed{s}", data=same_images,
                                   split="test", checkpoint="last", device="cpu",
                                   quiet=True)["miou"]
              for v in ("none", "wd") for s in (0, 1)}
    runs = {(r["variant"], r["seed"]): r for r in payload["runs"]}
    assert {k: r["eval_miou"] for k, r in runs.items()} == pytest.approx(scored)
    wd, none = [scored[("wd", s)] for s in (0, 1)], [scored[("none", s)] for s in (0, 1)]
    reference = stats.ttest_rel(wd, none)
    assert pair["eval_miou"]["mean_diff"] == pytest.approx(sum(wd) / 2 - sum(none) / 2)
    assert pair["eval_miou"]["p_t"] == pytest.approx(reference.pvalue)
    own = json.loads((tmp_path / "runs" / "wd" / "seed0" / "summary.json").read_text())
    assert runs[("wd", 0)]["gap"] == pytest.approx(
        own["final_train_miou"] - own["final_val_miou"])
    lines = (tmp_path / "compare.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("variant,seed,status")
    report = (tmp_path / "report.html").read_text()
    for section in ("Variants", "Results (mean ± sd over seeds)", "Paired differences",
                    "Per-class IoU", "Learning curves", "Effective learning rate"):
        assert f"<h2>{section}" in report
    assert report.count("<img") == 2 and "pole*" in report  # the rare class is marked
    assert "unit: the image" in report and "<td>images</td>" in report
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/*/summary.json")}
    assert len(stamps) == 4
    again = run_compare(TINY, options, tmp_path, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["variants"] == payload["variants"]
    assert json.loads((tmp_path / "compare.json").read_text())["seeds"] == [0, 1]


def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    data = ["--data", TINY.data, "--epochs", "1"]
    cases = [
        (["--variant", "a: --lr 0.1", "--baseline", "b"], "--baseline 'b'"),
        (["--preset", "regularizers", "--from-tune", str(tmp_path)], "--from-tune"),
        (["--variant", "a: --lr 0.1", "--variant", "a: --lr 0.2"], "differ"),
        (["--variant", "a: --optimizer rmsprop"], "invalid choice: 'rmsprop'"),
        (["--variant", "a: --lr 0.1", "--seeds", "x"], "--seeds"),
        ([], "at least one"),
    ]
    for extra, needle in cases:
        rc = main(["compare", "--out", str(tmp_path / "c"), *data, *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (extra, err)
        assert "Traceback" not in err[0]


@pytest.mark.slow
def test_two_worker_processes_share_the_runs(tmp_path: Path) -> None:
    options = CompareOptions(variants=[Variant("a", {"weight_decay": 0.0}),
                                       Variant("b", {"weight_decay": 0.05})],
                             seeds=[0, 1], workers=2)
    payload = run_compare(replace(TINY, epochs=1), options, tmp_path, quiet=True)
    assert all(v["seeds"] == [0, 1] for v in payload["variants"])
    for metrics in tmp_path.glob("runs/*/*/metrics.csv"):
        assert len(metrics.read_text().splitlines()) == 2, metrics  # trained once: one epoch
    assert len(list(tmp_path.glob("runs/*/*/metrics.csv"))) == 4
    assert not list(tmp_path.glob("runs/*/.*.claim"))  # every claim released
