"""benchmarks/throughput.py trains each distinct speed setting once: where bf16 autocast is
off by default (no native bf16), ``--no-amp`` changes nothing, and timing it again would
only double the benchmark's minutes on the machines where it is slowest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _throughput(monkeypatch, bf16_native: bool, timed: list):
    spec = importlib.util.spec_from_file_location("throughput",
                                                  ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "throughput", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "resolve_amp",
                        lambda amp, device: bf16_native if amp is None else bool(amp))

    def fake_speed(config, data, timed_epochs):
        timed.append((config.channels_last, config.amp, config.compile))
        return 1.0

    monkeypatch.setattr(module, "engine_speed", fake_speed)
    return module


@pytest.mark.parametrize(("bf16", "with_compile", "expected"), [
    (False, False, [(True, None, False), (False, None, False)]),
    (True, False, [(True, None, False), (False, None, False), (True, False, False),
                   (False, False, False)]),
    (False, True, [(True, None, False), (True, None, True), (False, None, False)]),
])
def test_each_distinct_speed_setting_is_trained_once(monkeypatch, capsys, bf16, with_compile,
                                                     expected):
    from segdecay.config import TrainConfig

    timed: list = []
    module = _throughput(monkeypatch, bf16, timed)
    names = [name for name, _ in module.engine_variants(TrainConfig(), None, with_compile, 2)]
    assert timed == expected
    assert len(names) == len(expected)
    said = capsys.readouterr().out
    if not bf16:
        assert "segdecay, amp off" in said and "same settings as 'segdecay defaults'" in said
        assert "same settings as 'segdecay, channels_last off'" in said
    else:
        assert "same settings" not in said
