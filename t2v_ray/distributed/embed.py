"""Embed every task of a library on a pool of Ray actors (``t2v embed``, ``jobs/embed.py``).

Each :class:`EmbedWorker` actor loads the probe once, then reads the tasks it is given straight from the library
URI (the driver ships task ids only) and returns one result row per task. The driver (:func:`run_embed`) hands the
next task to whichever actor frees up, writes rows incrementally to ``<out>/embeddings.parquet``
(:class:`~t2v_ray.distributed.results.ResultStore`), logs one MLflow child run per task, and skips tasks whose ``ok`` row
has the same (probe hash, config hash, data hash) cache key.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from t2v_ray.config import Uri, Weights, absolute_uri, check_ranges, config_hash, ranged, to_dict
from t2v_ray.data.leases import LeaseBook
from t2v_ray.distributed.embed_worker import EmbedWorker, probe_identity, worker_threads
from t2v_ray.distributed.results import (
    STATUS_OK,
    ResultStore,
    error_row,
    is_cached,
    log_embedding_run,
)
from t2v_ray.task2vec import EmbedConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "embed_config.yaml"
SUMMARY_FILE = "embed_summary.json"


@dataclass(frozen=True)
class MlflowConfig:
    """Where runs are tracked.

    Attributes:
        tracking_uri: MLflow URI; None = ``MLFLOW_TRACKING_URI`` or ``sqlite:///./t2v-data/mlflow.db``.
        artifact_root: artifact root of new experiments; None = ``mlartifacts`` next to a sqlite database.
        enabled: False logs nothing.
        experiment: experiment name; None = ``t2v/<library>/embed``.
    """

    tracking_uri: Uri | None = None
    artifact_root: Uri | None = None
    enabled: bool = True
    experiment: str | None = None


@dataclass(frozen=True)
class EmbedJobConfig:
    """One ``t2v embed`` run. Saved, resolved, as ``<out>/embed_config.yaml`` and logged to MLflow.

    Attributes:
        library: library URI (folder, ``file://`` or ``s3://``).
        probe: probe name (``t2v_ray.probes.list_probes()``).
        weights: probe weights: None (random init, seeded by ``embed.seed``), ``default``, a torchvision name or
            a path/URI of a state dict.
        input_size: image side in pixels; None = the probe's default (resolved when actors start).
        out: output folder or ``s3://`` prefix for ``embeddings.parquet``.
        tasks: comma-separated globs on task_id; empty = all tasks.
        actors: actor processes, each holding one probe.
        cpus_per_actor: Ray CPUs per actor; also torch's thread count on CPU.
        gpus_per_actor: Ray GPUs per actor; > 0 embeds on the GPU.
        embed: everything that changes an embedding's value (hashed into the cache key).
        mlflow: tracking settings.
        max_restarts: times Ray restarts a dead actor process.
        max_task_retries: times Ray retries a task whose actor died.
        io_retries: attempts at reading a task when storage errors look transient (S3, network).
        io_backoff_seconds: first retry delay; doubles every attempt.
        flush_rows: results buffered before a part file is written (1: a driver crash loses only the tasks
            in flight; raise it when tasks take well under a second).
        flush_seconds: longest time a result stays buffered.
        address: Ray address; None = ``RAY_ADDRESS`` (job submit) or a new local instance.
        local_cpus: CPUs of a new local Ray instance; None = all cores.
        actor_start_timeout: seconds to wait for the first actor (a cluster may need to scale up).
        progress: show a progress bar.
        bad_rows: ``skip`` drops a task's undecodable images while they are at most ``max_bad_fraction`` of its
            rows (the count is stored as ``n_bad_rows``); ``fail`` makes any undecodable image the task's error.
        max_bad_fraction: see ``bad_rows``.
        lease_seconds: a task's lease (``<out>/embeddings.parquet.leases/``) lasts this long unless renewed;
            concurrent runs into one output skip tasks another live run holds, and take over stale leases.
    """

    library: Uri = ""
    probe: str = "efficientnet_lite0"
    weights: Weights | None = "default"
    input_size: int | None = ranged(None, 8, 4096)
    out: Uri = ""
    tasks: str = ""
    actors: int = ranged(2, 1)
    cpus_per_actor: float = ranged(1.0, 0.01)
    gpus_per_actor: float = ranged(0.0, 0.0)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    max_restarts: int = ranged(3, 0)
    max_task_retries: int = ranged(2, 0)
    io_retries: int = ranged(4, 1)
    io_backoff_seconds: float = ranged(0.5, 0.0)
    flush_rows: int = ranged(1, 1)
    flush_seconds: float = ranged(20.0, 0.0)
    address: str | None = None
    local_cpus: int | None = ranged(None, 1)
    actor_start_timeout: float = ranged(900.0, 1.0)
    progress: bool = True
    bad_rows: Literal["skip", "fail"] = "skip"
    max_bad_fraction: float = ranged(0.01, 0.0, 1.0)
    lease_seconds: float = ranged(600.0, 5.0)

    def validate(self) -> EmbedJobConfig:
        """Checked copy with local paths made absolute (workers do not share the driver's cwd).

        Raises:
            ValueError: settings no run can use.
        """
        if not self.library or not self.out:
            raise ValueError("both library and out must be set (e.g. --library URI --out URI)")
        check_ranges(self, "embed job")
        if self.actors < 1 or self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError("need actors >= 1, cpus_per_actor > 0 and gpus_per_actor >= 0")
        if self.io_retries < 1:
            raise ValueError("io_retries counts attempts and must be >= 1")
        return replace(self, library=absolute_uri(self.library), out=absolute_uri(self.out))


@dataclass(frozen=True)
class HashedSettings:
    """What the config hash of a row covers: the embedding settings and the resolved input size."""

    embed: EmbedConfig
    input_size: int


@dataclass
class EmbedSummary:
    """What a run did. ``ok``/``error`` count tasks computed by this run; ``skipped`` the cached ones.

    ``task_seconds`` is each computed task's time in its worker (reading, decoding, embedding) and
    ``embed_seconds`` the part spent in ``Task2Vec.embed``; the difference is the stage's own overhead.
    """

    out: str
    total: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    wall_seconds: float = 0.0
    startup_seconds: float = 0.0
    loop_seconds: float = 0.0
    task_seconds: list[float] = field(default_factory=list)
    embed_seconds: list[float] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    actor_restarts: int = 0
    aborted: str | None = None  # why the run stopped early (e.g. out of actor restarts); None = it did not
    bad_rows: int = 0  # undecodable rows dropped under bad_rows=skip, over the tasks this run computed
    shared: int = 0  # tasks another run into the same output computed while this one ran (counted in skipped)
    probe_hash: str = ""
    config_hash: str = ""
    parent_run_id: str | None = None

    @property
    def computed(self) -> int:
        return self.ok + self.error

    @property
    def mean_task_seconds(self) -> float:
        return sum(self.task_seconds) / len(self.task_seconds) if self.task_seconds else 0.0

    @property
    def tasks_per_minute(self) -> float:
        """Computed tasks per minute of the dispatch loop (from the first task sent to the last result)."""
        return 60.0 * self.computed / self.loop_seconds if self.loop_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (per-task seconds reduced to their mean)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("task_seconds", "embed_seconds", "errors")}
        d.update(computed=self.computed, mean_task_seconds=self.mean_task_seconds)
        d.update(tasks_per_minute=self.tasks_per_minute)
        d["errors"] = [{"task_id": t, "error": e} for t, e in self.errors]
        return d


@dataclass
class Progress:
    """Snapshot passed to a :func:`run_embed` callback after every event."""

    done: int
    total: int
    in_flight: dict[str, int]  # task_id -> pid of the actor process running it


def select_tasks(task_ids: list[str], patterns: str) -> list[str]:
    """Task ids matching any comma-separated glob in ``patterns`` (all when empty), in library order."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    if not globs:
        return list(task_ids)
    return [t for t in task_ids if any(fnmatch.fnmatchcase(t, g) for g in globs)]


def run_embed(cfg: EmbedJobConfig, callback: Callable[[Progress], None] | None = None) -> EmbedSummary:
    """Embed the selected tasks of ``cfg.library`` into ``cfg.out`` (see the module docstring).

    Args:
        cfg: the run's settings.
        callback: called with a :class:`Progress` after each finished task and poll interval (tests, UIs).

    Returns:
        Counts, timings and errors of the run.
    """
    from t2v_ray.data.library import TaskLibrary

    cfg = cfg.validate()
    t_start = time.perf_counter()
    specs = {s.task_id: s for s in TaskLibrary.open(cfg.library).tasks}
    selected = select_tasks(list(specs), cfg.tasks)
    if not selected:
        raise ValueError(f"no task of {cfg.library} matches {cfg.tasks!r}")
    store = ResultStore(cfg.out, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds)
    existing: dict[
        str, list[dict]
    ] = {}  # task_id -> its rows under every (probe, config, data) of this output
    for row in store.read_rows().values():
        existing.setdefault(row["task_id"], []).append(row)
    run = _Driver(cfg, store, specs, t_start)
    try:
        return run.execute(selected, existing, callback)
    finally:
        run.close()


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


class _Driver:
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
        self.leases = LeaseBook(store.parts_uri.removesuffix(".parts") + ".leases", cfg.lease_seconds)
        self._mlflow_failed = False

    # ------------------------------------------------------------------------------------ lifecycle
    def execute(self, selected: list[str], existing: dict, callback) -> EmbedSummary:
        if all(self._data_unchanged(existing.get(t, []), t) for t in selected):
            # Probably a rerun of a finished job: hash the probe here rather than start actors for nothing.
            self._set_key(*probe_identity(self.cfg))
        todo = self._todo(selected, existing)
        pool = self._start_pool() if todo else None
        self.tracker = create_tracker(self.cfg.mlflow, self.cfg.library)  # while the actors start
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
        storage.write_bytes_atomic(storage.join(self.cfg.out, CONFIG_FILE), text.encode())

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
        storage.write_bytes_atomic(storage.join(self.cfg.out, SUMMARY_FILE), text.encode())
        if self._mlflow_failed:
            return
        metrics = {k: float(summary[k]) for k in ("ok", "error", "skipped", "computed", "wall_seconds")}
        metrics.update(
            mean_task_seconds=summary["mean_task_seconds"], tasks_per_minute=summary["tasks_per_minute"]
        )
        self.tracker.log_metrics(parent_id, metrics)
        self.tracker.log_artifacts(parent_id, {CONFIG_FILE: to_dict(self.resolved), SUMMARY_FILE: summary})


# ---------------------------------------------------------------------------------------------- MLflow
def create_tracker(mcfg: MlflowConfig, library: str) -> Any:
    """The run's tracker: experiment ``t2v/<library>/embed``; sqlite artifacts beside the database (pitfall 12)."""
    from t2v_ray.track import Tracker, default_artifact_root, default_tracking_uri, experiment_name
    from t2v_ray.track.naming import sqlite_path

    uri = mcfg.tracking_uri or default_tracking_uri("t2v-data")
    root = mcfg.artifact_root
    db = sqlite_path(uri) if mcfg.enabled else None
    if root is None and db is not None:
        root = default_artifact_root(db.parent)
    name = mcfg.experiment or experiment_name(library, "embed")
    return Tracker.create(uri, name, artifact_root=root, enabled=mcfg.enabled)


def _first_line(err: BaseException | None) -> str:
    text = str(err).strip() if err is not None else ""
    return text.splitlines()[0][:300] if text else "unknown"
