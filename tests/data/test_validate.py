"""A corrupted-input corpus: every problem is reported with its task (and shard/row), good tasks stay usable."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data.dataset import ImageDecodeError, TaskDataset
from t2v_ray.data.library import LibraryWriter, TaskDataError, TaskLibrary
from t2v_ray.data.validate import validate_library

from .test_library import rows, spec

BAD_PNG_ROW = 7


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory) -> str:
    """good-1, good-2 and one broken task per problem the validator must find."""
    uri = str(tmp_path_factory.mktemp("corrupt") / "lib")
    w = LibraryWriter(uri)
    w.add_task(spec("good-1", 3), rows(30, 3))
    w.add_task(spec("good-2", 2), rows(20, 2, offset=3))
    bad_png = rows(30, 3)
    bad_png[BAD_PNG_ROW]["image"] = b"\x89PNG\r\n\x1a\n-not-really"
    w.add_task(spec("bad-png", 3), bad_png)
    one = rows(10, 1)
    w.add_task(spec("one-class", 1), one)
    w.add_task(spec("empty", 2), [])
    out_of_range = rows(12, 3)
    out_of_range[5]["label"] = 3  # label == C
    w.add_task(spec("label-eq-c", 3), out_of_range)
    w.add_task(spec("shard-deleted", 2), rows(10, 2))
    w.add_task(spec("column-missing", 2), rows(10, 2))
    dup = rows(10, 2)
    dup[3]["image_id"] = dup[2]["image_id"]
    w.add_task(spec("duplicate-ids", 2), dup)
    specs = {s.task_id: s for s in w.finish()}
    os.remove(os.path.join(uri, specs["shard-deleted"].shards[0]))
    path = os.path.join(uri, specs["column-missing"].shards[0])
    pq.write_table(pq.read_table(path).drop_columns(["label"]), path)
    return uri


def _issues(report, task_id):
    return [i for i in report.issues if i.task_id == task_id and i.severity == "error"]


def test_each_problem_is_reported_with_its_task_and_row(corrupted):
    report = validate_library(corrupted)
    assert not report.ok
    assert report.usable_tasks == ["good-1", "good-2"]

    (bad_png,) = _issues(report, "bad-png")
    assert "undecodable" in bad_png.problem and bad_png.shard and bad_png.row is not None
    # The row index points into the shard: that row must be the corrupted image.
    row = pq.read_table(os.path.join(corrupted, bad_png.shard)).slice(bad_png.row, 1).to_pylist()[0]
    assert row["image"].endswith(b"-not-really")

    assert any("single-class" in i.problem for i in _issues(report, "one-class"))
    assert any("empty task" in i.problem for i in _issues(report, "empty"))
    (label,) = _issues(report, "label-eq-c")
    assert "label 3 out of range 0..2" in label.problem and label.row is not None
    assert any("missing shard" in i.problem for i in _issues(report, "shard-deleted"))
    (column,) = _issues(report, "column-missing")
    assert "missing columns ['label']" in column.problem and column.shard
    (dup,) = _issues(report, "duplicate-ids")
    assert "duplicate image_id 'img2'" in dup.problem and dup.row is not None
    assert len(report.unusable_tasks) == 7


def test_good_tasks_still_read_and_bad_ones_fail_clearly(corrupted):
    lib = TaskLibrary.open(corrupted)
    assert TaskDataset(lib.read_task("good-1"), split="train")[0][0].shape == (3, 8, 8)
    with pytest.raises(TaskDataError, match="'label-eq-c'.*row .*label 3 out of range"):
        lib.read_task("label-eq-c")
    with pytest.raises(TaskDataError, match="'column-missing'.*missing columns"):
        lib.read_task("column-missing")
    ds = TaskDataset(lib.read_task("bad-png"), split=None)
    bad = ds.image_ids.index(f"img{BAD_PNG_ROW}")
    with pytest.raises(ImageDecodeError, match=f"img{BAD_PNG_ROW}"):
        ds[bad]


def test_cli_validate_exit_codes(corrupted, tmp_path):
    runner = CliRunner()
    partly = runner.invoke(app, ["library", "validate", corrupted])
    assert partly.exit_code == 1
    assert "2/9 tasks usable" in partly.output
    missing = runner.invoke(app, ["library", "validate", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "no tasks.parquet" in " ".join(missing.output.split())  # rich wraps long temp paths at 80 columns
