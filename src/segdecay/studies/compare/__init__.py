"""``segdecay compare``: regularizers or imbalance treatments, over seeds, on the same data.

- ``options``: what is compared and how (variants, presets, seeds: CompareOptions);
- ``variants``: variants read from text and YAML, the presets built, the run layout;
- ``run``: :func:`run_compare`, training every (variant, seed) with local workers;
- ``per_image``: per-image scores of a run;
- ``statistics``: paired differences, Holm's correction, mean and sd;
- ``summary``: compare.json from the finished runs;
- ``report``: compare.csv and report.html.
"""

from typing import TYPE_CHECKING

from segdecay.lazy import lazy_exports

if TYPE_CHECKING:
    from segdecay.studies.compare.options import CompareOptions, Variant
    from segdecay.studies.compare.run import run_compare
    from segdecay.studies.compare.variants import parse_variant

__getattr__, __dir__ = lazy_exports(__name__, {
    "segdecay.studies.compare.options": ["CompareOptions", "Variant"],
    "segdecay.studies.compare.run": ["run_compare"],
    "segdecay.studies.compare.variants": ["parse_variant"],
})

__all__ = ["CompareOptions", "Variant", "parse_variant", "run_compare"]
