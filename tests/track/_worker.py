"""Code run in spawned worker processes: it gets only the pickled tracker and the parent run id."""

from __future__ import annotations

import pickle

from t2v_ray.track import run_name, run_tags


def log_embed_child(payload: bytes, parent_run_id: str, task_id: str, leaked: str) -> str:
    """Log one embed child run the way a Ray worker would; ``leaked`` is a secret that must not reach MLflow."""
    tracker = pickle.loads(payload)
    return tracker.log_child(
        parent_run_id,
        run_name("embed", task_id=task_id, probe="tiny"),
        params={"probe": {"name": "tiny", "note": f"endpoint key {leaked}"}, "task_id": task_id},
        metrics={"norm": 1.5},
        tags=run_tags("embed", task_id=task_id, probe="tiny"),
        artifacts={"embedding.json": [0.25, 0.5], "notes/log.txt": f"worker saw {leaked}"},
        step_metrics={"loss": [3.0, 2.0, 1.0]},
    )
