"""The embed stage (``t2v embed``, ``jobs/embed.py``): embed every task of a library on a pool of Ray actors.

Each :class:`~t2v_ray.stages.embed_worker.EmbedWorker` actor loads the probe once, then reads the tasks it is given
straight from the library URI (the driver ships task ids only) and returns one result row per task. The driver
(:mod:`t2v_ray.stages.embed_driver`) hands the next task to whichever actor frees up, writes rows incrementally to
``<out>/embeddings.parquet`` (:func:`~t2v_ray.results.embeddings.embedding_store`), logs one MLflow child run per
task, and skips tasks whose ``ok`` row has the same (probe hash, config hash, data hash) cache key.

This module holds only the config, the summary and :func:`run_embed`: it imports neither torch nor Ray.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from t2v_ray.config import Uri, Weights, absolute_uri, check_ranges, ranged
from t2v_ray.core.settings import EmbedConfig
from t2v_ray.track.settings import TrackingSettings


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
        tracking: MLflow (experiment default ``t2v/<library>/embed``).
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
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
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

    def table(self) -> Any:
        """A rich table: counts, times and the first 50 errors."""
        from rich.table import Table

        table = Table(title=f"t2v embed -> {self.out}", show_header=True)
        table.add_column("", style="bold")
        table.add_column("value", justify="right")
        rows = [
            ("ok", self.ok),
            ("error", self.error),
            ("skipped (cached)", self.skipped),
            ("total", self.total),
            ("wall time", f"{self.wall_seconds:.1f} s"),
            ("startup", f"{self.startup_seconds:.1f} s"),
            ("dispatch loop", f"{self.loop_seconds:.1f} s"),
            ("per task (mean)", f"{self.mean_task_seconds:.2f} s"),
            ("tasks / minute", f"{self.tasks_per_minute:.1f}"),
            ("actor restarts", self.actor_restarts),
            ("bad rows skipped", self.bad_rows),
        ]
        for name, value in rows:
            table.add_row(name, str(value))
        for task_id, message in self.errors[:50]:
            table.add_row(f"[red]error[/red] {task_id}", message[:200])
        if len(self.errors) > 50:
            table.add_row("...", f"{len(self.errors) - 50} more errors in embeddings.parquet")
        return table


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
    from t2v_ray.results.embeddings import embedding_store
    from t2v_ray.stages.embed_driver import Driver

    cfg = cfg.validate()
    t_start = time.perf_counter()
    specs = {s.task_id: s for s in TaskLibrary.open(cfg.library).tasks}
    selected = select_tasks(list(specs), cfg.tasks)
    if not selected:
        raise ValueError(f"no task of {cfg.library} matches {cfg.tasks!r}")
    store = embedding_store(cfg.out, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds)
    existing: dict[
        str, list[dict]
    ] = {}  # task_id -> its rows under every (probe, config, data) of this output
    for row in store.read_rows().values():
        existing.setdefault(row["task_id"], []).append(row)
    run = Driver(cfg, store, specs, t_start)
    try:
        return run.execute(selected, existing, callback)
    finally:
        run.close()


def exit_code(summary: EmbedSummary, strict: bool) -> int:
    """0 when the run finished; 1 when it stopped early (out of actor restarts); 2 when ``strict`` and some
    task ended in ``error``."""
    if summary.aborted:
        return 1
    return 2 if strict and summary.error else 0
