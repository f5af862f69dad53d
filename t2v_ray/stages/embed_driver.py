"""The embed stage's driver: actor pool, result store, tracker and counters of one :func:`~t2v_ray.stages.embed.run_embed`.

Ray is imported inside the methods that need it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from t2v_ray.config import config_hash, to_dict
from t2v_ray.data.leases import LeaseBook
from t2v_ray.results.embeddings import error_row, is_cached
from t2v_ray.results.layout import EMBED_CONFIG_FILE, EMBED_SUMMARY_FILE, LEASES_SUFFIX
from t2v_ray.results.store import STATUS_OK, ResultStore
from t2v_ray.stages.embed import EmbedJobConfig, EmbedSummary, HashedSettings, Progress
from t2v_ray.stages.embed_worker import EmbedWorker, probe_identity, worker_threads
from t2v_ray.track import stage_tracker

log = logging.getLogger(__name__)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``ray job stop``, Kubernetes, ``kill``) behaves like Ctrl-C inside the block: dispatching stops,
    finished rows are flushed, the MLflow parent run ends KILLED and the actors are stopped, instead of the
    process dying mid-write. Only the main thread can install signal handlers; elsewhere this does nothing."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        self._unflushed: list[tuple[str, bool]] = []  # (task, ok) recorded but not yet in a part file
        self.leases = LeaseBook(store.main_uri + LEASES_SUFFIX, cfg.lease_seconds)
        self._mlflow_failed = False

    # ------------------------------------------------------------------------------------ lifecycle
    def execute(self, selected: list[str], existing: dict, callback) -> EmbedSummary:
        if all(self._data_unchanged(existing.get(t, []), t) for t in selected):
            # Probably a rerun of a finished job: hash the probe here rather than start actors for nothing.
            self._set_key(*probe_identity(self.cfg))
        todo = self._todo(selected, existing)
        pool = self._start_pool() if todo else None
        self.tracker = stage_tracker(self.cfg.tracking, self.cfg.library, "embed")  # while the actors start
        # After ray.init, which installs Ray's own SIGTERM handler (it aborts the process).
        with (
            sigterm_as_interrupt(),
            self.tracker.parent_run(self._run_name(), tags=self._tags()) as parent_id,
        ):
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
        import sys

        import ray

        from t2v_ray.data.retry import StorageUnavailableError

        if isinstance(sys.exc_info()[1], StorageUnavailableError):
            # Storage already failed for the whole patience: trying again would only double the wait.
            log.warning("storage unreachable: %d buffered result(s) not saved", self.store.buffered)
        else:
            try:
                self.store.flush()  # e.g. after Ctrl-C: finished tasks are not recomputed by the next run
                self.leases.release_all()  # tasks in flight when we stop are free for the next run at once
            except Exception as err:
                log.warning("could not save buffered results or release leases: %s", err)
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
            claim=lambda tid: self.leases.claim(self._lease_item(tid)),
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

    def _lease_item(self, task_id: str) -> str:
        """A task under this run's (probe, config, data): runs with other configs never wait for each other."""
        import hashlib

        key = self._key(task_id)
        digest = hashlib.sha256("|".join(str(key.get(k)) for k in sorted(key)).encode()).hexdigest()[:12]
        return f"{task_id}-{digest}"

    def _key(self, task_id: str) -> dict[str, str]:
        return {**self.key, "data_hash": self.specs[task_id].content_hash}

    def _data_unchanged(self, rows: list[dict], task_id: str) -> bool:
        data_hash = self.specs[task_id].content_hash
        return any(r["status"] == STATUS_OK and r["data_hash"] == data_hash for r in rows)

    def _todo(self, selected: list[str], existing: dict) -> list[str]:
        if not self.key:
            return list(selected)
        return [t for t in selected if not is_cached(existing.get(t, []), self._key(t))]

    def _note_pid(self, slot: int, pid: int) -> None:
        # Ray restarts a killed actor and retries its call transparently: a new pid is how the driver sees it.
        if self.pids.get(slot) not in (None, pid):
            self.summary.actor_restarts += 1
        self.pids[slot] = pid

    # ------------------------------------------------------------------------------------ main loop
    def _loop(self, pool: Any, todo: list[str], callback) -> None:
        from t2v_ray.distributed.ray_utils import PoolExhausted

        try:
            self._dispatch(pool, todo, callback)
        except PoolExhausted as err:
            # Out of actor restarts: the remaining tasks get rows saying so, and the summary is still written.
            reason = (
                f"not run: actor pool exhausted after {self.cfg.max_restarts} restarts per actor "
                f"(last failure: {_first_line(err.last_failure)})"
            )
            self.summary.aborted = f"{len(err.remaining)} of {len(todo)} tasks {reason}"
            for tid in err.remaining:
                self._record_row(tid, error_row(tid, f"task {tid!r}: {reason}"))

    def _dispatch(self, pool: Any, todo: list[str], callback) -> None:
        """Run ``todo`` on the pool; tasks leased by another live run wait, and are dropped once it stores them."""
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="embed", unit="task", disable=not self.cfg.progress, mininterval=1.0)
        with bar:
            pending, done = list(todo), 0
            while pending:
                pool.deferred = []
                done = self._run_round(pool, pending, callback, bar, done, len(todo))
                pending = self._still_needed(pool.deferred)
                bar.update(len(pool.deferred) - len(pending))
                if pending:
                    time.sleep(min(5.0, self.cfg.lease_seconds / 4))

    def _still_needed(self, deferred: list[str]) -> list[str]:
        """Deferred tasks that no other run has stored an ok row for yet."""
        if not deferred:
            return []
        rows: dict[str, list[dict]] = {}
        for row in self.store.read_rows().values():
            rows.setdefault(row["task_id"], []).append(row)
        left = [t for t in deferred if not is_cached(rows.get(t, []), self._key(t))]
        self.summary.shared += len(deferred) - len(left)
        self.summary.skipped += len(deferred) - len(left)
        return left

    def _run_round(self, pool: Any, todo: list[str], callback, bar: Any, done: int, total: int) -> int:
        renewed = time.monotonic()
        for event in pool.run(todo):
            if event is not None:
                self._record(event)
                done += 1
                bar.update(1)
                bar.set_postfix(ok=self.summary.ok, error=self.summary.error, refresh=False)
            if self.store.tick():
                self._release_stored()
            if callback is not None:
                flight = {tid: self.pids.get(slot, -1) for slot, tid in pool.in_flight.items()}
                callback(Progress(done, total, flight))
            if time.monotonic() - renewed > self.cfg.lease_seconds / 3:
                self.leases.renew()
                renewed = time.monotonic()
        self.store.flush()
        self._release_stored()
        return done

    def _release_stored(self) -> None:
        """Leases of tasks whose rows are now in a part file: another run will find the row, not a free task."""
        for tid, ok in self._unflushed:
            if ok:
                self.leases.finish(self._lease_item(tid))
            else:
                self.leases.release(self._lease_item(tid))  # an error row: another run may retry it at once
        self._unflushed = []

    def _record(self, event: Any) -> None:
        tid = event.item
        if event.error is not None:
            row = error_row(tid, f"task {tid!r}: worker process died (after Ray's retries): {event.error}")
        else:
            row = event.value
            self._note_pid(event.slot, int(row["worker"].rsplit(":", 1)[1]))
        self._record_row(tid, row)

    def _record_row(self, tid: str, row: dict) -> None:
        row.update(self._key(tid), probe=self.cfg.probe, method=self.cfg.embed.method)
        self._unflushed.append((tid, row["status"] == STATUS_OK))
        if self.store.add(row):
            self._release_stored()
        if row["status"] == STATUS_OK:
            self.summary.ok += 1
        else:
            self.summary.error += 1
            self.summary.errors.append((tid, row["error"]))
        self.summary.bad_rows += int(row.get("n_bad_rows") or 0)
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


def _first_line(err: BaseException | None) -> str:
    text = str(err).strip() if err is not None else ""
    return text.splitlines()[0][:300] if text else "unknown"
