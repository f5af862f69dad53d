"""The one way to get a tracker: :func:`create_tracker` (driver side), :func:`stage_tracker` for a stage's settings."""

from __future__ import annotations

import warnings
from typing import Any

from t2v_ray.results.layout import DEFAULT_DATA_DIR
from t2v_ray.track.naming import (
    ARTIFACTS_DIRNAME,
    default_tracking_uri,
    experiment_artifact_location,
    experiment_name,
    sqlite_path,
)
from t2v_ray.track.noop import NoopTracker
from t2v_ray.track.protocol import Tracker
from t2v_ray.track.settings import TrackingSettings
from t2v_ray.track.tracker import MlflowTracker


def create_tracker(
    tracking_uri: str | None,
    experiment: str,
    artifact_root: str | None = None,
    enabled: bool = True,
) -> Tracker:
    """Get or create ``experiment`` (on the driver) and return a tracker bound to it.

    Args:
        tracking_uri: MLflow URI; ``None`` means :func:`default_tracking_uri` of ``./t2v-data`` (which
            honours ``MLFLOW_TRACKING_URI``).
        experiment: Experiment name, normally from :func:`experiment_name`.
        artifact_root: Where new experiments keep artifacts (``<root>/<experiment name>``). For sqlite
            URIs it defaults to ``mlartifacts`` next to the database, never the cwd's ``./mlruns``; for a
            server, to the server's own default.
        enabled: ``False`` gives a :class:`NoopTracker`, as does an environment without mlflow.

    Returns:
        An :class:`MlflowTracker`, or a :class:`NoopTracker` that accepts and drops every call.
    """
    if not enabled:
        return NoopTracker(experiment)
    try:
        from mlflow import MlflowClient
    except ImportError:
        warnings.warn("mlflow is not installed: tracking disabled", RuntimeWarning, stacklevel=2)
        return NoopTracker(experiment)
    uri = tracking_uri or default_tracking_uri(DEFAULT_DATA_DIR)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # sqlite cannot create the folder itself
        artifact_root = artifact_root or str(db.parent / ARTIFACTS_DIRNAME)
    location = experiment_artifact_location(artifact_root, experiment) if artifact_root else None
    experiment_id = _get_or_create_experiment(MlflowClient(uri), experiment, location)
    return MlflowTracker(uri, experiment_id, experiment)


def stage_tracker(settings: TrackingSettings, library_uri: str, stage: str) -> Tracker:
    """The tracker of one stage run: experiment ``settings.experiment`` or ``t2v/<library>/<stage>``."""
    name = settings.experiment or experiment_name(library_uri, stage)
    return create_tracker(settings.uri, name, settings.artifact_root, settings.enabled)


def _get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``: reused (restored if deleted) or created; tolerates a concurrent creator."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            # Another driver created it between our lookup and create: use theirs.
            existing = client.get_experiment_by_name(name)
            if existing is None:
                raise
    if existing.lifecycle_stage == "deleted":
        client.restore_experiment(existing.experiment_id)
    return existing.experiment_id
