"""A user's mistakes and a machine's faults end in one line and exit code 2: bad numbers,
unwritable folders, a full disk, two runs into one folder; and nothing is overwritten."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segdecay.training.state as state
from segdecay.cli import main
from segdecay.fileio import atomic_write_text
from segdecay.training.lock import run_folder_lock

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

SYN = "synthetic:size=32,n_train=4,n_val=2,n_test=2"
SMALL = ("--encoder", SMALL_ENCODER)


def _train(tmp_path: Path, *extra: str, out: Path | None = None) -> int:
    return main(["train", "--data", SYN, "--steps", "1", "--tta", "none", *SMALL,
                 "--out", str(out or tmp_path / "run"), "--quiet", *extra])


@pytest.mark.parametrize("args, needle", [
    (["--lr", "0"], "--lr 0: must be > 0"),
    (["--momentum", "1"], "--momentum 1.0: must be below 1"),
    (["--momentum", "1.5"], "--momentum 1.5: must be below 1"),
    (["--weight-decay", "-1e-3"], "--weight-decay -0.001: must be >= 0"),
    (["--lr=-2e-4"], "--lr -0.0002: must be >= 0"),
])
def test_bad_numbers_name_their_own_option(tmp_path, capsys, args, needle) -> None:
    assert _train(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "usage:" not in err
    assert "weight-decay" not in err or "weight-decay" in " ".join(args)


def test_an_impossible_out_is_one_line_for_every_command(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _train(tmp_path, out=blocker / "run") == 2
    assert f"cannot use {blocker / 'run'}" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _train(tmp_path, out=run) == 0
    assert main(["evaluate", str(run), "--out", str(blocker / "e.json"), "--quiet"]) == 2
    assert "cannot use" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "file"), "--out",
                 str(blocker / "p")]) == 2
    assert "Not a directory" in capsys.readouterr().err
    assert main(["tune", "--data", SYN, "--grid", "0,1", "--epochs", "1", "--folds", "2",
                 "--out", str(blocker / "t")]) == 2
    err = capsys.readouterr().err
    assert "cannot use" in err and "Traceback" not in err


def test_a_failed_checkpoint_write_is_one_line_and_keeps_nothing_half_written(
        tmp_path, capsys, monkeypatch) -> None:
    def full_disk(obj, fh) -> None:
        fh.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] file write failed")

    monkeypatch.setattr(state.torch, "save", full_disk)
    assert _train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint" in err and "nothing was written" in err
    assert not list((tmp_path / "run").glob("*.pt")) and not list(
        (tmp_path / "run").glob(".*.tmp"))


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    with run_folder_lock(out):  # another process (its own open file) is writing here
        assert _train(tmp_path, out=out) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: another segdecay process (pid {os.getpid()}" in err
    assert not (out / "config.yaml").exists()
    assert _train(tmp_path, out=out) == 0  # released: a crash or an exit frees it


def test_predict_keeps_both_images_that_share_a_name(tmp_path) -> None:
    run = tmp_path / "run"
    assert _train(tmp_path, out=run) == 0
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for suffix in (".png", ".jpg"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            images / f"x{suffix}")
    assert main(["predict", str(run), str(images), "--out", str(tmp_path / "pred"),
                 "--tta", "none"]) == 0
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == ["x_jpg_mask.png", "x_jpg_overlay.png", "x_png_mask.png",
                     "x_png_overlay.png"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode



def test_a_crop_larger_than_the_images_is_said(tmp_path, capsys) -> None:
    assert main(["train", "--data", SYN, "--steps", "1", "--tta", "none", *SMALL, "--crop", "64x64",
                 "--out", str(tmp_path / "run")]) == 0
    assert ("note: --crop 64x64 is larger than the 32x32 training images: 75% of each "
            "sample is padding") in capsys.readouterr().err
    assert main(["train", "--data", SYN, "--steps", "1", "--tta", "none", *SMALL, "--crop", "32x32",
                 "--out", str(tmp_path / "fits")]) == 0
    assert "padding" not in capsys.readouterr().err
