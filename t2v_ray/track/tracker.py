"""The one MLflow logger every stage uses (embed, experts, grid, select).

:func:`~t2v_ray.track.factory.create_tracker` runs on the driver: it creates or reuses the stage's experiment, pinning its artifact
location (STACK pitfall 12), and returns a small picklable object holding only ``tracking_uri`` and
``experiment_id``. Ship that object to Ray workers or Tune trials (pitfall 13: experiments are created on the
driver only); there, ``log_child`` records a complete nested run in one call.

Everything goes through ``MlflowClient`` with explicit run ids: no global active run, so concurrent threads and
processes cannot log into each other's runs. Every path redacts credentials (:mod:`t2v_ray.track.redact`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from t2v_ray.data.leases import pid_alive
from t2v_ray.track.artifacts import ArtifactData, artifact_name, stage_artifact
from t2v_ray.track.params import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    chunked,
    metric_entities,
    prepare_params,
    prepare_tags,
)
from t2v_ray.track.query import build_filter
from t2v_ray.track.redact import redact_text

PARENT_RUN_TAG = "mlflow.parentRunId"
TAG_DRIVER_HOST, TAG_DRIVER_PID = "t2v.driver_host", "t2v.driver_pid"


class MlflowTracker:
    """MLflow logging bound to one experiment (the :class:`~t2v_ray.track.protocol.Tracker` that records);
    picklable, so it can be shipped to workers.

    Attributes:
        tracking_uri: MLflow tracking URI (``sqlite:///…``, ``http://…``).
        experiment_id: Experiment every run of this tracker goes to.
        experiment_name: Its name, for messages only (may be ``None`` on a tracker rebuilt from an id).
    """

    enabled = True

    def __init__(self, tracking_uri: str, experiment_id: str, experiment_name: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = str(experiment_id)
        self.experiment_name = experiment_name
        self._client_cache: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # The client holds DB engines / HTTP sessions: rebuild it lazily on the other side.
        return {**self.__dict__, "_client_cache": None}

    def __repr__(self) -> str:
        uri = redact_text(self.tracking_uri or "")
        return f"{type(self).__name__}(tracking_uri={uri!r}, experiment_id={self.experiment_id!r})"

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` for ``tracking_uri`` (created on first use, in this process)."""
        if self._client_cache is None:
            from mlflow import MlflowClient

            self._client_cache = MlflowClient(self.tracking_uri)
        return self._client_cache

    def start_run(
        self, name: str, tags: Mapping[str, Any] | None = None, parent_run_id: str | None = None
    ) -> str:
        """Open a run (nested under ``parent_run_id`` when given) and return its id; close it with ``end_run``."""
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        run = self.client.create_run(
            self.experiment_id, tags=prepare_tags(all_tags), run_name=redact_text(name)
        )
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(run_id, status=status)

    @contextlib.contextmanager
    def parent_run(
        self, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[str]:
        """Context manager around a parent run; yields its id and ends it FINISHED, FAILED or KILLED.

        Args:
            name: Run name (see :func:`run_name`).
            params: Nested params, flattened with dotted keys (e.g. the resolved config).
            tags: Tags (see :func:`run_tags`).
        """
        tags = {**(tags or {}), TAG_DRIVER_HOST: socket.gethostname(), TAG_DRIVER_PID: str(os.getpid())}
        if tags.get("stage") and tags.get("out"):
            self.close_stale_runs(tags["stage"], tags["out"])
        run_id = self.start_run(name, tags)
        with _terminating(self, run_id):
            if params:
                self.log_params_flat(run_id, params)
            yield run_id

    def close_stale_runs(self, stage: str, out: str) -> list[str]:
        """Mark FAILED the RUNNING parent runs of ``stage`` into ``out`` whose driver is dead (killed with -9, so
        it could not end its run); returns their ids. A driver on another host cannot be checked and is left
        alone, unless the run predates the driver tags."""
        stale = []
        for run in self.find_runs(f"tags.stage = '{stage}' and attributes.status = 'RUNNING'"):
            t = run.data.tags
            if t.get("out") != out or PARENT_RUN_TAG in t:
                continue
            host, pid = t.get(TAG_DRIVER_HOST), t.get(TAG_DRIVER_PID)
            if host is None or (host == socket.gethostname() and pid and not pid_alive(int(pid))):
                self.client.set_tag(
                    run.info.run_id, "t2v.ended_by", f"a later run (driver {host}:{pid} was dead)"
                )
                self.end_run(run.info.run_id, "FAILED")
                stale.append(run.info.run_id)
        return stale

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
        """Log a complete child run in one call (safe from workers and threads); returns its run id.

        Args:
            parent_run_id: Run to nest under (from :meth:`parent_run`, passed to the worker).
            name: Run name.
            params: Nested params, flattened with dotted keys.
            metrics: Scalar metrics, logged at step 0.
            tags: Tags (see :func:`run_tags`).
            artifacts: Run-relative name -> content (``bytes``/``str``/JSON-able) or ``pathlib.Path`` to a file.
            step_metrics: Series logged at steps 0..n-1 (e.g. per-epoch loss).

        Returns:
            The child's run id. The run ends FINISHED, or FAILED if logging raised (the error propagates).
        """
        run_id = self.start_run(name, tags, parent_run_id=parent_run_id)
        with _terminating(self, run_id):
            if params:
                self.log_params_flat(run_id, params)
            self.log_metrics(run_id, metrics, step_metrics)
            self.log_artifacts(run_id, artifacts)
        return run_id

    def log_params_flat(self, run_id: str, nested: Any) -> dict[str, str]:
        """Log a nested mapping or dataclass as params with dotted keys; returns what was logged.

        Values are stringified, redacted and truncated to MLflow's 6000 characters, in batches of 100.
        """
        from mlflow.entities import Param

        flat = prepare_params(nested)
        entities = [Param(k, v) for k, v in flat.items()]
        for batch in chunked(entities, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=batch, synchronous=True)
        return flat

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Log scalar metrics (step 0) and per-step series, in batches of 1000."""
        for batch in chunked(metric_entities(metrics, step_metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch, synchronous=True)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set (redacted, truncated) tags on a run, in batches of 100."""
        from mlflow.entities import RunTag

        entities = [RunTag(k, v) for k, v in prepare_tags(tags).items()]
        for batch in chunked(entities, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=batch, synchronous=True)

    def log_artifact_bytes(self, run_id: str, name: str, data: bytes | str) -> None:
        """Store ``data`` (text is redacted) as artifact ``name`` (e.g. ``embedding.npy``, ``config.yaml``)."""
        self._upload(run_id, name, data)

    def log_file(self, run_id: str, path: str | Path, name: str | None = None) -> None:
        """Upload a local file as artifact ``name`` (default: its base name); text files are redacted."""
        self._upload(run_id, name or Path(path).name, Path(path))

    def log_artifacts(self, run_id: str, artifacts: Mapping[str, ArtifactData] | None) -> None:
        """Upload several artifacts: name -> content or ``pathlib.Path`` (see :meth:`log_child`)."""
        for name, data in (artifacts or {}).items():
            self._upload(run_id, name, data)

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        """Save a matplotlib (or plotly) figure as artifact ``name`` (e.g. ``plots/heatmap.png``)."""
        self.client.log_figure(run_id, figure, str(artifact_name(name)))

    def find_runs(
        self,
        filter: str | Mapping[str, Any] = "",
        max_results: int | None = None,
        order_by: list[str] | None = None,
    ) -> list[Any]:
        """Runs of this experiment matching ``filter``.

        Args:
            filter: An MLflow filter string, or a mapping ``{key: value}`` of equalities; plain keys are tags
                (``{"task_id": "t1"}``), prefixed keys (``params.lr``, ``metrics.error``) are used as written.
            max_results: Stop after this many (``None``: all, paging through the store).
            order_by: MLflow ``order_by`` clauses.

        Returns:
            ``mlflow.entities.Run`` objects.
        """
        query = build_filter(filter)
        runs: list[Any] = []
        token = None
        while max_results is None or len(runs) < max_results:
            page_size = 1000 if max_results is None else min(1000, max_results - len(runs))
            page = self.client.search_runs(
                [self.experiment_id], query, max_results=page_size, order_by=order_by, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def _upload(self, run_id: str, name: str, data: ArtifactData) -> None:
        # One staging dir per artifact: names in different folders may share a base name.
        with tempfile.TemporaryDirectory(prefix="t2v-artifact-") as tmp:
            local, folder = stage_artifact(Path(tmp), name, data)
            self.client.log_artifact(run_id, str(local), artifact_path=folder)


@contextlib.contextmanager
def _terminating(tracker: MlflowTracker, run_id: str) -> Iterator[None]:
    """End ``run_id`` with a status that says how the block exited (KILLED on Ctrl-C, FAILED on errors)."""
    try:
        yield
    except KeyboardInterrupt:
        tracker.end_run(run_id, "KILLED")
        raise
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
