"""Screening a task's rows: undecodable images are named by task, shard, row and image_id; ``bad_rows`` decides."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image

from t2v_ray.data.library import TaskDataError
from t2v_ray.data.screening import screen_rows


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    return buf.getvalue()


def _table(n: int, bad: set[int]) -> pa.Table:
    good = _png()
    return pa.table(
        {
            "image": [b"\x89PNG broken" if i in bad else good for i in range(n)],
            "image_id": [f"img-{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["train"] * n,
            "shard": ["shards/a.parquet"] * (n // 2) + ["shards/b.parquet"] * (n - n // 2),
            "shard_row": list(range(n // 2)) + list(range(n - n // 2)),
        }
    )


def test_skip_drops_bad_rows_up_to_the_tolerated_fraction():
    out = screen_rows("t", _table(200, {7, 150}), "skip", 0.01)  # 2 of 200 = 1%: tolerated
    assert out.table.num_rows == 198 and out.total == 200
    assert "img-7" not in out.table.column("image_id").to_pylist()
    assert out.bad[1].startswith("task 't', shard 'shards/b.parquet', row 50: image_id 'img-150'")


def test_too_many_bad_rows_or_fail_policy_fail_the_task_naming_the_first_bad_row():
    with pytest.raises(TaskDataError, match=r"3 undecodable image\(s\) \(over 1% of 200 rows\)") as err:
        screen_rows("t", _table(200, {7, 8, 150}), "skip", 0.01)
    assert (err.value.shard, err.value.row) == ("shards/a.parquet", 7) and "img-7" in str(err.value)
    with pytest.raises(TaskDataError, match=r"bad_rows=fail"):
        screen_rows("t", _table(200, {150}), "fail")


def test_a_clean_task_is_returned_unchanged():
    table = _table(10, set())
    out = screen_rows("t", table, "fail")
    assert out.table is table and out.bad == []
