"""``python -m t2v_ray.cli``: the same ``t2v`` command."""

from t2v_ray.cli import app

app()
