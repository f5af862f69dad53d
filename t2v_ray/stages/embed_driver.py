"""The embed stage's driver: actor pool, result store, tracker and counters of one :func:`~t2v_ray.stages.embed.run_embed`.

Ray is imported inside the methods that need it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from t2v_ray.config import config_hash, to_dict
from t2v_ray.results.embeddings import error_row, is_cached
from t2v_ray.results.layout import EMBED_CONFIG_FILE, EMBED_SUMMARY_FILE
from t2v_ray.results.store import STATUS_OK, ResultStore
from t2v_ray.stages.embed import EmbedJobConfig, EmbedSummary, HashedSettings, Progress
from t2v_ray.stages.embed_worker import EmbedWorker, probe_identity, worker_threads
from t2v_ray.track import stage_tracker

log = logging.getLogger(__name__)


class Driver:
    """State of one run on the driver: actor pool, result store, tracker, counters."""

    def __init__(self, cfg: EmbedJobConfig, store: ResultStore, specs: dict, t_start: float):
        self.cfg, self.store, self.specs, self.t_start = cfg, store, specs, t_start
        self.summary = EmbedSummary(out=cfg.out)
        self.actors: list[Any] = []
        self.pids: dict[int, int] = {}
        self.key: dict[str, str] = {}
        self.resolved = cfg
        self.tracker: Any = None
        self.started_ray = False
        self._mlflow_failed = False

    # ------------------------------------------------------------------------------------ lifecycle
    def execute(self, selected: list[str], existing: dict, callback) -> EmbedSummary:
        if all(self._data_unchanged(existing.get(t), t) for t in selected):
            # Probably a rerun of a finished job: hash the probe here rather than start actors for nothing.
            self._set_key(*probe_identity(self.cfg))
        todo = self._todo(selected, existing)
        pool = self._start_pool() if todo else None
        self.tracker = stage_tracker(self.cfg.tracking, self.cfg.library, "embed")  # while the actors start
        with self.tracker.parent_run(self._run_name(), tags=self._tags()) as parent_id:
            self.summary.parent_run_id = parent_id
            if pool is not None:
                pool.wait_ready(self.cfg.actor_start_timeout)
                todo = self._todo(selected, existing)
            self.summary.startup_seconds = time.perf_counter() - self.t_start
            self.summary.total, self.summary.skipped = len(selected), len(selected) - len(todo)
            self._write_config()
            self.tracker.log_params_flat(parent_id, to_dict(self.resolved))
            if todo:
                t_loop = time.perf_counter()
                self._loop(pool, todo, callback)
                self.summary.loop_seconds = time.perf_counter() - t_loop
            self.store.compact()
            self.summary.wall_seconds = time.perf_counter() - self.t_start
            self._finish_parent(parent_id)
        return self.summary

    def close(self) -> None:
        """Save buffered rows, kill the actors, and shut Ray down if this run started it."""
        import ray

        try:
            self.store.flush()  # e.g. after Ctrl-C: finished tasks are not recomputed by the next run
        except Exception as err:
            log.warning("could not save buffered results: %s", err)
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()

    def _start_pool(self) -> Any:
        from t2v_ray.distributed.ray_utils import DynamicPool, check_resources, init_ray

        self.started_ray = init_ray(self.cfg.address, self.cfg.local_cpus)
        check_resources(self.cfg.cpus_per_actor, self.cfg.gpus_per_actor, local=self.started_ray)
        self.actors = self._start_actors()
        return DynamicPool(
            self.actors,
            ready=lambda a: a.describe.remote(),
            submit=lambda a, tid: a.embed.remote(tid),
            on_ready=self._on_ready,
        )

    def _start_actors(self) -> list[Any]:
        import ray

        from t2v_ray.distributed.ray_utils import worker_env

        cfg = self.cfg
        threads = worker_threads(cfg.cpus_per_actor)
        remote = ray.remote(EmbedWorker).options(
            num_cpus=cfg.cpus_per_actor,
            num_gpus=cfg.gpus_per_actor,
            max_restarts=cfg.max_restarts,
            max_task_retries=cfg.max_task_retries,
            runtime_env={"env_vars": worker_env(threads)},
        )
        return [remote.remote(cfg, threads, cfg.gpus_per_actor > 0) for _ in range(cfg.actors)]

    # ------------------------------------------------------------------------------------ cache key
    def _on_ready(self, slot: int, info: dict) -> None:
        """The first probe built fixes the cache key; every later actor must have built the same probe."""
        self._note_pid(slot, info["pid"])
        if not self.key:
            self._set_key(info["probe_hash"], info["input_size"])
        elif info["probe_hash"] != self.key["probe_hash"]:
            raise RuntimeError(
                f"actor {slot} on {info['host']} built a different probe (hash {info['probe_hash']} != "
                f"{self.key['probe_hash']}): weights must be identical on every node"
            )

    def _set_key(self, probe_hash: str, input_size: int) -> None:
        self.resolved = replace(self.cfg, input_size=input_size)
        self.key = {
            "probe_hash": probe_hash,
            "config_hash": config_hash(HashedSettings(self.cfg.embed, input_size)),
        }
        self.summary.probe_hash, self.summary.config_hash = probe_hash, self.key["config_hash"]

    def _key(self, task_id: str) -> dict[str, str]:
        return {**self.key, "data_hash": self.specs[task_id].content_hash}

    def _data_unchanged(self, row: dict | None, task_id: str) -> bool:
        return (
            bool(row) and row["status"] == STATUS_OK and row["data_hash"] == self.specs[task_id].content_hash
        )

    def _todo(self, selected: list[str], existing: dict) -> list[str]:
        if not self.key:
            return list(selected)
        return [t for t in selected if not is_cached(existing.get(t), self._key(t))]

    def _note_pid(self, slot: int, pid: int) -> None:
        # Ray restarts a killed actor and retries its call transparently: a new pid is how the driver sees it.
        if self.pids.get(slot) not in (None, pid):
            self.summary.actor_restarts += 1
        self.pids[slot] = pid

    # ------------------------------------------------------------------------------------ main loop
    def _loop(self, pool: Any, todo: list[str], callback) -> None:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="embed", unit="task", disable=not self.cfg.progress, mininterval=1.0)
        done = 0
        with bar:
            for event in pool.run(todo):
                if event is not None:
                    self._record(event)
                    done += 1
                    bar.update(1)
                    bar.set_postfix(ok=self.summary.ok, error=self.summary.error, refresh=False)
                self.store.tick()
                if callback is not None:
                    flight = {tid: self.pids.get(slot, -1) for slot, tid in pool.in_flight.items()}
                    callback(Progress(done, len(todo), flight))

    def _record(self, event: Any) -> None:
        tid = event.item
        if event.error is not None:
            row = error_row(tid, f"task {tid!r}: worker process died (after Ray's retries): {event.error}")
        else:
            row = event.value
            self._note_pid(event.slot, int(row["worker"].rsplit(":", 1)[1]))
        row.update(self._key(tid), probe=self.cfg.probe, method=self.cfg.embed.method)
        self.store.add(row)
        if row["status"] == STATUS_OK:
            self.summary.ok += 1
        else:
            self.summary.error += 1
            self.summary.errors.append((tid, row["error"]))
        if row.get("seconds") is not None:
            self.summary.task_seconds.append(float(row["seconds"]))
        if row.get("embed_seconds") is not None:  # Task2Vec.embed alone; not a stored column
            self.summary.embed_seconds.append(float(row["embed_seconds"]))
        self._log_child(row)

    # ------------------------------------------------------------------------------------ outputs
    def _write_config(self) -> None:
        import yaml

        from t2v_ray.data import storage

        text = yaml.safe_dump(to_dict(self.resolved), sort_keys=False)
        storage.write_bytes_atomic(storage.join(self.cfg.out, EMBED_CONFIG_FILE), text.encode())

    def _run_name(self) -> str:
        from t2v_ray.track import run_name

        return run_name("embed", probe=self.cfg.probe)

    def _tags(self, **extra: Any) -> dict[str, str]:
        from t2v_ray.track import run_tags

        return run_tags("embed", probe=self.cfg.probe, library=self.cfg.library, out=self.cfg.out, **extra)

    def _log_child(self, row: dict) -> None:
        if self._mlflow_failed:
            return
        try:
            log_embedding_run(
                self.tracker, self.summary.parent_run_id, row, self._tags(task_id=row["task_id"])
            )
        except Exception as err:  # results are safe in Parquet; tracking trouble must not stop the run
            log.warning("MLflow logging failed, continuing without it: %s", err)
            self._mlflow_failed = True

    def _finish_parent(self, parent_id: str) -> None:
        import json

        from t2v_ray.data import storage

        summary = self.summary.to_dict()
        text = json.dumps(summary, indent=2)
        storage.write_bytes_atomic(storage.join(self.cfg.out, EMBED_SUMMARY_FILE), text.encode())
        if self._mlflow_failed:
            return
        metrics = {k: float(summary[k]) for k in ("ok", "error", "skipped", "computed", "wall_seconds")}
        metrics.update(
            mean_task_seconds=summary["mean_task_seconds"], tasks_per_minute=summary["tasks_per_minute"]
        )
        self.tracker.log_metrics(parent_id, metrics)
        self.tracker.log_artifacts(
            parent_id, {EMBED_CONFIG_FILE: to_dict(self.resolved), EMBED_SUMMARY_FILE: summary}
        )


def log_embedding_run(
    tracker: Any, parent_id: str | None, row: Mapping[str, Any], tags: dict[str, str]
) -> str:
    """One MLflow child run for one row: identifying params, norm/accuracy/seconds, the vector as ``.npy``.

    Error rows get the message as ``error.txt`` and tag ``status=error``. Returns the child's run id.
    """
    import io

    params = {k: row.get(k) for k in ("task_id", "probe", "method", "probe_hash", "config_hash", "data_hash")}
    params.update(n_samples=row.get("n_samples"), n_classes=row.get("n_classes"), worker=row.get("worker"))
    metrics = {k: float(row[k]) for k in ("norm", "head_accuracy", "seconds") if row.get(k) is not None}
    if row["status"] == STATUS_OK:
        buf = io.BytesIO()
        np.save(buf, np.asarray(row["embedding"], dtype=np.float32))
        artifacts: dict[str, Any] = {"embedding.npy": buf.getvalue()}
    else:
        artifacts = {"error.txt": row.get("error") or ""}
    name = f"embed:{row['task_id']}"
    return tracker.log_child(parent_id, name, params, metrics, {**tags, "status": row["status"]}, artifacts)
