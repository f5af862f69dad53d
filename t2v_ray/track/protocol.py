"""What every stage may call on a tracker: :class:`~t2v_ray.track.tracker.MlflowTracker` records it,
:class:`~t2v_ray.track.noop.NoopTracker` drops it. Get one from :func:`~t2v_ray.track.factory.create_tracker`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from t2v_ray.track.artifacts import ArtifactData


@runtime_checkable
class Tracker(Protocol):
    """MLflow logging bound to one experiment, with explicit run ids (see ``MlflowTracker`` for each method)."""

    enabled: bool
    tracking_uri: str
    experiment_id: str
    experiment_name: str | None

    def start_run(
        self, name: str, tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None
    ) -> str: ...

    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...

    def parent_run(
        self, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[str]: ...

    def log_child(
        self,
        parent_run_id: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, ArtifactData] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> str: ...

    def log_params_flat(self, run_id: str, nested: Any) -> dict[str, str]: ...

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> None: ...

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...

    def log_artifact_bytes(self, run_id: str, name: str, data: bytes | str) -> None: ...

    def log_file(self, run_id: str, path: str | Path, name: str | None = None) -> None: ...

    def log_artifacts(self, run_id: str, artifacts: Mapping[str, ArtifactData] | None) -> None: ...

    def log_figure(self, run_id: str, figure: Any, name: str) -> None: ...

    def find_runs(
        self,
        filter: str | Mapping[str, Any] = "",
        max_results: int | None = None,
        order_by: list[str] | None = None,
    ) -> list[Any]: ...

    def close_stale_runs(self, stage: str, out: str) -> list[str]: ...
