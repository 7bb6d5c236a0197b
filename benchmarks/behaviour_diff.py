"""Same commands, same numbers: run a short train, tune and compare on two source trees, diff.

A refactor must not change what segdecay computes. This script runs fixed-seed CPU commands
(a synthetic ``train``; ``tune`` over a lambda grid with refit, a tau grid under the race, a
screen and a holdout; a 2-variant ``compare``)
once with the sources of a git revision (``--ref``, checked out into a temporary worktree)
and once with this checkout's sources, in one invocation on one machine, and compares every
number of ``summary.json``, ``metrics.csv``, ``tune.json``, ``trials.csv``, ``compare.json``
and ``compare.csv``. Wall-clock fields, library versions and the output folder's own path
are left out; everything else must be identical (exit 1 otherwise).

    .venv/bin/python benchmarks/behaviour_diff.py --ref d5bc4d5
    .venv/bin/python benchmarks/behaviour_diff.py --record runs/snap.json   # this tree only
    .venv/bin/python benchmarks/behaviour_diff.py --against runs/snap.json  # this tree vs file
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--data", "synthetic", "--device", "cpu", "--batch-size", "4", "--quiet"]
COMMANDS = {
    "train": ["train", "--epochs", "3", "--seed", "1", "--weight-decay", "1e-3"],
    "tune": ["tune", "--grid", "0,1e-2", "--folds", "2", "--epochs", "2", "--pruner", "none",
             "--refit"],
    "tune-tau": ["tune", "--tau-grid", "1,4", "--folds", "2", "--epochs", "2", "--pruner",
                 "race"],
    "tune-screen": ["tune", "--grid", "0,1e-3,1e-2", "--folds", "2", "--epochs", "4",
                    "--pruner", "screen"],
    "tune-holdout": ["tune", "--grid", "0,1e-2", "--holdout", "--repeats", "2", "--epochs",
                     "2", "--pruner", "none"],
    "compare": ["compare", "--variant", "no-decay: --weight-decay 0",
                "--variant", "l2: --weight-decay 1e-2", "--seeds", "1", "--epochs", "2"],
}
# Values that differ between two runs of the same computation.
VOLATILE = {"seconds", "train_seconds", "wall_seconds", "versions", "storage", "run"}
COMPARED = ("summary.json", "metrics.csv", "tune.json", "trials.csv", "compare.json",
            "compare.csv", "decay.json", "config.yaml")


def _scrub(value, root: str):
    """The value without volatile keys, with the output folder's path replaced by 'OUT'."""
    if isinstance(value, dict):
        return {k: _scrub(v, root) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "OUT")
    return value


def _read(path: Path, root: str):
    if path.suffix == ".json":
        return _scrub(json.loads(path.read_text()), root)
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return _scrub(list(csv.DictReader(f)), root)
    return path.read_text().replace(root, "OUT")


def snapshot(src: Path, workdir: Path) -> dict:
    """Run every command with the package at ``src`` and collect the compared files."""
    env = {**os.environ, "PYTHONPATH": str(src), "SEGDECAY_CACHE": str(workdir / "cache"),
           "OMP_NUM_THREADS": "2"}
    workdir.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, args in COMMANDS.items():
        out = workdir / name
        cmd = [sys.executable, "-m", "segdecay", *args, *COMMON, "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=workdir)
        for path in sorted(out.rglob("*")):
            if path.name in COMPARED and "cache" not in path.parts:
                result[f"{name}/{path.relative_to(out)}"] = _read(path, str(out))
    return result


def differences(a: dict, b: dict, where: str = "") -> list[str]:
    """Every place where two snapshots disagree (keys, lengths, values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} against {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} against {b!r}"]


def _worktree_snapshot(ref: str, tmp: Path) -> dict:
    tree = tmp / "ref-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                   check=True, capture_output=True)
    try:
        return snapshot(tree / "src", tmp / "ref-runs")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--ref", help="git revision whose sources give the reference numbers")
    how.add_argument("--against", help="a snapshot JSON written by --record")
    how.add_argument("--record", help="write this tree's snapshot to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        now = snapshot(ROOT / "src", tmp / "runs")
        if args.record:
            Path(args.record).write_text(json.dumps(now, indent=1, sort_keys=True))
            print(f"recorded {len(now)} files into {args.record}")
            return 0
        if args.ref:
            before = _worktree_snapshot(args.ref, tmp)
            label = args.ref
        else:
            before = json.loads(Path(args.against).read_text())
            label = args.against
    diffs = differences(before, now)
    numbers = sum(1 for _ in _leaves(now))
    print(f"{len(now)} files, {numbers} values compared between {label} and this tree")
    for d in diffs[:40]:
        print("  DIFF", d)
    print("identical" if not diffs else f"{len(diffs)} differences")
    return 0 if not diffs else 1


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


if __name__ == "__main__":
    sys.exit(main())
