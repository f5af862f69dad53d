"""The select stage's inputs: its cache key and its reader see every stored embedding, compacted or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from t2v_ray.results.embeddings import embedding_store, load_embeddings
from t2v_ray.stages.select import SelectConfig, cached_select, input_key, store_key


def _row(task_id: str, value: float) -> dict:
    return {
        "task_id": task_id,
        "status": "ok",
        "probe": "p",
        "method": "montecarlo",
        "config_hash": "c",
        "embedding": np.full(4, value, dtype=np.float32),
        "trivial": np.ones(4, dtype=np.float32),
    }


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    store = embedding_store(str(res), flush_rows=1)
    store.add(_row("a", 1.0))
    store.add(_row("b", 2.0))
    store.compact()
    for name in ("grid.parquet", "experts.parquet"):
        (res / name).write_bytes(name.encode())
    return res


def interrupt_embed(res, *rows: dict) -> None:
    """What an embed killed before its final compaction leaves: part files beside embeddings.parquet."""
    store = embedding_store(str(res), flush_rows=1)
    for row in rows:
        store.add(row)  # flush_rows=1: one part file per finished task, never compacted
    assert store.part_names()


def test_select_cache_hits_only_for_identical_inputs(results):
    out = results / "select" / "taxonomy"
    out.mkdir(parents=True)
    pd.DataFrame({"selector": ["Optimal", "Chance"], "mean_error": [0.1, 0.2]}).to_csv(
        out / "table1.csv", index=False
    )
    scfg = SelectConfig(results=str(results), protocol="taxonomy")
    key = input_key(scfg)
    assert cached_select(scfg, key) is None  # never evaluated with these inputs
    store_key(scfg, key)
    hit = cached_select(scfg, key)
    assert list(hit.table1["selector"]) == ["Optimal", "Chance"] and hit.written["table1.csv"].endswith(
        "table1.csv"
    )
    (results / "grid.parquet").write_bytes(b"new ground truth")  # a changed grid must re-run the evaluation
    assert input_key(scfg) != key
    assert input_key(SelectConfig(results=str(results), protocol="taxonomy", n_boot=10)) != input_key(scfg)


def test_select_key_changes_with_rows_of_an_interrupted_embed(results):
    scfg = SelectConfig(results=str(results), protocol="taxonomy")
    before = input_key(scfg)
    interrupt_embed(results, _row("c", 3.0))
    interrupted = input_key(scfg)
    assert interrupted != before  # the new task's row is only in a part file
    embedding_store(str(results)).compact()
    assert input_key(scfg) == interrupted  # compacting the same rows is no new input


def test_report_reader_sees_rows_of_an_interrupted_embed(results):
    interrupt_embed(results, _row("c", 3.0), _row("a", 5.0))
    emb = load_embeddings(str(results / "embeddings.parquet"))
    assert emb.task_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(emb.vectors[:, 0], [5.0, 2.0, 3.0])  # the newer row of "a" wins


def test_reader_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="embeddings.parquet"):
        load_embeddings(str(tmp_path / "embeddings.parquet"))
