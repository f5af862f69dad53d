"""Embedding rows and results roots for the reader and select-key tests, including an interrupted embed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2v_ray.results.embeddings import embedding_store


def ok_row(task_id: str, value: float) -> dict:
    """An ``ok`` row of one run whose 4-entry embedding is ``value`` everywhere."""
    return {
        "task_id": task_id,
        "status": "ok",
        "probe": "p",
        "method": "montecarlo",
        "config_hash": "c",
        "embedding": np.full(4, value, dtype=np.float32),
        "trivial": np.ones(4, dtype=np.float32),
    }


def write_results_root(res: Path) -> Path:
    """A results root with tasks a and b compacted into embeddings.parquet, and placeholder grid/experts files."""
    store = embedding_store(str(res), flush_rows=1)
    store.add(ok_row("a", 1.0))
    store.add(ok_row("b", 2.0))
    store.compact()
    for name in ("grid.parquet", "experts.parquet"):
        (res / name).write_bytes(name.encode())
    return res


def interrupt_embed(res: Path, *rows: dict) -> None:
    """What an embed killed before its final compaction leaves: part files beside embeddings.parquet."""
    store = embedding_store(str(res), flush_rows=1)
    for row in rows:
        store.add(row)  # flush_rows=1: one part file per finished task, never compacted
    assert store.part_names()
