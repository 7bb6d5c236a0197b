"""The command line's parser loads none of the heavy libraries, so ``segdecay --help`` and
an option error answer at once; the public names still resolve where they are documented."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

HEAVY = ("torch", "optuna", "segmentation_models_pytorch", "timm", "matplotlib", "scipy")
LAZY_PACKAGES = ("segdecay", "segdecay.decay", "segdecay.studies.tune",
                 "segdecay.studies.compare", "segdecay.studies.spectrum")


def test_building_the_parser_and_printing_help_import_no_heavy_library():
    code = ("import sys, contextlib, io\n"
            "import segdecay.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    segdecay.cli.main(['train', '--help'])\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"the parser imported {out.stdout.strip()}"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_to_the_object_of_its_module(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert name in dir(module)
        if callable(value):  # a function or class: the very object its own module defines
            assert getattr(importlib.import_module(value.__module__), name) is value
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018 - the read is the test


def test_the_documented_imports_still_work():
    from segdecay import TrainConfig, build_optimizer, run_tune, train
    from segdecay.decay import resolved_decay_mode
    from segdecay.studies.compare import CompareOptions, parse_variant

    assert TrainConfig().optimizer
    assert callable(build_optimizer) and callable(run_tune) and callable(train)
    assert resolved_decay_mode("adamw") == "decoupled"
    assert parse_variant("a: --weight-decay 1e-3").options["weight_decay"] == 1e-3
    assert CompareOptions(variants=[]).seeds == [0, 1, 2]
