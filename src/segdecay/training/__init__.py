"""Training one model into a run folder.

- ``loop``: :func:`train` and the loop as named steps (restore, epoch, divergence, row,
  checkpoint, finish);
- ``setup``: the run's fixed parts (model, decay groups, optimizer, loss) and its header;
- ``epoch``: one epoch, the batch step, the clean stop on a signal;
- ``evaluate``: the one evaluation loop every score goes through;
- ``state``: progress, checkpoints and RNG states for an exact resume;
- ``log``, ``divergence``, ``interrupt``, ``hardware``, ``distributed``: what they say.
"""

from segdecay.training.evaluate import Scoring, evaluate_split
from segdecay.training.log import Log
from segdecay.training.loop import train

__all__ = ["Log", "Scoring", "evaluate_split", "train"]
