"""``segdecay compare``: regularizers or imbalance treatments, over seeds, on the same data.

- ``variants``: what is compared (variants, presets, the run layout);
- ``run``: :func:`run_compare`, training every (variant, seed) with local workers;
- ``per_image``: per-image scores of a run;
- ``statistics``: paired differences, Holm's correction, mean and sd;
- ``summary``: compare.json from the finished runs;
- ``report``: compare.csv and report.html.
"""

from segdecay.studies.compare.run import run_compare
from segdecay.studies.compare.variants import CompareOptions, Variant, parse_variant

__all__ = ["CompareOptions", "Variant", "parse_variant", "run_compare"]
