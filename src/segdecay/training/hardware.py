"""The device a run trains on, and what it can do fast, so the fast defaults (bf16 autocast,
torch.compile) switch themselves on only where real.

bf16 autocast doubles CPU training speed on cores with AVX512-BF16 or AMX, and is a loss
(emulated, slower than fp32) on cores without them; on GPUs it needs compute capability 8+.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from segdecay.errors import UserError

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


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; an unavailable CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device '{name}': {exc}") from exc


def oom_message(config) -> str:
    """What to change when a batch does not fit on the GPU."""
    size = "x".join(map(str, config.crop or config.size or [])) or "native"
    total = ""
    if torch.cuda.is_available():
        dev = torch.cuda.current_device()
        total = f" ({torch.cuda.get_device_properties(dev).total_memory / 1024**3:.1f} GiB)"
    return (f"out of GPU memory{total} with --batch-size {config.batch_size} and input {size}; "
            f"try a smaller --batch-size, a smaller --size or --crop, --amp, or a smaller "
            f"--eval-size")


def compiled_or_eager(net: nn.Module, say: Callable[[str], None]
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(net)``, falling back to eager (with one ``say`` line) if compiling fails.

    Compilation happens at the first call, so the fallback must wrap calls, not creation.
    """
    try:
        compiled = torch.compile(net)
    except Exception as exc:  # noqa: BLE001 - no compiler backend on this platform
        say(f"torch.compile unavailable ({type(exc).__name__}: {exc}); training eager")
        return net
    current = {"fn": compiled}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if current["fn"] is net:
            return net(x)
        try:
            return current["fn"](x)
        except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor
            say(f"torch.compile failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); training eager")
            current["fn"] = net
            return net(x)

    return forward
