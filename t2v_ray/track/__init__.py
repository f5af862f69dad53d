"""MLflow tracking for every stage: one logger interface, run naming, artifact layout, credential redaction.

Importing this package does not import mlflow (workers may have only mlflow-skinny, or none).

Example (driver, then a worker that received the pickled tracker)::

    tracker = create_tracker(default_tracking_uri(data_dir), experiment_name(library_uri, "embed"))
    with tracker.parent_run("embed", params=to_dict(cfg), tags=run_tags("embed")) as parent_id:
        tracker.log_child(parent_id, run_name("embed", task_id=t, probe=p),
                          metrics={"norm": 3.2}, tags=run_tags("embed", task_id=t, probe=p),
                          artifacts={"embedding.json": vector.tolist()})
"""

from __future__ import annotations

from t2v_ray.track.factory import create_tracker, stage_tracker
from t2v_ray.track.naming import (
    STAGES,
    TAG_EXPERT_ID,
    TAG_PROBE,
    TAG_STAGE,
    TAG_TASK_ID,
    default_artifact_root,
    default_tracking_uri,
    experiment_name,
    library_name,
    run_name,
    run_tags,
)
from t2v_ray.track.noop import NoopTracker
from t2v_ray.track.protocol import Tracker
from t2v_ray.track.redact import is_secret_key, redact, redact_text, secret_values
from t2v_ray.track.settings import TrackingSettings
from t2v_ray.track.tracker import MlflowTracker

__all__ = [
    "STAGES",
    "TAG_EXPERT_ID",
    "TAG_PROBE",
    "TAG_STAGE",
    "TAG_TASK_ID",
    "MlflowTracker",
    "NoopTracker",
    "Tracker",
    "TrackingSettings",
    "create_tracker",
    "default_artifact_root",
    "default_tracking_uri",
    "experiment_name",
    "is_secret_key",
    "library_name",
    "redact",
    "redact_text",
    "run_name",
    "run_tags",
    "secret_values",
    "stage_tracker",
]
