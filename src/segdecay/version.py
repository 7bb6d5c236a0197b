"""The package version and the library versions that decide a run's numbers."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def library_versions() -> dict[str, str]:
    """Versions written into every summary.json, so a number can be traced to its stack."""
    import numpy
    import segmentation_models_pytorch as smp
    import torch

    return {
        "segdecay": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
