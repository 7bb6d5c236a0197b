"""The speed options: bf16 autocast resolved from the hardware, torch.compile with fallback."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
import yaml

from segdecay import training
from segdecay.config import TrainConfig
from segdecay.training.hardware import bf16_native, compiled_or_eager, resolve_amp

sys.path.insert(0, str(Path(__file__).parent))
from small_model import SMALL_ENCODER  # noqa: E402

TINY = TrainConfig(data="synthetic:size=32,n_train=8,n_val=8,n_test=8", epochs=1,
                   batch_size=4, device="cpu", encoder=SMALL_ENCODER)


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_bf16_is_native_only_with_the_cpu_flags(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert bf16_native(cpu, _cpuinfo(tmp_path, "avx512f avx512_bf16"))
    assert bf16_native(cpu, _cpuinfo(tmp_path, "amx_tile amx_bf16"))
    assert not bf16_native(cpu, _cpuinfo(tmp_path, "avx2 avx512f"))
    assert not bf16_native(cpu, tmp_path / "missing")


def test_amp_unset_follows_the_hardware_and_is_recorded(tmp_path: Path, one_torch_thread) -> None:
    assert resolve_amp(True, torch.device("cpu")) is True
    assert resolve_amp(False, torch.device("cpu")) is False
    training.train(TINY, tmp_path / "run", log=training.Log(quiet=True))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["amp"] is _cpu_has_bf16_flags()


def _cpu_has_bf16_flags() -> bool:
    """Read /proc/cpuinfo here, independently of ``bf16_native``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(next((ln.split(":", 1)[1] for ln in text.splitlines()
                      if ln.startswith("flags")), "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.slow
def test_the_real_compile_path_runs_compiled_and_matches_eager(one_torch_thread) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1))
    said: list[str] = []
    forward = compiled_or_eager(net, said.append)
    x = torch.randn(2, 3, 8, 8)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    out = forward(x)
    assert said == []  # no fallback: it compiled (needs a C++ compiler, as CI has)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before
    torch.testing.assert_close(out, net(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()  # training needs the compiled backward too
    assert net[0].weight.grad is not None


def test_compile_failure_falls_back_to_eager(tmp_path: Path, monkeypatch,
                                             one_torch_thread) -> None:
    calls = []

    def broken_compile(net):
        def run(x):
            calls.append(1)
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    stream = io.StringIO()
    config = TrainConfig(**{**TINY.to_dict(), "compile": True, "amp": False})
    summary = training.train(config, tmp_path / "c", log=training.Log(stream=stream))
    eager = training.train(TrainConfig(**{**TINY.to_dict(), "amp": False}), tmp_path / "e",
                         log=training.Log(quiet=True))
    assert calls == [1]  # tried once, then eager for good
    assert "torch.compile failed (RuntimeError: no C++ compiler found); training eager" \
        in stream.getvalue()
    assert summary["final_val_miou"] == pytest.approx(eager["final_val_miou"])
