"""The ``segdecay`` command line end to end: user errors, run folders, evaluate, predict, help.

Everything runs on tiny data (32x32 synthetic scenes, a few 32x32 folder images) on the CPU,
mostly in-process through ``segdecay.cli.main``; two cases use a real subprocess to prove the
exit status and that no traceback reaches the user.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segdecay.cli import build_parser, main
from segdecay.config import TrainConfig
from segdecay.decay import default_decay_mode

sys.path.insert(0, str(Path(__file__).parent))
from decay_dynamics import e_folding_steps, log_ratios  # noqa: E402
from small_model import SMALL_ENCODER  # noqa: E402

SYN = "synthetic:size=32,n_train=8,n_val=8,n_test=8"
SYN_CLASSES = ["background", "disc", "fine_box", "coarse_box", "ellipse", "pole"]
FAST = ["--epochs", "1", "--batch-size", "4", "--device", "cpu", "--encoder", SMALL_ENCODER]
RUN_FILES = ["config.yaml", "metrics.csv", "summary.json", "decay.json", "last.pt", "best.pt",
             "report.html"]


# ----------------------------------------------------------------------------- helpers


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``segdecay ARGS`` in-process; (exit code, stdout, stderr)."""
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, and every needle in the message."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("segdecay ") and ": error: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root: Path, n: int = 4, binary: bool = False, hw: tuple[int, int] = (32, 32)
                ) -> Path:
    """``root/images`` + ``root/masks`` with ``n`` random RGB PNGs and index (or 0/255) masks."""
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(root / "images" / f"im{i}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        mask = rng.integers(0, 2, hw, dtype=np.uint8)
        mask[0, 0], mask[0, 1] = 0, 1  # both classes in every mask
        _save(root / "masks" / f"im{i}.png", mask * 255 if binary else mask)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``folder``, to prove nothing was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-epoch training run on tiny synthetic data, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["train", "--data", SYN, "--epochs", "2", "--batch-size", "4",
                   "--device", "cpu", "--encoder", SMALL_ENCODER, "--out", str(out)])
    assert rc == 0, stderr.getvalue()
    return {"dir": out, "out": stdout.getvalue(), "err": stderr.getvalue()}


@pytest.fixture(scope="module")
def binary_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset of five 32x32 images with binary 0/255 masks and no val split."""
    return make_folder(tmp_path_factory.mktemp("binary") / "ds", n=5, binary=True)


# ----------------------------------------------------------------------------- 1. user errors


def _case_missing_path(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", "folder:/nope"], ["/nope", "does not exist"]


def _case_unknown_scheme(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", "bogus:/x"], ["bogus:/x", "folder:PATH"]


def _case_image_without_mask(tmp: Path) -> tuple[list[str], list[str]]:
    root = make_folder(tmp / "ds")
    (root / "masks" / "im2.png").unlink()
    return ["--data", f"folder:{root}"], [str(root / "images" / "im2.png"), "no mask"]


def _case_mask_size(tmp: Path) -> tuple[list[str], list[str]]:
    root = make_folder(tmp / "ds")
    _save(root / "masks" / "im1.png", np.zeros((16, 24), np.uint8))
    return ["--data", f"folder:{root}"], [str(root / "masks" / "im1.png"), "16x24", "32x32"]


def _case_label_out_of_range(tmp: Path) -> tuple[list[str], list[str]]:
    root = make_folder(tmp / "ds")
    (root / "classes.txt").write_text("sky\nground\n")
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 1
    mask[8:16] = 255  # ignore: allowed
    mask[16:18] = 7  # outside the two classes
    _save(root / "masks" / "im3.png", mask)
    return ["--data", f"folder:{root}"], [str(root / "masks" / "im3.png"), "value(s) 7 ",
                                          "2 classes"]


def _case_unreadable_image(tmp: Path) -> tuple[list[str], list[str]]:
    root = make_folder(tmp / "ds")
    (root / "images" / "im0.png").write_bytes(b"\x00garbage, not a PNG at all\xff" * 8)
    return ["--data", f"folder:{root}"], [str(root / "images" / "im0.png"), "cannot read"]


def _case_unknown_arch(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", SYN, "--arch", "nonet"], ["--arch", "nonet", "unet"]


def _case_unknown_encoder(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", SYN, "--encoder", "resnet999"], ["--encoder", "resnet999"]


def _case_bad_size(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", SYN, "--size", "abc"], ["--size", "abc", "HxW"]


def _case_yaml_unknown_key(tmp: Path) -> tuple[list[str], list[str]]:
    cfg = tmp / "exp.yaml"
    cfg.write_text(f"data: '{SYN}'\nepochs: 1\nwieght_decay: 0.1\n")
    return ["--config", str(cfg)], [str(cfg), "wieght_decay"]


def _case_yaml_invalid(tmp: Path) -> tuple[list[str], list[str]]:
    cfg = tmp / "broken.yaml"
    cfg.write_text("epochs: [1, 2\nlr: : 0.1\n")
    return ["--config", str(cfg)], [str(cfg), "not valid YAML"]


def _case_zero_epochs(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", SYN, "--epochs", "0"], ["--epochs 0", "at least 1"]


def _case_zero_batch(tmp: Path) -> tuple[list[str], list[str]]:
    return ["--data", SYN, "--batch-size", "0"], ["--batch-size 0", "at least 1"]


def _case_yaml_zero_batch(tmp: Path) -> tuple[list[str], list[str]]:
    cfg = tmp / "zero.yaml"
    cfg.write_text(f"data: '{SYN}'\nbatch_size: 0\n")
    return ["--config", str(cfg)], [str(cfg), "batch_size", "at least 1"]


ERROR_CASES = {
    "nonexistent data path": _case_missing_path,
    "unknown data scheme": _case_unknown_scheme,
    "image without mask": _case_image_without_mask,
    "mask size differs": _case_mask_size,
    "label outside classes": _case_label_out_of_range,
    "unreadable image": _case_unreadable_image,
    "unknown arch": _case_unknown_arch,
    "unknown encoder": _case_unknown_encoder,
    "bad size text": _case_bad_size,
    "yaml unknown key": _case_yaml_unknown_key,
    "yaml invalid": _case_yaml_invalid,
    "zero epochs": _case_zero_epochs,
    "zero batch size": _case_zero_batch,
    "yaml zero batch size": _case_yaml_zero_batch,
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_train_user_errors_exit_2_with_one_line(case: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    extra, needles = ERROR_CASES[case](tmp_path)
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "train", *FAST, *extra, "--out", out)
    assert_user_error(rc, err, *needles)
    assert not out.exists(), "a failed start must not leave a run folder behind"


def test_bad_choice_is_argparse_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", SYN, "--optimizer", "rmsprop", "--out", str(tmp_path / "r")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--optimizer" in err and "rmsprop" in err and "Traceback" not in err


def test_resume_without_a_run_is_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = cli(capsys, "train", "--resume", "--out", empty)
    assert_user_error(rc, err, "--resume", str(empty))
    assert list(empty.iterdir()) == []


def test_train_into_existing_run_refuses_and_changes_nothing(
    run_dir: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_dir["dir"]
    before = snapshot(run)
    rc, _, err = cli(capsys, "train", "--data", SYN, *FAST, "--out", run)
    assert_user_error(rc, err, str(run), "--resume")
    assert snapshot(run) == before


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segdecay", *args], capture_output=True,
                          text=True, timeout=120)


def test_subprocess_user_error_exit_2_no_traceback(tmp_path: Path) -> None:
    proc = _run_module("train", "--data", "folder:/nope", *FAST, "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nope" in lines[0], proc.stderr


def test_subprocess_bad_choice_exit_2_no_traceback(tmp_path: Path) -> None:
    proc = _run_module("train", "--optimizer", "rmsprop", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "--optimizer" in proc.stderr


# ----------------------------------------------------------------------------- 2. the run folder


def test_train_writes_complete_run_folder(run_dir: dict) -> None:
    run = run_dir["dir"]
    for name in RUN_FILES:
        assert (run / name).is_file(), name

    with open(run / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        header = reader.fieldnames or []
    for col in ["train_loss", "data_loss", "reg_term", "val_miou", "val_loss", "lr",
                "weight_norm"]:
        assert col in header, col
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["train_seconds"] > 0
    assert 0.0 <= summary["best_val_miou"] <= 1.0
    assert 0.0 <= summary["final_val_miou"] <= summary["best_val_miou"] + 1e-12
    assert float(rows[-1]["val_miou"]) == pytest.approx(summary["final_val_miou"])
    val = summary["val"]
    assert len(val["iou"]) == len(val["dice"]) == len(SYN_CLASSES)
    assert 0.0 <= val["pixel_acc"] <= 1.0
    assert summary["class_names"] == SYN_CLASSES
    assert summary["versions"]["torch"] == torch.__version__

    decay = json.loads((run / "decay.json").read_text())
    groups = {g["name"]: g for g in decay["groups"]}
    assert set(groups) == {"decay", "no_decay"}
    keys = {"name", "tensors", "parameters", "weight_decay", "mode", "lr", "tau_steps",
            "tau_epochs", "integrated_shrinkage"}
    for g in groups.values():
        assert keys <= set(g), keys - set(g)
    d, nd = groups["decay"], groups["no_decay"]
    defaults = TrainConfig()
    assert decay["optimizer"] == defaults.optimizer
    assert d["mode"] == default_decay_mode(defaults.optimizer)
    # AdamW's documented defaults: lr 1e-3, tau the whole run, at least one epoch and 10 steps
    tau = max(decay["total_steps"], decay["steps_per_epoch"], 10)
    assert d["weight_decay"] == pytest.approx(1 / (1e-3 * tau), rel=1e-5)
    assert d["lr"] == pytest.approx(1e-3)
    # tau measured, not re-derived: the run's optimizer on a weight with no data gradient
    # shrinks it by 1/e after tau_steps steps (AdamW: 1/(lr·lambda)), i.e. after tau_epochs
    # epochs
    ratios = log_ratios(decay["optimizer"], d["mode"], d["lr"], d["weight_decay"],
                        2 * round(d["tau_steps"]), momentum=defaults.momentum)
    steps = e_folding_steps(ratios)
    assert steps is not None and steps == pytest.approx(d["tau_steps"], rel=0.005)
    assert steps / decay["steps_per_epoch"] == pytest.approx(d["tau_epochs"], rel=0.005)
    assert 0.0 < d["integrated_shrinkage"] < 1.0
    assert nd["weight_decay"] == 0.0
    assert nd["tau_steps"] is None and nd["tau_epochs"] is None
    assert nd["integrated_shrinkage"] == 1.0

    # the decay split is announced at the start, with the same counts as decay.json
    err = run_dir["err"]
    for g in (d, nd):
        m = re.search(rf"^{g['name']}: (\d+) tensors, ([\d,]+) parameters", err, re.M)
        assert m, f"no '{g['name']}:' line in\n{err}"
        assert int(m.group(1)) == g["tensors"]
        assert int(m.group(2).replace(",", "")) == g["parameters"]
    assert err.index("no_decay:") < err.index("epoch 1/2")

    report = (run / "report.html").read_text(encoding="utf-8")
    assert "Per-class IoU" in report
    for name in SYN_CLASSES:
        assert f"<td>{name}</td>" in report, name
    assert "data:image/png;base64," in report


def test_config_yaml_reruns_identically_and_quiet_prints_nothing(
    run_dir: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run2 = tmp_path / "run2"
    rc, out, err = cli(capsys, "train", "--config", run_dir["dir"] / "config.yaml",
                       "--out", run2, "--quiet")
    assert rc == 0, err
    assert out == "" and err == ""  # --quiet: nothing at all on success
    first = json.loads((run_dir["dir"] / "summary.json").read_text())
    second = json.loads((run2 / "summary.json").read_text())
    assert second["final_val_miou"] == first["final_val_miou"]
    assert second["val"]["iou"] == first["val"]["iou"]
    assert (run2 / "config.yaml").read_text() == (run_dir["dir"] / "config.yaml").read_text()


# ----------------------------------------------------------------------------- 4. evaluate


def test_evaluate_test_split_prints_table_and_writes_json(
    run_dir: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_dir["dir"]
    rc, out, err = cli(capsys, "evaluate", run, "--split", "test", "--device", "cpu")
    assert rc == 0, err
    for name in SYN_CLASSES:
        assert name in out, name
    assert "mIoU" in out
    payload = json.loads((run / "eval_test.json").read_text())
    assert payload["split"] == "test" and payload["images"] == 8
    assert len(payload["iou"]) == len(SYN_CLASSES)
    # mIoU from the raw confusion counts, not from the stored per-class list
    cm = np.array(payload["confusion"], dtype=float)
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    assert cm.sum() == 8 * 32 * 32 and (union > 0).any()
    assert payload["miou"] == pytest.approx(float(np.mean(tp[union > 0] / union[union > 0])))


def test_evaluate_with_data_of_other_class_count_is_error(
    run_dir: dict, binary_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "eval.json"
    rc, _, err = cli(capsys, "evaluate", run_dir["dir"], "--data", f"folder:{binary_folder}",
                     "--device", "cpu", "--out", target)
    assert_user_error(rc, err, "--data", str(binary_folder), "2 classes", "6")
    assert not target.exists()


# ----------------------------------------------------------------------------- 5. predict


def test_predict_folder_writes_masks_and_overlays(
    run_dir: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    rng = np.random.default_rng(3)
    sizes = {"street": (40, 48), "tiny": (32, 32)}  # HxW; 40x48 is not a multiple of 32
    for name, hw in sizes.items():
        _save(images / f"{name}.png", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    out = tmp_path / "pred"
    rc, stdout, err = cli(capsys, "predict", run_dir["dir"], images, "--out", out,
                          "--device", "cpu")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{kind}.png" for n in sizes for kind in ("mask", "overlay"))
    for name, (h, w) in sizes.items():
        with Image.open(out / f"{name}_mask.png") as mask:
            assert mask.mode == "P"
            assert mask.size == (w, h)
            values = np.array(mask)
        assert values.max() < len(SYN_CLASSES)
        with Image.open(out / f"{name}_overlay.png") as overlay:
            assert overlay.mode == "RGB"
            assert overlay.size == (w, h)
        assert f"{name}.png" in stdout


def test_predict_nonexistent_input_is_error(
    run_dir: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, out = tmp_path / "no_such_images", tmp_path / "pred"
    rc, _, err = cli(capsys, "predict", run_dir["dir"], missing, "--out", out, "--device", "cpu")
    assert_user_error(rc, err, str(missing))
    assert not out.exists()


# ----------------------------------------------------------------------------- 6. help


def test_train_help_lists_every_option_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for opt in ["--weight-decay", "--decay-mode", "--l1", "--dropout", "--no-decay",
                "--decay-rule", "--loss", "--class-weights", "--augment", "--epochs", "--steps",
                "--batch-size", "--size", "--crop", "--seed", "--config"]:
        assert re.search(rf"^\s+{re.escape(opt)}\b", text, re.M), opt

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    for action in train_parser._actions:
        assert action.help and action.help.strip(), action.option_strings
        assert "\n" not in action.help, action.option_strings


def test_choices_are_declared_once_with_their_fields() -> None:
    """The CLI's choices are the config's, and every module that acts on a choice accepts
    exactly those names."""
    from segdecay import config
    from segdecay.data.transforms import PRESETS
    from segdecay.options import option_name

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    by_flag = {a.option_strings[0]: a for a in train_parser._actions if a.option_strings}
    declared = {name: f.metadata["choices"] for name, f in TrainConfig.fields().items()
                if f.metadata["choices"]}
    assert set(declared) == {"optimizer", "schedule", "decay_mode", "no_decay", "loss",
                             "class_weights", "augment", "normalize", "decision", "tta",
                             "mask_encoding", "checkpoint"}
    for name, choices in declared.items():
        assert tuple(by_flag[option_name(name)].choices) == choices, name
    assert tuple(PRESETS) == config.AUGMENTS


@pytest.mark.parametrize("key, value", [("optimizer", "adamx"), ("loss", "dice+ce"),
                                        ("decay_mode", "both"), ("augment", "heavy")])
def test_a_yaml_config_with_an_unknown_choice_is_one_line_naming_the_key(
        key: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{key}: {value}\n")
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"--config {cfg}: '{key}' '{value}': unknown choice; choose one of" in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 7. folder data


def test_binary_folder_without_val_trains_with_holdout(
    binary_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "train", "--data", f"folder:{binary_folder}", *FAST, "--out", out)
    assert rc == 0, err
    assert "4 train / 1 val images, 2 classes" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"] == ["background", "foreground"]
    assert len(summary["val"]["iou"]) == 2
    with open(out / "metrics.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 1
    for name in RUN_FILES:
        assert (out / name).is_file(), name
