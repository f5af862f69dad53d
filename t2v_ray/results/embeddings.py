"""``embeddings.parquet``: its schema, its writer (a :class:`~t2v_ray.results.store.ResultStore`) and the one reader.

Every reader (reports, ``t2v select``, the pipeline's select cache key, ``t2v select rank``) goes through
:func:`read_embedding_table`, which merges the compacted file with the part files of a running or interrupted
embed (``embeddings.parquet.parts/``): rows an embed has finished are never missed because it was not compacted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from t2v_ray.results.layout import EMBEDDINGS_FILE
from t2v_ray.results.store import STATUS_ERROR, STATUS_OK, ResultStore

log = logging.getLogger(__name__)

# DESIGN.md "Embeddings and results", plus what later stages need: the trivial embedding t0 and the domain
# embedding (mean probe feature) per task, and provenance (CPU time, worker, finish time).
EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("probe", pa.string()),
        pa.field("probe_hash", pa.string()),
        pa.field("method", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("data_hash", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("layer_offsets", pa.list_(pa.int64())),
        pa.field("norm", pa.float64()),
        pa.field("head_accuracy", pa.float64()),
        pa.field("n_samples", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("n_classes", pa.int64()),
        pa.field("trivial", pa.list_(pa.float32())),
        pa.field("domain", pa.list_(pa.float32())),
        pa.field("cpu_seconds", pa.float64()),
        pa.field("worker", pa.string()),
        pa.field("finished_at", pa.timestamp("ms", tz="UTC")),
        pa.field("n_bad_rows", pa.int64()),  # undecodable rows dropped under bad_rows=skip
    ]
)
CACHE_KEY = ("probe_hash", "config_hash", "data_hash")
# Runs with different probes, configs or data coexist in one output: a row is one task under one of them.
EMBEDDING_KEY = ("task_id", *CACHE_KEY)


def embedding_store(out_uri: str, flush_rows: int = 8, flush_seconds: float = 20.0) -> ResultStore:
    """The writer of ``<out_uri>/embeddings.parquet`` (buffered part files, compacted at the end of a run)."""
    return ResultStore(out_uri, EMBEDDINGS_FILE, EMBEDDING_SCHEMA, EMBEDDING_KEY, flush_rows, flush_seconds)


def read_embedding_table(file_uri: str) -> pa.Table:
    """Every stored row of the embeddings file at ``file_uri`` merged with its uncompacted parts, newest per task.

    Raises:
        FileNotFoundError: neither the file nor any part file exists.
    """
    store = ResultStore.at(file_uri, EMBEDDING_SCHEMA, EMBEDDING_KEY)
    table = store.read()
    if table.num_rows == 0 and not store.part_names():
        from t2v_ray.data import storage

        if not storage.exists(file_uri):
            raise FileNotFoundError(f"{file_uri}: no embeddings (run `t2v embed` first)")
    return table


def embeddings_fingerprint(file_uri: str) -> str:
    """Hash of the stored rows, compacted or still in parts (part of the pipeline's select cache key)."""
    return ResultStore.at(file_uri, EMBEDDING_SCHEMA, EMBEDDING_KEY).fingerprint()


def is_cached(rows: Iterable[Mapping[str, Any]], key: Mapping[str, str]) -> bool:
    """True when one of a task's ``rows`` is ``ok`` and was computed with the same probe, config and data hashes."""
    return any(r.get("status") == STATUS_OK and all(r.get(k) == key[k] for k in CACHE_KEY) for r in rows)


def embedding_row(task_id: str, emb: Any) -> dict[str, Any]:
    """The result columns of an ``ok`` row from a :class:`~t2v_ray.core.embedding.TaskEmbedding`."""
    return {
        "task_id": task_id,
        "status": STATUS_OK,
        "error": None,
        "embedding": np.asarray(emb.vector, dtype=np.float32),
        "layer_offsets": [int(o) for o in emb.layer_offsets],
        "norm": emb.norm,
        "head_accuracy": emb.meta["head_accuracy"],
        "n_samples": emb.meta["n_samples"],
        "n_classes": emb.meta["n_classes"],
        "trivial": np.asarray(emb.meta["trivial"], dtype=np.float32),
        "domain": np.asarray(emb.meta["domain"], dtype=np.float32),
    }


def stored_probe_hashes(file_uri: str, probe: str) -> set[str]:
    """Weights hashes of the probe ``probe`` in the ``ok`` rows at ``file_uri``."""
    rows = read_embedding_table(file_uri).select(["status", "probe", "probe_hash"]).to_pylist()
    return {
        r["probe_hash"] for r in rows if r["status"] == STATUS_OK and r["probe"] == probe and r["probe_hash"]
    }


def error_row(task_id: str, message: str) -> dict[str, Any]:
    """An ``error`` row; ``message`` should name the task (and shard/row when known)."""
    return {"task_id": task_id, "status": STATUS_ERROR, "error": message}


@dataclass
class EmbeddingSet:
    """One consistent set of task embeddings (a single probe, method and config).

    Attributes:
        task_ids: task ids, one per row.
        vectors: (n, d) TASK2VEC embeddings.
        trivial: (d,) trivial embedding t0 (mean of the stored per-run t0 vectors).
        domain: (n, p) domain embeddings (mean probe features), or None when not stored.
        probe, method, config_hash: which embedding runs these are.
    """

    task_ids: list[str]
    vectors: np.ndarray
    trivial: np.ndarray
    domain: np.ndarray | None
    probe: str = ""
    method: str = ""
    config_hash: str = ""

    @property
    def norms(self) -> np.ndarray:
        """L1 norm per task (paper Fig. 2 right: the task-complexity proxy)."""
        return np.abs(self.vectors).sum(axis=1)

    def rows(self, task_ids: list[str]) -> np.ndarray:
        """Indices of ``task_ids`` in this set (KeyError for an unknown id)."""
        index = {t: i for i, t in enumerate(self.task_ids)}
        return np.array([index[t] for t in task_ids], dtype=int)


def _stack(values: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in values])


def _choose_run(ok: pd.DataFrame) -> pd.DataFrame:
    """Rows of one (probe, method, config_hash) group: the most complete one (most tasks), the newest of those
    (latest ``finished_at``); embeddings of different configs never mix. Says which when there was a choice."""
    keys = ["probe", "method", "config_hash"]
    groups = ok.groupby(keys, dropna=False, sort=False)
    stats = pd.DataFrame({"tasks": groups["task_id"].nunique(), "newest": groups["finished_at"].max()})
    stats = stats.sort_values(["tasks", "newest"], ascending=False, kind="stable", na_position="last")
    best = stats.index[0]
    if len(stats) > 1:
        log.warning(
            "embeddings hold %d runs; using %s (%d tasks, newest of the most complete)",
            len(stats),
            ", ".join(f"{k}={v}" for k, v in zip(keys, best, strict=True)),
            stats["tasks"].iloc[0],
        )
    # A column a file did not have is null after conform(): null matches null.
    mask = np.logical_and.reduce(
        [(ok[k] == v) | (ok[k].isna() & pd.isna(v)) for k, v in zip(keys, best, strict=True)]
    )
    return ok[mask]


def load_embeddings(
    uri: str, probe: str | None = None, method: str | None = None, config_hash: str | None = None
) -> EmbeddingSet:
    """``ok`` rows of one run of the embeddings at ``uri`` (with uncompacted parts), one per task, sorted by id."""
    df = read_embedding_table(uri).to_pandas()
    ok = df[df["status"] == STATUS_OK]
    for key, value in (("probe", probe), ("method", method), ("config_hash", config_hash)):
        if value is not None:
            ok = ok[ok[key] == value]
    if ok.empty:
        raise ValueError(f"{uri}: no embeddings with status 'ok' (filters probe={probe}, method={method})")
    # One row per task: the newest (e.g. after the task's data changed); rows without a time count as oldest.
    ok = ok.sort_values("finished_at", kind="stable", na_position="first")
    ok = _choose_run(ok).drop_duplicates("task_id", keep="last").sort_values("task_id")
    vectors = _stack(ok["embedding"])
    if "trivial" in ok.columns and ok["trivial"].notna().all():
        trivial = _stack(ok["trivial"]).mean(axis=0)
    else:
        # Without t0, d_sym(F, 0) = 1 for every F: d_asym degenerates to d_sym minus a constant.
        log.warning("%s has no 'trivial' column: using t0 = 0 (asymmetric = symmetric Task2Vec)", uri)
        trivial = np.zeros(vectors.shape[1])
    domain = None
    if "domain" in ok.columns and ok["domain"].notna().all():
        domain = _stack(ok["domain"])
    first = ok.iloc[0]
    return EmbeddingSet(
        task_ids=[str(t) for t in ok["task_id"]],
        vectors=vectors,
        trivial=trivial,
        domain=domain,
        probe=str(first.get("probe") or ""),
        method=str(first.get("method") or ""),
        config_hash=str(first.get("config_hash") or ""),
    )
