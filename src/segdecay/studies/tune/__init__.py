"""``segdecay tune``: choose lambda by k-fold cross-validation.

- ``options``: what to search and how (TuneOptions, grid and range parsing);
- ``folds``: group k-fold splits of the training split;
- ``search``: Optuna samplers, pruners and the objective that trains a trial's folds;
- ``race`` and ``screen``: the paired pruner, and the short rung before the full budget;
- ``storage``: where the study lives (SQLite, journal file, PostgreSQL);
- ``selection``: lambda.min and lambda.1se from the fold scores;
- ``summary``: tune.json, trials.csv, the choice and the refit;
- ``report``: report.html;
- ``run``: :func:`run_tune`, the whole command.
"""

from segdecay.studies.tune.options import TuneOptions, parse_grid, parse_range
from segdecay.studies.tune.run import run_tune

__all__ = ["TuneOptions", "parse_grid", "parse_range", "run_tune"]
