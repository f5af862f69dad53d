"""The one MLflow settings type every stage config nests (``tracking:``); plain data, no mlflow import."""

from __future__ import annotations

from dataclasses import dataclass

from t2v_ray.config import Uri


@dataclass(frozen=True)
class TrackingSettings:
    """Where a stage's runs are tracked.

    Attributes:
        uri: MLflow tracking URI; None = ``MLFLOW_TRACKING_URI`` or ``sqlite:///./t2v-data/mlflow.db``.
        artifact_root: artifact root of new experiments; None = ``mlartifacts`` next to a sqlite database.
        enabled: False logs nothing.
        experiment: experiment name; None = ``t2v/<library>/<stage>``.
    """

    uri: Uri | None = None
    artifact_root: Uri | None = None
    enabled: bool = True
    experiment: str | None = None
