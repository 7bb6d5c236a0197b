"""Try the mistakes and faults users meet, as a user would, and print one table.

Each case builds what it needs under a scratch folder (tiny synthetic or folder datasets),
runs ``segdecay`` as a subprocess, and records the exit code, the last line it printed on
stderr (or stdout) and what was left in its output folder. The table goes in
``docs/reliability.md``::

    .venv/bin/python benchmarks/fault_campaign.py [--only 1,5,...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SYN = "synthetic:size=32,n_train=6,n_val=4,n_test=4"
QUICK = ["--steps", "2", "--tta", "none", "--device", "cpu"]


@dataclass
class Case:
    """One fault: what to build, what to run, which folder to list afterwards."""

    name: str
    argv: Callable[[Path], list[str]]
    build: Callable[[Path], None] = lambda root: None
    out: str = "out"
    shell: str | None = None  # run through bash (ulimit), with {cmd} for the command
    expect: set[int] = field(default_factory=lambda: {2})


def _pair(root: Path, stem: str, mask: np.ndarray, suffix: str = ".png",
          image_hw: tuple[int, int] | None = None) -> None:
    h, w = image_hw or mask.shape
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}{suffix}")


def _binary(root: Path, stray: int | None = None, suffix: str = ".png", n: int = 8) -> None:
    for i in range(n):
        m = np.zeros((32, 32), np.uint8)
        m[4 + i: 12 + i, 6:20] = 255
        m[::3, 22] = 255
        if stray is not None and i == 3:
            m[0, 0] = stray
        _pair(root / "data", f"m{i}", m, suffix)


def _index(root: Path, n: int = 6, hw: tuple[int, int] = (32, 32)) -> None:
    for i in range(n):
        _pair(root / "data", f"m{i}", np.arange(hw[0] * hw[1]).reshape(hw) % 3)


def _trained(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "segdecay", "train", "--data", SYN, "--out",
                    str(root / "run"), "--quiet", *QUICK], check=True)


def _file(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "file").write_text("not a folder\n")


def _train(*extra: str, data: str | None = None) -> Callable[[Path], list[str]]:
    return lambda root: ["train", "--data", data or SYN, "--out", str(root / "out"), *QUICK,
                         *extra]


def _on_data(*extra: str) -> Callable[[Path], list[str]]:
    return lambda root: ["train", "--data", f"folder:{root / 'data'}", "--out",
                         str(root / "out"), *QUICK, *extra]


CASES = [
    Case("binary masks, one stray value 7", _on_data(), lambda r: _binary(r, 7)),
    Case("same, check-data", lambda r: ["check-data", f"folder:{r / 'data'}"],
         lambda r: _binary(r, 7)),
    Case("same, --mask-encoding binary", _on_data("--mask-encoding", "binary"),
         lambda r: _binary(r, 7), expect={0}),
    Case("binary masks saved as JPEG", _on_data(), lambda r: _binary(r, suffix=".jpg")),
    Case("same, check-data", lambda r: ["check-data", f"folder:{r / 'data'}"],
         lambda r: _binary(r, suffix=".jpg")),
    Case("--lr 0", _train("--lr", "0")),
    Case("--momentum 1", _train("--optimizer", "sgd", "--momentum", "1")),
    Case("--momentum 1.5", _train("--optimizer", "sgd", "--momentum", "1.5")),
    Case("--weight-decay -1e-3", _train("--weight-decay", "-1e-3")),
    Case("train --out under a file", lambda r: ["train", "--data", SYN, "--out",
                                                str(r / "file" / "out"), *QUICK], _file),
    Case("tune --out under a file", lambda r: ["tune", "--data", SYN, "--grid", "0,1",
                                               "--folds", "2", "--epochs", "1", "--out",
                                               str(r / "file" / "out")], _file),
    Case("predict --out under a file", lambda r: ["predict", str(r / "run"), str(r / "file"),
                                                  "--out", str(r / "file" / "p")],
         lambda r: (_file(r), _trained(r))),
    Case("evaluate --out under a file", lambda r: ["evaluate", str(r / "run"), "--out",
                                                   str(r / "file" / "e.json")],
         lambda r: (_file(r), _trained(r))),
    Case("disk full while saving (ulimit -f 2000)", _train(), shell="ulimit -f 2000; {cmd}"),
    Case("second train into a folder being written", _train(),
         shell="{cmd} --steps 3000 --quiet >/dev/null 2>&1 & sleep 20; {cmd}; rc=$?; "
               "kill %1; wait; exit $rc"),  # the table shows the second run's own words
    Case("predict on x.png and x.jpg", lambda r: ["predict", str(r / "run"), str(r / "in"),
                                                  "--out", str(r / "out")],
         lambda r: (_trained(r), _two_named_x(r / "in")), expect={0}),
    Case("--batch-size 64 on 5 images", _train("--batch-size", "64", data=SYN.replace(
        "n_train=6", "n_train=5")), expect={0}),
    Case("--crop 64x64 on 32x32 images", _train("--crop", "64x64"), expect={0}),
    Case("storage URL with '/' in the password",
         lambda r: ["tune", "--data", SYN, "--grid", "0,1", "--folds", "2", "--epochs", "1",
                    "--storage", "postgresql://alice:se/cret@127.0.0.1:9/db", "--out",
                    str(r / "out")]),
    # the faults that already held
    Case("mask and image sizes differ", _on_data(),
         lambda r: (_index(r), _pair(r / "data", "odd", np.zeros((16, 16)), image_hw=(32, 32)))),
    Case("truncated PNG", _on_data(), lambda r: (_index(r), _truncate(r / "data"))),
    Case("README among the images", _on_data(),
         lambda r: (_index(r), (r / "data" / "images" / "README").write_text("x"))),
    Case("image without a mask", _on_data(),
         lambda r: (_index(r), (r / "data" / "masks" / "m2.png").unlink())),
    Case("--epochs 0", _train("--epochs", "0")),
    Case("diverging lr", _train("--lr", "1e6", "--optimizer", "sgd", "--steps", "6"),
         expect={3}),
    Case("malformed YAML", lambda r: ["train", "--config", str(r / "c.yaml"), "--out",
                                      str(r / "out")],
         lambda r: (r.mkdir(parents=True, exist_ok=True),
                    (r / "c.yaml").write_text("lr: [1, \n"))),
    Case("--resume on an empty folder", lambda r: ["train", "--data", SYN, "--resume",
                                                   "--out", str(r / "out")],
         lambda r: (r / "out").mkdir(parents=True)),
    Case("truncated checkpoint", lambda r: ["evaluate", str(r / "run"), "--checkpoint", "last"],
         lambda r: (_trained(r), _halve(r / "run" / "last.pt")), out="run"),
]


def _two_named_x(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for suffix in (".png", ".jpg"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"x{suffix}")


def _truncate(root: Path) -> None:
    path = root / "images" / "m1.png"
    path.write_bytes(path.read_bytes()[:60])


def _halve(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _left(folder: Path) -> str:
    if not folder.exists():
        return "nothing"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                   and not p.name.startswith("."))
    if not files:
        return "an empty folder"
    return ", ".join(files[:6]) + (f" (+{len(files) - 6})" if len(files) > 6 else "")


def run_case(case: Case, root: Path) -> tuple[int, str, str, float]:
    case.build(root)
    cmd = [sys.executable, "-m", "segdecay", *case.argv(root)]
    started = time.perf_counter()
    if case.shell:
        line = " ".join(f"'{c}'" for c in cmd)
        proc = subprocess.run(["bash", "-c", case.shell.format(cmd=line)], capture_output=True,
                              text=True, timeout=600)
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    message = lines[-1] if lines else ""
    if "Traceback" in proc.stderr:
        message = "TRACEBACK: " + message
    return proc.returncode, message, _left(root / case.out), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated case numbers (1-based)")
    args = p.parse_args()
    chosen = [int(v) for v in args.only.split(",")] if args.only else range(1, len(CASES) + 1)
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    print(f"fault campaign, {env_note}\n")
    print("| # | case | exit | as expected | message (last line) | left in the output folder |")
    print("|---|---|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in chosen:
            case = CASES[i - 1]
            code, message, left, _ = run_case(case, Path(tmp) / f"case{i}")
            ok = code in case.expect and not message.startswith("TRACEBACK")
            failures += not ok
            message = message.replace("|", "\\|").replace(tmp, "TMP")
            print(f"| {i} | {case.name} | {code} | {'yes' if ok else 'NO'} | {message} | "
                  f"{left} |", flush=True)
    print(f"\n{len(list(chosen)) - failures} of {len(list(chosen))} as expected")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
