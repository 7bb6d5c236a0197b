"""``segdecay tune``: choose lambda by k-fold cross-validation.

- ``options``: what to search and how (TuneOptions, grid and range parsing);
- ``folds``: group k-fold splits of the training split;
- ``search``: Optuna samplers, pruners and the objective that trains a trial's folds;
- ``race`` and ``screen``: the paired pruner, and the short rung before the full budget;
- ``storage``: where the study lives (SQLite, journal file, PostgreSQL);
- ``trials``: the typed trial record (:class:`~segdecay.studies.tune.trials.TrialRow`),
  read back from a study, and its CSV form;
- ``selection``: lambda.min and lambda.1se from the fold scores;
- ``choice``: the choice among trial rows (the best setting's lambda.min and lambda.1se);
- ``summary``: tune.json's payload from the rows, and the lines that say it (computes only);
- ``refit``: the chosen recipe retrained on the whole training split;
- ``report``: report.html;
- ``run``: :func:`run_tune`, the whole command as a pipeline: plan, search (after the screen),
  summarize, refit, write.
"""

from typing import TYPE_CHECKING

from segdecay.lazy import lazy_exports

if TYPE_CHECKING:
    from segdecay.studies.tune.options import TuneOptions, parse_grid, parse_range
    from segdecay.studies.tune.run import run_tune

__getattr__, __dir__ = lazy_exports(__name__, {
    "segdecay.studies.tune.options": ["TuneOptions", "parse_grid", "parse_range"],
    "segdecay.studies.tune.run": ["run_tune"],
})

__all__ = ["TuneOptions", "parse_grid", "parse_range", "run_tune"]
