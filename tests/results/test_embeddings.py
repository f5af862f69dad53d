"""The one embeddings reader: it merges the part files of an interrupted embed with the compacted file."""

from __future__ import annotations

import numpy as np
import pytest

from t2v_ray.results.embeddings import load_embeddings
from tests.results.rows import interrupt_embed, ok_row, write_results_root


@pytest.fixture
def results(tmp_path):
    return write_results_root(tmp_path / "results")


def test_report_reader_sees_rows_of_an_interrupted_embed(results):
    interrupt_embed(results, ok_row("c", 3.0), ok_row("a", 5.0))
    emb = load_embeddings(str(results / "embeddings.parquet"))
    assert emb.task_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(emb.vectors[:, 0], [5.0, 2.0, 3.0])  # the newer row of "a" wins


def test_reader_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="embeddings.parquet"):
        load_embeddings(str(tmp_path / "embeddings.parquet"))
