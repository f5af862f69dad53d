"""Library writer/reader: layout, content hashes, crash safety, no-op rebuilds."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from t2v_ray.data import storage
from t2v_ray.data.images import encode_png
from t2v_ray.data.library import LibraryError, LibraryWriter, TaskDataError, TaskLibrary


def png(value: int) -> bytes:
    return encode_png(Image.fromarray(np.full((8, 8), value % 256, np.uint8), "L"))


def rows(n: int, n_classes: int, offset: int = 0) -> list[dict]:
    return [
        {
            "split": "test" if i % 5 == 0 else "train",
            "label": i % n_classes,
            "image": png(i + offset),
            "image_id": f"img{i}",
            "attributes": {"i": i},
        }
        for i in range(n)
    ]


def spec(task_id: str, n_classes: int, kind: str = "taxonomy") -> dict:
    return {
        "task_id": task_id,
        "dataset": "toy",
        "kind": kind,
        "taxonomy": ["toy", *task_id.split("/")],
        "classes": [f"c{i}" for i in range(n_classes)],
    }


def write(uri: str, shard_bytes: int = 2**20) -> LibraryWriter:
    w = LibraryWriter(uri, shard_bytes=shard_bytes)
    w.add_task(spec("a", 3), rows(30, 3))
    w.add_task(spec("b/c", 2, "attribute"), rows(20, 2, offset=7))
    w.finish()
    return w


def test_round_trip_counts_splits_and_shards(tmp_path):
    uri = str(tmp_path / "lib")
    write(uri, shard_bytes=600)  # tiny shards: task "a" must span several files
    lib = TaskLibrary.open(uri)
    assert [t.task_id for t in lib.tasks] == ["a", "b/c"]
    a = lib.task("a")
    assert (a.n_train, a.n_test, a.num_classes) == (24, 6, 3)
    assert len(a.shards) > 1 and all(s.startswith("shards/") for s in a.shards)
    table = lib.read_task("a")
    assert table.num_rows == 30
    assert sorted(table.column("image_id").to_pylist()) == sorted(f"img{i}" for i in range(30))
    assert set(lib.read_task("a", split="test").column("split").to_pylist()) == {"test"}
    bc = lib.read_task("b/c").to_pylist()
    assert {r["image_id"]: dict(r["attributes"]) for r in bc}["img3"] == {"i": "3"}
    with pytest.raises(LibraryError, match="no task 'zzz'"):
        lib.task("zzz")


def test_content_hash_is_order_independent_and_content_sensitive(tmp_path):
    w1 = LibraryWriter(str(tmp_path / "x"))
    s1 = w1.add_task(spec("a", 3), rows(30, 3))
    w2 = LibraryWriter(str(tmp_path / "y"))
    s2 = w2.add_task(spec("a", 3), list(reversed(rows(30, 3))))
    w3 = LibraryWriter(str(tmp_path / "z"))
    changed = rows(30, 3)
    changed[4]["image"] = png(200)
    s3 = w3.add_task(spec("a", 3), changed)
    assert s1.content_hash == s2.content_hash
    assert s1.content_hash != s3.content_hash


def test_rebuild_of_identical_content_writes_nothing(tmp_path):
    uri = str(tmp_path / "lib")
    write(uri)
    mtimes = {rel: os.stat(os.path.join(uri, rel)).st_mtime_ns for rel, _ in storage.list_files(uri)}
    again = write(uri)
    assert (again.stats.shards_written, again.stats.tasks_file_written) == (0, False)
    assert again.stats.shards_reused == len(mtimes) - 1
    assert {rel: os.stat(os.path.join(uri, rel)).st_mtime_ns for rel in mtimes} == mtimes


def test_changed_task_rewrites_only_its_shards_and_prunes_old_ones(tmp_path):
    uri = str(tmp_path / "lib")
    write(uri)
    old_b = TaskLibrary.open(uri).task("b/c").shards
    w = LibraryWriter(uri)
    w.add_task(spec("a", 3), rows(30, 3))
    w.add_task(spec("b/c", 2, "attribute"), rows(22, 2, offset=7))
    w.finish()
    assert (w.stats.shards_written, w.stats.shards_reused, w.stats.shards_pruned) == (1, 1, 1)
    assert not any(storage.exists(storage.join(uri, s)) for s in old_b)
    assert TaskLibrary.open(uri).task("b/c").n_images == 22


def test_crashed_build_never_looks_complete(tmp_path):
    uri = str(tmp_path / "lib")
    w = LibraryWriter(uri)
    w.add_task(spec("a", 3), rows(30, 3))  # shards written, finish() never called
    assert storage.list_dir(storage.join(uri, "shards"))
    with pytest.raises(LibraryError, match="tasks.parquet"):
        TaskLibrary.open(uri)


def test_read_task_names_task_and_shard_when_a_shard_is_missing(tmp_path):
    uri = str(tmp_path / "lib")
    write(uri)
    lib = TaskLibrary.open(uri)
    shard = lib.task("a").shards[0]
    os.remove(os.path.join(uri, shard))
    with pytest.raises(TaskDataError) as err:
        lib.read_task("a")
    assert (err.value.task_id, err.value.shard) == ("a", shard)
    assert "missing" in str(err.value)
    assert lib.read_task("b/c").num_rows == 20  # the other task is untouched


def test_writer_rejects_duplicate_task_and_bad_kind(tmp_path):
    w = LibraryWriter(str(tmp_path / "lib"))
    w.add_task(spec("a", 3), rows(6, 3))
    with pytest.raises(ValueError, match="added twice"):
        w.add_task(spec("a", 3), rows(6, 3))
    with pytest.raises(ValueError, match="kind"):
        w.add_task(spec("q", 3, kind="other"), rows(6, 3))
