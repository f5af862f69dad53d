"""The crash-safe result store behind embeddings.parquet: part files, compaction, newest row per key, cache key."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2v_ray.results.embeddings import EMBEDDING_SCHEMA, embedding_store, is_cached
from t2v_ray.results.store import latest_per_key, rows_to_table


def _row(task_id: str, status: str = "ok", **kw) -> dict:
    base = {"task_id": task_id, "status": status, "probe_hash": "p", "config_hash": "c", "data_hash": "d"}
    return {**base, "embedding": np.arange(3, dtype=np.float32), **kw}


def _key(task_id: str, config: str = "c") -> tuple:
    return (task_id, "p", config, "d")  # (task_id, probe_hash, config_hash, data_hash)


def test_store_flushes_parts_by_row_count_and_merges_newest_per_key(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=2, flush_seconds=1e9)
    assert store.add(_row("a", status="error", error="first try")) is False  # buffered
    assert store.add(_row("b")) is True  # second row fills the buffer -> one part file
    store.add(_row("a"))  # a newer ok row replaces the older error row of the same key
    store.flush()
    assert len(store.part_names()) == 2
    rows = embedding_store(str(tmp_path)).read_rows()
    assert rows[_key("a")]["status"] == "ok" and rows[_key("b")]["status"] == "ok"
    assert rows[_key("b")]["embedding"] == [0.0, 1.0, 2.0]


def test_an_error_row_never_replaces_an_ok_row_and_configs_coexist(tmp_path: Path):
    # Before rows were keyed by task only: a second run with another config (or a failed retry) into the same
    # output replaced the task's good embedding with its error row.
    store = embedding_store(str(tmp_path), flush_rows=1)
    store.add(_row("a", norm=1.0))
    store.compact()
    store.add(_row("a", status="error", error="IndexError"))  # same key, failed: the ok row stays
    store.add(_row("a", config_hash="c2", norm=2.0))  # another config: a row of its own
    store.add(_row("a", config_hash="c3", status="error", error="bad"))
    rows = embedding_store(str(tmp_path)).read_rows()
    assert rows[_key("a")]["status"] == "ok" and rows[_key("a")]["norm"] == 1.0
    assert rows[_key("a", "c2")]["norm"] == 2.0 and rows[_key("a", "c3")]["status"] == "error"
    assert len(store.compact()) == 3


def test_compact_writes_main_file_removes_parts_and_keeps_rows(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=1)
    for t in "abc":
        store.add(_row(t))
    table = store.compact()
    assert store.part_names() == []
    assert (tmp_path / "embeddings.parquet").is_file()
    assert sorted(table.column("task_id").to_pylist()) == ["a", "b", "c"]
    # A later part overrides the compacted row with the same key.
    store.add(_row("b", norm=5.0))
    assert embedding_store(str(tmp_path)).read_rows()[_key("b")]["norm"] == 5.0


def test_store_ignores_temporary_files_left_by_an_interrupted_write(tmp_path: Path):
    store = embedding_store(str(tmp_path), flush_rows=1)
    store.add(_row("a"))
    # What a crash inside write_bytes_atomic leaves behind: a hidden, half-written temporary sibling.
    (Path(store.parts_uri) / ".part-9.parquet.tmp-123-abcd").write_bytes(b"PAR1 torn")
    assert list(embedding_store(str(tmp_path)).read_rows()) == [_key("a")]


def test_latest_per_key_keeps_last_occurrence():
    t1 = rows_to_table([_row("a", norm=1.0), _row("b", norm=2.0)], EMBEDDING_SCHEMA)
    t2 = rows_to_table([_row("a", norm=3.0)], EMBEDDING_SCHEMA)
    merged = latest_per_key([t1, t2], ["task_id"]).to_pylist()
    assert {r["task_id"]: r["norm"] for r in merged} == {"a": 3.0, "b": 2.0}


def test_cache_hit_needs_ok_status_and_all_three_hashes():
    key = {"probe_hash": "p", "config_hash": "c", "data_hash": "d"}
    assert is_cached([_row("a")], key)
    assert is_cached([_row("a", config_hash="other"), _row("a")], key)  # one matching ok row of several
    assert not is_cached([_row("a", status="error")], key)
    assert not is_cached([], key)
    for k in key:
        assert not is_cached([_row("a")], {**key, k: "other"})
