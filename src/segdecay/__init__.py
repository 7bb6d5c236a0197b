"""segdecay: semantic-segmentation training with weight decay as a visible, tunable part.

Public API (the CLI is built on it):

- ``param_groups``, ``build_optimizer``, ``build_scheduler``, ``regularization_term``,
  ``decay_report``: the decay mechanics;
- ``SegmentationMetrics``: confusion matrix over a whole split -> IoU, Dice, accuracy;
- ``TrainConfig``, ``train``: one training run into a run folder; ``load_run``,
  ``evaluate_run``: using it afterwards;
- ``load_dataset``: ``synthetic``, ``camvid:PATH`` or ``folder:PATH`` into memory;
- ``run_tune``, ``run_compare``, ``run_spectrum``: the three studies.
"""

from typing import TYPE_CHECKING

from segdecay.lazy import lazy_exports
from segdecay.version import __version__

if TYPE_CHECKING:
    from segdecay.config import TrainConfig
    from segdecay.data import load_dataset
    from segdecay.decay import (
        build_optimizer,
        build_scheduler,
        decay_report,
        param_groups,
        regularization_term,
    )
    from segdecay.metrics import SegmentationMetrics
    from segdecay.runs import evaluate_run, load_run
    from segdecay.studies.compare import CompareOptions, run_compare
    from segdecay.studies.spectrum import SpectrumOptions, run_spectrum
    from segdecay.studies.tune import TuneOptions, run_tune
    from segdecay.training import train

__getattr__, __dir__ = lazy_exports(__name__, {
    "segdecay.config": ["TrainConfig"],
    "segdecay.data": ["load_dataset"],
    "segdecay.decay": ["build_optimizer", "build_scheduler", "decay_report", "param_groups",
                       "regularization_term"],
    "segdecay.metrics": ["SegmentationMetrics"],
    "segdecay.runs": ["evaluate_run", "load_run"],
    "segdecay.studies.compare": ["CompareOptions", "run_compare"],
    "segdecay.studies.spectrum": ["SpectrumOptions", "run_spectrum"],
    "segdecay.studies.tune": ["TuneOptions", "run_tune"],
    "segdecay.training": ["train"],
})

__all__ = [
    "CompareOptions",
    "SegmentationMetrics",
    "SpectrumOptions",
    "TrainConfig",
    "TuneOptions",
    "__version__",
    "build_optimizer",
    "build_scheduler",
    "decay_report",
    "evaluate_run",
    "load_dataset",
    "load_run",
    "param_groups",
    "regularization_term",
    "run_compare",
    "run_spectrum",
    "run_tune",
    "train",
]
