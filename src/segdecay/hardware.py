"""What the hardware can do fast, so the fast defaults switch themselves on only where real.

bf16 autocast doubles CPU training speed on cores with AVX512-BF16 or AMX, and is a loss
(emulated, slower than fp32) on cores without them; on GPUs it needs compute capability 8+.
"""

from __future__ import annotations

from pathlib import Path

import torch

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_native(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True where bf16 matmuls run natively on ``device``."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags(cpuinfo) for flag in _BF16_CPU_FLAGS)
    return False


def resolve_amp(amp: bool | None, device: torch.device) -> bool:
    """``--amp``/``--no-amp`` as given; unset means on where bf16 is native."""
    return bf16_native(device) if amp is None else bool(amp)
