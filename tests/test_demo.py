"""The demo's printed curve: every grid point, its paired difference, and the rules' picks."""

from __future__ import annotations

from segdecay.cli.demo import DEMO_CONFIG, DEMO_TUNE, curve_table
from segdecay.studies.tune.options import validate, validate_against


def test_curve_table_shows_every_point_and_marks_both_rules():
    payload = {"selection": {
        "lambda_min": 1.0, "lambda_1se": 3.0, "lambda_1se_unpaired": 1.0,
        "curve": [{"lam": 0.0, "mean": 0.25, "se": 0.02},
                  {"lam": 1.0, "mean": 0.3, "se": 0.01},
                  {"lam": 3.0, "mean": 0.28, "se": 0.015}],
        "paired": [{"lam": 0.0, "mean_diff": -0.05, "ci_low": -0.1, "ci_high": 0.0},
                   {"lam": 1.0, "mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0},
                   {"lam": 3.0, "mean_diff": -0.02, "ci_low": -0.07, "ci_high": 0.03}]}}
    lines = curve_table(payload).strip().splitlines()
    assert len(lines) == 4  # header + one row per grid point
    assert lines[1].split() == ["0", "0.250", "0.020", "-0.050", "[-0.100,", "+0.000]"]
    assert lines[2].endswith("min, 1se unpaired")
    assert lines[3].endswith("1se paired") and "-0.020 [-0.070, +0.030]" in lines[3]


def test_the_demo_runs_the_full_grid_and_its_options_are_valid():
    validate(DEMO_TUNE)
    validate_against(DEMO_TUNE, DEMO_CONFIG.optimizer, DEMO_CONFIG.decay_mode, DEMO_CONFIG.lr)
    assert DEMO_TUNE.pruner == "none" and DEMO_TUNE.refit  # every point gets its error bar
