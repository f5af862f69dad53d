"""The embedding actor: one probe and one library handle per process, one task per call.

Runs on Ray workers (the driver wraps :class:`EmbedWorker` with ``ray.remote``), so nothing here imports Ray,
MLflow or torch at module level. Any failure of one task becomes that task's ``error`` row; only a dead process
is left to Ray's actor restarts and task retries.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from t2v_ray.results.embeddings import embedding_row, error_row

if TYPE_CHECKING:
    from t2v_ray.stages.embed import EmbedJobConfig

log = logging.getLogger(__name__)


def build_probe(cfg: EmbedJobConfig) -> Any:
    """The run's probe; random-init probes are seeded by ``embed.seed`` so every process builds the same one."""
    import torch

    from t2v_ray.probes import get_probe

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.embed.seed)
        return get_probe(cfg.probe, weights=cfg.weights, input_size=cfg.input_size)


def build_embedder(cfg: EmbedJobConfig, device: str | None = None) -> tuple[Any, Any]:
    """``(probe, Task2Vec)`` as every embed worker builds them (also ``t2v select rank`` for a new task)."""
    from t2v_ray.task2vec import Task2Vec

    probe = build_probe(cfg)
    return probe, Task2Vec(probe, config=cfg.embed, device=device)


def probe_identity(cfg: EmbedJobConfig) -> tuple[str, int]:
    """``(probe hash, resolved input size)`` of the run's probe, built in this process."""
    probe = build_probe(cfg)
    return probe.state_hash(), probe.input_size


def worker_threads(cpus: float) -> int:
    """torch threads for an actor owning ``cpus`` Ray CPUs (STACK pitfall 21: never more than it owns)."""
    return max(1, int(cpus))


class EmbedWorker:
    """Actor body: loads the probe and opens the library once, then embeds one task per :meth:`embed` call."""

    def __init__(self, cfg: EmbedJobConfig, threads: int, use_gpu: bool):
        import torch

        from t2v_ray.data.library import TaskLibrary
        from t2v_ray.distributed.ray_utils import retry_io

        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("gpus_per_actor > 0 but this actor sees no CUDA device")
        if not use_gpu:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.probe, self.t2v = build_embedder(cfg, "cuda" if use_gpu else "cpu")
        self.probe_hash = self.probe.state_hash()
        self.library = retry_io(lambda: TaskLibrary.open(cfg.library), cfg.library, cfg.io_retries, 1.0)

    def describe(self) -> dict[str, Any]:
        """Identity of this actor process: pid, host, probe hash, resolved input size, device."""
        import os
        import socket

        import torch

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "probe_hash": self.probe_hash,
            "input_size": self.probe.input_size,
            "device": str(self.t2v.device),
            "threads": torch.get_num_threads(),
        }

    def embed(self, task_id: str) -> dict[str, Any]:
        """Read ``task_id``'s training split and embed it; failures become an ``error`` row naming the task."""
        import os
        import socket
        from datetime import UTC, datetime

        from t2v_ray.data.library import LibraryError
        from t2v_ray.distributed.ray_utils import TransientIOError

        t0, c0 = time.perf_counter(), time.process_time()
        try:
            row = self._embed(task_id)
        except Exception as err:  # any failure of one task is that task's row, never the end of the run
            # Bad data is expected at scale and named in the row; a traceback only helps for the unexpected.
            expected = isinstance(err, ValueError | LibraryError | TransientIOError)
            log.warning("task %s failed: %s", task_id, err, exc_info=not expected)
            row = error_row(task_id, describe_error(task_id, err))
        row.update(
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0,  # well below `seconds`: waiting on I/O, a GPU or other load
            worker=f"{socket.gethostname()}:{os.getpid()}",
            finished_at=datetime.now(UTC),
        )
        return row

    def _embed(self, task_id: str) -> dict[str, Any]:
        from t2v_ray.data.dataset import TaskDataset
        from t2v_ray.data.screening import screen_rows
        from t2v_ray.distributed.ray_utils import retry_io

        cfg = self.cfg
        read = lambda: self.library.read_task(task_id, split="train", origin=True)  # noqa: E731
        table = retry_io(read, f"reading task {task_id!r}", cfg.io_retries, cfg.io_backoff_seconds)
        screened = screen_rows(task_id, table, cfg.bad_rows, cfg.max_bad_fraction)
        for line in screened.bad:
            log.warning("skipped %s", line)
        emb = self.t2v.embed(TaskDataset(screened.table, self.probe.transform, split="train"))
        row = {**embedding_row(task_id, emb), "embed_seconds": emb.meta["seconds"]}
        return {**row, "n_bad_rows": len(screened.bad)}


def describe_error(task_id: str, err: BaseException) -> str:
    """A one-line reason that names the task (TaskDataError already names task, shard and row)."""
    text = str(err) or type(err).__name__
    if f"task {task_id!r}" in text:
        return text
    kind = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
    return f"task {task_id!r}: {kind}{text}"
