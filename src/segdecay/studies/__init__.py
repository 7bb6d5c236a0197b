"""The studies segdecay runs over many trainings: ``tune`` (choose lambda by CV),
``compare`` (variants over seeds) and ``spectrum`` (frequency analysis of trained runs),
with what their local workers share in ``workers``. Each study owns its search or run, its
statistics or measures, its summary and its report. A new study is a new package here and
a new module in :mod:`segdecay.cli`."""
