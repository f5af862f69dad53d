"""The crash-safe result store behind embeddings.parquet: part files, compaction, newest row per key, cache key."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2v_ray.results.embeddings import EMBEDDING_SCHEMA, embedding_store, is_cached
from t2v_ray.results.store import latest_per_key, rows_to_table


def _row(task_id: str, status: str = "ok", **kw) -> dict:
    base = {"task_id": task_id, "status": status, "probe_hash": "p", "config_hash": "c", "data_hash": "d"}
    return {**base, "embedding": np.arange(3, dtype=np.float32), **kw}


def test_store_flushes_parts_by_row_count_and_merges_newest_per_key(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=2, flush_seconds=1e9)
    assert store.add(_row("a")) is False  # buffered
    assert store.add(_row("b")) is True  # second row fills the buffer -> one part file
    store.add(_row("a", status="error", error="boom"))
    store.flush()
    assert len(store.part_names()) == 2
    rows = embedding_store(str(tmp_path)).read_rows()
    assert rows[("a",)]["status"] == "error" and rows[("b",)]["status"] == "ok"
    assert rows[("b",)]["embedding"] == [0.0, 1.0, 2.0]


def test_compact_writes_main_file_removes_parts_and_keeps_rows(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=1)
    for t in "abc":
        store.add(_row(t))
    table = store.compact()
    assert store.part_names() == []
    assert (tmp_path / "embeddings.parquet").is_file()
    assert sorted(table.column("task_id").to_pylist()) == ["a", "b", "c"]
    # A later part overrides the compacted row with the same key.
    store.add(_row("b", status="error", error="x"))
    assert embedding_store(str(tmp_path)).read_rows()[("b",)]["status"] == "error"


def test_store_ignores_temporary_files_left_by_an_interrupted_write(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=1)
    store.add(_row("a"))
    # What a crash inside write_bytes_atomic leaves behind: a hidden, half-written temporary sibling.
    (Path(store.parts_uri) / ".part-9.parquet.tmp-123-abcd").write_bytes(b"PAR1 torn")
    assert list(embedding_store(str(tmp_path)).read_rows()) == [("a",)]


def test_latest_per_key_keeps_last_occurrence():
    t1 = rows_to_table([_row("a", norm=1.0), _row("b", norm=2.0)], EMBEDDING_SCHEMA)
    t2 = rows_to_table([_row("a", norm=3.0)], EMBEDDING_SCHEMA)
    merged = latest_per_key([t1, t2], ["task_id"]).to_pylist()
    assert {r["task_id"]: r["norm"] for r in merged} == {"a": 3.0, "b": 2.0}


def test_cache_hit_needs_ok_status_and_all_three_hashes():
    key = {"probe_hash": "p", "config_hash": "c", "data_hash": "d"}
    assert is_cached(_row("a"), key)
    assert not is_cached(_row("a", status="error"), key)
    assert not is_cached(None, key)
    for k in key:
        assert not is_cached(_row("a"), {**key, k: "other"})
