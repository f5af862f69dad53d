"""A tracker that accepts every call and records nothing (``enabled=False``, or no mlflow installed)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from t2v_ray.track.artifacts import ArtifactData
from t2v_ray.track.params import prepare_params


def _fake_run_id() -> str:
    # Unique so that callers keying results by run id do not collide.
    return f"noop-{uuid.uuid4().hex}"


class NoopTracker:
    """The :class:`~t2v_ray.track.protocol.Tracker` that records nothing (no MLflow import, no subclassing)."""

    enabled = False

    def __init__(self, experiment_name: str | None = None) -> None:
        self.tracking_uri = ""
        self.experiment_id = ""
        self.experiment_name = experiment_name

    @property
    def client(self) -> Any:
        """Always ``None``: there is no MLflow client behind a no-op tracker."""
        return None

    def start_run(
        self, name: str, tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None
    ) -> str:
        """A fake run id."""
        return _fake_run_id()

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Nothing."""

    @contextlib.contextmanager
    def parent_run(
        self, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[str]:
        """Yields a fake run id."""
        yield _fake_run_id()

    def log_child(
        self,
        parent_run_id: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, ArtifactData] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> str:
        """A fake run id."""
        return _fake_run_id()

    def log_params_flat(self, run_id: str, nested: Any) -> dict[str, str]:
        """What would have been logged (flattened, redacted, truncated), logging nothing."""
        return prepare_params(nested)

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Nothing."""

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Nothing."""

    def log_artifact_bytes(self, run_id: str, name: str, data: bytes | str) -> None:
        """Nothing."""

    def log_file(self, run_id: str, path: str | Path, name: str | None = None) -> None:
        """Nothing."""

    def log_artifacts(self, run_id: str, artifacts: Mapping[str, ArtifactData] | None) -> None:
        """Nothing."""

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        """Nothing."""

    def find_runs(
        self,
        filter: str | Mapping[str, Any] = "",
        max_results: int | None = None,
        order_by: list[str] | None = None,
    ) -> list[Any]:
        """No runs."""
        return []

    def close_stale_runs(self, stage: str, out: str) -> list[str]:
        """No runs to close."""
        return []
