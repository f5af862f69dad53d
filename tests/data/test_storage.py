"""Storage over pyarrow.fs: the same calls on a local folder, file:// and moto S3."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pytest

from t2v_ray.data import storage


@pytest.fixture(params=["plain", "file", "s3"])
def base_uri(request, tmp_path):
    if request.param == "plain":
        return str(tmp_path / "lib")
    if request.param == "file":
        return f"file://{tmp_path}/lib"
    s3 = request.getfixturevalue("s3_server")
    return s3.uri(s3.make_bucket(), "prefix", "lib")


def test_bytes_and_parquet_round_trip(base_uri):
    target = storage.join(base_uri, "sub", "x.bin")
    assert not storage.exists(target)
    storage.write_bytes_atomic(target, b"hello")
    assert storage.exists(target)
    assert storage.read_bytes(target) == b"hello"
    assert storage.write_bytes_if_changed(target, b"hello") is False
    assert storage.write_bytes_if_changed(target, b"world") is True
    assert storage.read_bytes(target) == b"world"

    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    storage.write_parquet_atomic(table, storage.join(base_uri, "t.parquet"))
    assert storage.read_parquet(storage.join(base_uri, "t.parquet")).equals(table)
    assert storage.list_dir(base_uri) == ["sub", "t.parquet"]
    assert [rel for rel, _ in storage.list_files(base_uri)] == ["sub/x.bin", "t.parquet"]

    storage.delete(target)
    assert not storage.exists(target)
    assert storage.list_dir(storage.join(base_uri, "missing")) == []


def test_local_atomic_write_leaves_no_temp_files(tmp_path):
    target = str(tmp_path / "a" / "file.parquet")
    storage.write_parquet_atomic(pa.table({"a": [1]}), target)
    assert os.listdir(tmp_path / "a") == ["file.parquet"]


def test_s3_filesystem_pickles_with_endpoint_and_credentials(s3_server, monkeypatch):
    uri = s3_server.uri(s3_server.make_bucket(), "k")
    storage.write_bytes_atomic(uri, b"data")
    fs, path = storage.open_fs(uri)
    blob = pickle.dumps(fs)
    # A Ray worker unpickles the filesystem without our environment: endpoint and keys must travel with it.
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    clone = pickle.loads(blob)
    with clone.open_input_stream(path) as f:
        assert f.read() == b"data"


def test_join_keeps_scheme():
    assert storage.join("s3://b/p/", "tasks.parquet") == "s3://b/p/tasks.parquet"
    assert storage.join("file:///x", "a", "b") == "file:///x/a/b"
    assert storage.join("rel/dir", "a") == os.path.join("rel/dir", "a")
