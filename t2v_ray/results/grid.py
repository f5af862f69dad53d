"""``grid.parquet`` and the per-pair result records it is assembled from: schema, writer and reader.

Pair records: ``<root>/grid/pairs/<expert_id>/<task id>.json``, one per (expert, task) pair, written by the trial
that computed it (trials never share a file, so nothing races); ``grid.parquet`` is assembled from them by the
driver (:func:`collect_grid`) and read by the select stage (:func:`load_grid`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from t2v_ray.data import storage
from t2v_ray.results.layout import PAIRS_DIR
from t2v_ray.results.store import STATUS_OK, rows_to_table

GRID_SCHEMA_FIELDS = [
    ("expert_id", "string"), ("task_id", "string"), ("probe", "string"), ("test_error", "float64"),
    ("test_error_se", "float64"), ("train_error", "float64"), ("epochs", "int64"), ("seconds", "float64"), ("status", "string"),
    ("error", "string"), ("logme", "float64"), ("leep", "float64"), ("nce", "float64"), ("h_score", "float64"),
    ("is_source", "bool_"), ("n_train", "int64"), ("n_test", "int64"), ("n_classes", "int64"),
    ("feature_dim", "int64"), ("features_cached", "bool_"), ("extract_seconds", "float64"),
    ("head_seconds", "float64"), ("score_seconds", "float64"), ("features_uri", "string"),
    ("expert_hash", "string"), ("task_hash", "string"), ("config_hash", "string"), ("mlflow_run_id", "string"),
    ("attempt", "string"), ("finished_at", "string"),
]  # fmt: skip


def grid_schema() -> Any:
    """Arrow schema of ``grid.parquet``."""
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t in GRID_SCHEMA_FIELDS])


def pair_uri(out_uri: str, expert_id: str, task_id: str) -> str:
    """Where one pair's result record lives (task ids made folder-safe)."""
    from t2v_ray.results.experts import expert_id_for

    return storage.join(out_uri, PAIRS_DIR, expert_id, f"{expert_id_for(task_id)}.json")


def read_pair(out_uri: str, expert_id: str, task_id: str) -> dict | None:
    """The pair's record, or None when it has none (or an unreadable one)."""
    uri = pair_uri(out_uri, expert_id, task_id)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except ValueError:  # torn or foreign: the pair simply runs again
        return None


def write_pair(out_uri: str, row: dict) -> None:
    """Atomically (re)write the pair's record; NaN stays NaN (JSON extension, read back by ``json.loads``)."""
    data = json.dumps(row, default=str, allow_nan=True).encode()
    storage.write_bytes_atomic(pair_uri(out_uri, row["expert_id"], row["task_id"]), data)


def read_pairs(out_uri: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Recorded results of ``pairs`` (read concurrently: one small object per pair on S3)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = pool.map(lambda p: read_pair(out_uri, *p), pairs)
    return {p: r for p, r in zip(pairs, rows, strict=True) if r is not None}


def collect_grid(out_uri: str, pairs: Sequence[tuple[str, str]]) -> Any:
    """``grid.parquet`` content: exactly one row per pair, in plan order; a pair without a record is ``missing``."""
    found = read_pairs(out_uri, pairs)
    missing = {"status": "missing", "error": "no result recorded (run the grid again to compute it)"}
    rows = [_with_se(found.get(p)) or {"expert_id": p[0], "task_id": p[1], **missing} for p in pairs]
    return rows_to_table(rows, grid_schema())


def _with_se(row: dict | None) -> dict | None:
    """``row`` with ``test_error_se`` filled in from ``test_error`` and ``n_test`` (records written before the
    column existed)."""
    if row is None or row.get("test_error_se") is not None or row.get("n_test") is None:
        return row
    from t2v_ray.core.selection import binomial_se

    return {**row, "test_error_se": float(binomial_se(row.get("test_error", math.nan), row["n_test"]))}


def load_grid(uri: str) -> pd.DataFrame:
    """Read ``grid.parquet``, keeping rows with status ``ok`` and a finite test error."""
    df = storage.read_parquet(uri).to_pandas()
    if "status" in df.columns:
        df = df[df["status"] == STATUS_OK]
    df = df[np.isfinite(df["test_error"].astype(float))]
    return df.assign(task_id=df["task_id"].astype(str), expert_id=df["expert_id"].astype(str))


def grid_matrix(grid: pd.DataFrame, task_ids: list[str], expert_ids: list[str], column: str) -> np.ndarray:
    """(n_tasks, n_experts) values of ``column`` (mean over repeated cells); NaN where the grid has no value."""
    table = grid.pivot_table(
        index="task_id", columns="expert_id", values=column, aggfunc="mean", dropna=False
    )
    return table.reindex(index=task_ids, columns=expert_ids).to_numpy(dtype=np.float64)
