"""``segdecay spectrum``: does weight decay make a network prefer low spatial frequencies?

- ``measures``: the frequency maths on tensors (spectra, filters, band noise, boundary IoU);
- ``options``: what is measured and how;
- ``analyse``: every measurement of one trained run;
- ``verdict``: the sentences computed from the numbers;
- ``report``: report.html;
- ``run``: :func:`run_spectrum`, the whole command.
"""

from typing import TYPE_CHECKING

from segdecay.lazy import lazy_exports

if TYPE_CHECKING:
    from segdecay.studies.spectrum.options import SpectrumOptions
    from segdecay.studies.spectrum.run import run_spectrum

__getattr__, __dir__ = lazy_exports(__name__, {
    "segdecay.studies.spectrum.options": ["SpectrumOptions"],
    "segdecay.studies.spectrum.run": ["run_spectrum"],
})

__all__ = ["SpectrumOptions", "run_spectrum"]
