"""Select stage and reports: Table 1 on stored results, the paper's Fig. 1-3 style figures, ranking for a new task.

Modules: ``results`` (results-root layout and loaders), ``evaluate`` (every selector on the stored grid),
``tables`` / ``figures`` / ``violins`` / ``writer`` (outputs), ``stage`` (end to end + MLflow), ``rank``
(one new task), ``cli`` / ``select_cli`` (``t2v report``, ``t2v select evaluate|rank``).
"""
