"""benchmarks/tune_pruning.py sets each pruner's agreement beside the full grid's own: how
often two full grids of different seeds choose the same lambda."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tune_pruning():
    spec = importlib.util.spec_from_file_location("tune_pruning",
                                                  ROOT / "benchmarks" / "tune_pruning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agreement_counts_seed_pairs_and_matches_by_hand():
    lines = _tune_pruning().agreement_lines(
        [3.0, 3.0, 1.0], {"screen:0.3": [True, False, False], "race": [True, True, True]})
    # pairs (3, 3), (3, 1), (3, 1): one agrees
    assert lines.splitlines() == [
        "full grid's choice per seed: 3, 3, 1; reseeded full grids agree in 1 of 3 pairs",
        "screen:0.3: same choice as its seed's full grid in 1 of 3",
        "race: same choice as its seed's full grid in 3 of 3",
    ]


def test_one_seed_has_no_pair_to_agree_with():
    lines = _tune_pruning().agreement_lines([0.01], {"race": [False]})
    assert lines.splitlines()[0].endswith("agree in 0 of 0 pairs")
