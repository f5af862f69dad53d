"""Reports: Table 1 on stored results and the paper's Fig. 1-3 style figures.

Modules: ``evaluate`` (every selector on the stored grid: Table 1 and the per-task details), ``tables`` /
``figures`` / ``violins`` / ``plotting`` / ``writer`` (the output files), ``tasks`` (task specs and figure groups).
The select stage that runs them is :mod:`t2v_ray.stages.select`; its commands live in :mod:`t2v_ray.cli.select`.
"""
