"""The select stage's inputs: its cache key and its reader see every stored embedding, compacted or not."""

from __future__ import annotations

import pandas as pd
import pytest

from t2v_ray.results.embeddings import embedding_store
from t2v_ray.stages.select import SelectConfig, cached_select, input_key, store_key
from tests.results.rows import interrupt_embed, ok_row, write_results_root


@pytest.fixture
def results(tmp_path):
    return write_results_root(tmp_path / "results")


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
    interrupt_embed(results, ok_row("c", 3.0))
    interrupted = input_key(scfg)
    assert interrupted != before  # the new task's row is only in a part file
    embedding_store(str(results)).compact()
    assert input_key(scfg) == interrupted  # compacting the same rows is no new input


def test_report_sees_the_rows_of_an_interrupted_embed(synth, tmp_path):
    import shutil

    from t2v_ray.data import storage
    from t2v_ray.report.evaluate import evaluate_selection

    root = tmp_path / "results"
    shutil.copytree(synth.root, root)
    first = storage.read_parquet(str(root / "embeddings.parquet")).to_pylist()[0]
    interrupt_embed(root, {**first, "task_id": "late/task"})  # embedded, but the run died before compacting
    _, details = evaluate_selection(
        str(root / "embeddings.parquet"), str(root / "grid.parquet"), str(root / "experts.parquet"),
        str(root / "library"), protocol="taxonomy", n_boot=10, model2vec=False,
    )  # fmt: skip
    assert "late/task" in details.embeddings.task_ids
