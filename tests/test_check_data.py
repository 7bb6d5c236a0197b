"""``segdecay check-data`` lists every problem of a broken folder, and ``train`` refuses it.

The broken folder holds one instance of each mistake users make: an image without a mask, a
mask without an image, a mask of the wrong size, a label outside the classes, a truncated
PNG, a text file among the images and an empty val/images folder. check-data must name each
offending file (exit 2, no traceback); train must stop with exit 2 on the first of them; the
same folder once repaired must pass (exit 0) with its counts and class frequencies printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdecay.cli import main
from segdecay.data import load_dataset
from segdecay.data.check import check_data
from segdecay.errors import UserError

HW = (16, 16)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _good_pair(root: Path, stem: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    _save(root / "images" / f"{stem}.png", rng.integers(0, 256, (*HW, 3), dtype=np.uint8))
    mask = rng.integers(0, 3, HW, dtype=np.uint8)
    mask[0, :3] = [0, 1, 2]
    _save(root / "masks" / f"{stem}.png", mask)


# Each problem of the broken folder and the text (file name + kind) check-data must print.
EXPECTED = {
    "missing mask": ["no_mask.png", "has no mask"],
    "orphan mask": ["orphan.png", "has no image"],
    "size mismatch": ["wrong_size.png", "is 12x16"],
    "label out of range": ["bad_label.png", "label value(s) 7"],
    "truncated png": ["truncated.png", "cannot read image"],
    "non-image file": ["notes.txt", "not an image file"],
    "empty folder": ["val/images", "holds no images"],
}


def _missing_mask(root: Path) -> None:
    _good_pair(root, "no_mask", 10)
    (root / "masks" / "no_mask.png").unlink()


def _orphan_mask(root: Path) -> None:
    _save(root / "masks" / "orphan.png", np.zeros(HW, np.uint8))


def _size_mismatch(root: Path) -> None:
    _good_pair(root, "wrong_size", 11)
    _save(root / "masks" / "wrong_size.png", np.zeros((12, 16), np.uint8))


def _label_out_of_range(root: Path) -> None:
    _good_pair(root, "bad_label", 12)
    label = np.zeros(HW, np.uint8)
    label[3, 4] = 7
    _save(root / "masks" / "bad_label.png", label)


def _truncated_png(root: Path) -> None:
    _good_pair(root, "truncated", 13)
    data = (root / "images" / "truncated.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(data[: len(data) // 2])


def _non_image_file(root: Path) -> None:
    (root / "images" / "notes.txt").write_text("frames from camera 2\n")


def _empty_folder(root: Path) -> None:
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir(parents=True)


PROBLEMS = {"missing mask": _missing_mask, "orphan mask": _orphan_mask,
            "size mismatch": _size_mismatch, "label out of range": _label_out_of_range,
            "truncated png": _truncated_png, "non-image file": _non_image_file,
            "empty folder": _empty_folder}


def _good_folder(root: Path) -> Path:
    for i in range(3):
        _good_pair(root, f"ok{i}", i)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    return root


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    root = _good_folder(tmp_path / "broken")
    for add in PROBLEMS.values():
        add(root)
    return root


def test_check_data_lists_every_problem_with_its_file(broken: Path, capsys) -> None:
    rc = main(["check-data", f"folder:{broken}"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    problems = [ln for ln in out.splitlines() if ln.startswith("  - ")]
    assert len(problems) == len(EXPECTED), out
    for kind, needles in EXPECTED.items():
        assert any(all(n in p for n in needles) for p in problems), f"{kind} missing:\n{out}"
    assert "7 problem(s)" in out
    assert err.strip().splitlines() == [f"segdecay check-data: error: 7 problem(s) in "
                                        f"folder:{broken}"]
    # The summary still shows what loaded fine: the three good pairs.
    assert any(ln.split()[:2] == ["train", "3"] for ln in out.splitlines()), out


@pytest.mark.parametrize("command, extra", [
    ("train", []),
    ("tune", ["--grid", "0,1e-3", "--folds", "2"]),
    ("compare", ["--variant", "a: --weight-decay 0", "--seeds", "1"]),
])
def test_every_training_command_refuses_the_broken_folder_with_exit_2(
        broken: Path, tmp_path: Path, capsys, command: str, extra: list[str]) -> None:
    rc = main([command, "--data", f"folder:{broken}", "--out", str(tmp_path / "run"),
               "--epochs", "1", "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line, = err.strip().splitlines()
    assert line.startswith(f"segdecay {command}: error: ")
    assert any(all(n in line for n in needles) for needles in EXPECTED.values()), line
    assert not list(tmp_path.glob("run/**/*.pt")) and not (tmp_path / "run" / "runs").exists()


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_problem_alone_stops_the_loader(tmp_path: Path, kind: str) -> None:
    """Strict mode (what train uses) raises on each problem when it is the only one, and
    its message names the file and the kind of problem."""
    root = _good_folder(tmp_path / "one")
    PROBLEMS[kind](root)
    with pytest.raises(UserError) as err:
        load_dataset(f"folder:{root}")
    assert all(n in str(err.value) for n in EXPECTED[kind]), str(err.value)
    problems: list[str] = []
    load_dataset(f"folder:{root}", problems=problems)
    assert len(problems) == 1 and all(n in problems[0] for n in EXPECTED[kind])


def test_check_data_subprocess_exit_status_and_clean_folder(broken: Path, tmp_path: Path
                                                            ) -> None:
    clean = tmp_path / "clean"
    for i in range(4):
        _good_pair(clean, f"ok{i}", i)
    _save(clean / "images" / "odd.png", np.zeros((20, 16, 3), np.uint8))
    _save(clean / "masks" / "odd.png", np.zeros((20, 16), np.uint8))
    proc = subprocess.run([sys.executable, "-m", "segdecay", "check-data", f"folder:{broken}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "notes.txt" in proc.stdout
    rc = main(["check-data", f"folder:{clean}", "--class-names", "sky,road,car"])
    assert rc == 0
    result = check_data(f"folder:{clean}", class_names=["sky", "road", "car"], seed=0)
    assert result.ok and result.problems == []
    train, val = result.splits["train"], result.splits["val"]
    assert train["images"] + val["images"] == 5
    assert sum(train["pixels"]) + sum(val["pixels"]) == 4 * 16 * 16 + 20 * 16


def test_check_data_collects_camvid_problems(tmp_path: Path) -> None:
    root = tmp_path / "camvid"
    for split in ("train", "val"):
        for i in range(2):
            _save(root / split / f"0001TP_{i}.png", np.zeros((*HW, 3), np.uint8))
            _save(root / f"{split}annot" / f"0001TP_{i}.png", np.full(HW, 11, np.uint8))
    _save(root / "trainannot" / "0001TP_1.png", np.full(HW, 12, np.uint8))
    (root / "val" / "0001TP_0.png").unlink()
    result = check_data(f"camvid:{root}")
    assert len(result.problems) == 2, result.problems
    assert any("0001TP_1.png" in p and "12" in p for p in result.problems)
    assert any("valannot/0001TP_0.png" in p and "has no image" in p for p in result.problems)
    assert result.splits["train"]["images"] == 1 and result.splits["val"]["images"] == 1


def test_check_data_unreadable_spec_is_one_problem(tmp_path: Path, capsys) -> None:
    rc = main(["check-data", f"folder:{tmp_path / 'nowhere'}"])
    out, err = capsys.readouterr()
    assert rc == 2 and "nowhere" in out and "Traceback" not in out + err
