"""segdecay: semantic-segmentation training with weight decay as a visible, tunable part.

Public API (the CLI is built on it):

- ``param_groups``, ``build_optimizer``, ``regularization_term``: the decay mechanics;
- ``SegmentationMetrics``: confusion matrix over a whole split -> IoU, Dice, accuracy;
- ``TrainConfig``, ``train``: one training run into a run folder;
- ``load_dataset``: ``synthetic``, ``camvid:PATH`` or ``folder:PATH`` into memory.
"""

__version__ = "0.1.0"

from segdecay.config import TrainConfig  # noqa: E402
from segdecay.metrics import SegmentationMetrics  # noqa: E402
from segdecay.optim import build_optimizer, build_scheduler, decay_report  # noqa: E402
from segdecay.regularization import param_groups, regularization_term  # noqa: E402


def train(*args, **kwargs):
    """Train one model into a run folder; see ``segdecay.engine.train``."""
    from segdecay.engine import train as _train

    return _train(*args, **kwargs)


def load_dataset(*args, **kwargs):
    """Load a dataset spec into memory; see ``segdecay.data.load_dataset``."""
    from segdecay.data import load_dataset as _load

    return _load(*args, **kwargs)


__all__ = [
    "SegmentationMetrics",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "decay_report",
    "load_dataset",
    "param_groups",
    "regularization_term",
    "train",
]
