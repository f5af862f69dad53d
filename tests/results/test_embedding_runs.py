"""An output holding several embedding configs: the report uses one config, the newest complete one."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np

from t2v_ray.results.embeddings import EMBEDDING_SCHEMA, load_embeddings
from t2v_ray.results.store import rows_to_table


def _row(task: str, config: str, day: int, value: float) -> dict:
    return {
        "task_id": task,
        "status": "ok",
        "probe": "small_cnn",
        "method": "montecarlo",
        "probe_hash": "p",
        "config_hash": config,
        "data_hash": "d",
        "embedding": np.full(3, value, dtype=np.float32),
        "trivial": np.ones(3, dtype=np.float32),
        "finished_at": datetime(2026, 1, day, tzinfo=UTC),
    }


def test_the_newest_of_the_most_complete_configs_is_used_and_named(tmp_path, caplog):
    import pyarrow.parquet as pq

    rows = [_row(t, "old", 1, 1.0) for t in "abc"]  # complete, older
    rows += [_row(t, "new", 2, 2.0) for t in "abc"]  # complete, newer: this one
    rows += [_row(t, "partial", 3, 3.0) for t in "ab"]  # newest but incomplete
    uri = tmp_path / "embeddings.parquet"
    pq.write_table(rows_to_table(rows, EMBEDDING_SCHEMA), uri)
    with caplog.at_level(logging.WARNING):
        emb = load_embeddings(str(uri))
    assert emb.config_hash == "new" and emb.task_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(emb.vectors, np.full((3, 3), 2.0))
    assert "config_hash=new" in caplog.text and "3 runs" in caplog.text
