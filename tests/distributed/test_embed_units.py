"""Fast checks of the embedding stage's pieces that need no Ray: result store, cache key, config, retries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from t2v_ray.config import ConfigError
from t2v_ray.distributed.embed import select_tasks
from t2v_ray.distributed.embed_cli import flag_overrides, load_embed_config
from t2v_ray.distributed.embed_worker import _describe_error
from t2v_ray.distributed.ray_utils import TransientIOError, retry_io
from t2v_ray.distributed.results import (
    EMBEDDING_SCHEMA,
    ResultStore,
    is_cached,
    latest_per_key,
    rows_to_table,
)


def _row(task_id: str, status: str = "ok", **kw) -> dict:
    base = {"task_id": task_id, "status": status, "probe_hash": "p", "config_hash": "c", "data_hash": "d"}
    return {**base, "embedding": np.arange(3, dtype=np.float32), **kw}


def _key(task_id: str, config: str = "c") -> tuple:
    return (task_id, "p", config, "d")  # (task_id, probe_hash, config_hash, data_hash)


def test_store_flushes_parts_by_row_count_and_merges_newest_per_key(tmp_path: Path):
    store = ResultStore(str(tmp_path), flush_rows=2, flush_seconds=1e9)
    assert store.add(_row("a", status="error", error="first try")) is False  # buffered
    assert store.add(_row("b")) is True  # second row fills the buffer -> one part file
    store.add(_row("a"))  # a newer ok row replaces the older error row of the same key
    store.flush()
    assert len(store.part_names()) == 2
    rows = ResultStore(str(tmp_path)).read_rows()
    assert rows[_key("a")]["status"] == "ok" and rows[_key("b")]["status"] == "ok"
    assert rows[_key("b")]["embedding"] == [0.0, 1.0, 2.0]


def test_an_error_row_never_replaces_an_ok_row_and_configs_coexist(tmp_path: Path):
    # Before rows were keyed by task only: a second run with another config (or a failed retry) into the same
    # output replaced the task's good embedding with its error row.
    store = ResultStore(str(tmp_path), flush_rows=1)
    store.add(_row("a", norm=1.0))
    store.compact()
    store.add(_row("a", status="error", error="IndexError"))  # same key, failed: the ok row stays
    store.add(_row("a", config_hash="c2", norm=2.0))  # another config: a row of its own
    store.add(_row("a", config_hash="c3", status="error", error="bad"))
    rows = ResultStore(str(tmp_path)).read_rows()
    assert rows[_key("a")]["status"] == "ok" and rows[_key("a")]["norm"] == 1.0
    assert rows[_key("a", "c2")]["norm"] == 2.0 and rows[_key("a", "c3")]["status"] == "error"
    assert len(store.compact()) == 3


def test_compact_writes_main_file_removes_parts_and_keeps_rows(tmp_path: Path):
    store = ResultStore(str(tmp_path), flush_rows=1)
    for t in "abc":
        store.add(_row(t))
    table = store.compact()
    assert store.part_names() == []
    assert (tmp_path / "embeddings.parquet").is_file()
    assert sorted(table.column("task_id").to_pylist()) == ["a", "b", "c"]
    # A later part overrides the compacted row with the same key.
    store.add(_row("b", norm=5.0))
    assert ResultStore(str(tmp_path)).read_rows()[_key("b")]["norm"] == 5.0


def test_store_ignores_temporary_files_left_by_an_interrupted_write(tmp_path: Path):
    store = ResultStore(str(tmp_path), flush_rows=1)
    store.add(_row("a"))
    # What a crash inside write_bytes_atomic leaves behind: a hidden, half-written temporary sibling.
    (Path(store.parts_uri) / ".part-9.parquet.tmp-123-abcd").write_bytes(b"PAR1 torn")
    assert list(ResultStore(str(tmp_path)).read_rows()) == [_key("a")]


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


def test_select_tasks_globs_in_library_order():
    ids = ["scripts/latin", "scripts/greek", "fonts/serif", "fonts/sans"]
    assert select_tasks(ids, "") == ids
    assert select_tasks(ids, "fonts/*, scripts/greek") == ["scripts/greek", "fonts/serif", "fonts/sans"]
    assert select_tasks(ids, "nothing*") == []


def test_flags_and_overrides_resolve_into_the_typed_config(tmp_path: Path):
    cfg_file = tmp_path / "embed.yaml"
    cfg_file.write_text("probe: resnet18\nactors: 3\nembed:\n  max_samples: 500\n")
    flags = {
        "library": "s3://b/lib",
        "out": "/tmp/o",
        "tasks": "*",
        "weights": "none",
        "method": "variational",
    }
    cfg = load_embed_config(cfg_file, flag_overrides(flags) + ["embed.head.epochs=1", "actors=4"])
    assert (cfg.library, cfg.tasks, cfg.weights, cfg.probe, cfg.actors) == (
        "s3://b/lib",
        "*",
        None,
        "resnet18",
        4,
    )
    assert (cfg.embed.method, cfg.embed.max_samples, cfg.embed.head.epochs) == ("variational", 500, 1)
    with pytest.raises(ConfigError):
        load_embed_config(None, ["embed.no_such_key=1"])


def test_retry_io_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error NETWORK_CONNECTION")
        return "data"

    assert retry_io(flaky, "reading x", attempts=3, backoff_seconds=0) == "data"
    assert len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("no such shard")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        retry_io(missing, "reading x", attempts=3, backoff_seconds=0)
    assert len(calls) == 1  # deterministic: not retried

    def denied():  # what pyarrow raises for S3 403s: a plain OSError, and waiting does not help
        calls.append(1)
        raise OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied")

    calls.clear()
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        retry_io(denied, "reading x", attempts=3, backoff_seconds=0)
    assert len(calls) == 1

    with pytest.raises(TransientIOError, match="reading x: storage error after 2 attempts"):
        retry_io(
            lambda: (_ for _ in ()).throw(OSError("timeout")), "reading x", attempts=2, backoff_seconds=0
        )


def test_error_messages_name_the_task_once():
    from t2v_ray.data.library import TaskDataError

    err = TaskDataError("t1", "label 9 out of range 0..2", shard="shards/t1-000.parquet", row=4)
    assert _describe_error("t1", err) == str(err)  # already names task, shard and row
    assert _describe_error("t1", ValueError("the task has a single class (0)")).startswith(
        "task 't1': the task"
    )
    assert _describe_error("t1", RuntimeError("CUDA OOM")) == "task 't1': RuntimeError: CUDA OOM"


def test_cli_module_imports_no_heavy_libraries():
    code = (
        "import sys, t2v_ray.distributed.embed_cli; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validate_rejects_unusable_settings_and_makes_local_paths_absolute(tmp_path: Path, monkeypatch):
    from t2v_ray.distributed.embed import EmbedJobConfig

    monkeypatch.chdir(tmp_path)
    cfg = EmbedJobConfig(library="lib", out="s3://bucket/out").validate()
    assert (cfg.library, cfg.out) == (str(tmp_path / "lib"), "s3://bucket/out")
    with pytest.raises(ValueError, match="library and out"):
        EmbedJobConfig(library="lib").validate()
    with pytest.raises(ValueError, match="actors"):
        EmbedJobConfig(library="lib", out="o", actors=0).validate()


@pytest.mark.parametrize(
    "override",
    ["embed.max_samples=0", "embed.batch_size=0", "embed.head.lr=-1", "actors=0", "embed.n_draws=-1"],
)
def test_out_of_range_settings_are_rejected_when_the_config_loads(override):
    # Before, embed.max_samples=0 was accepted and every task then failed inside its actor with an IndexError.
    with pytest.raises(ConfigError, match="out of range"):
        load_embed_config(None, [override])


def test_every_numeric_embed_setting_has_a_range():
    import dataclasses
    import typing

    from t2v_ray.core.heads import HeadConfig
    from t2v_ray.distributed.embed import EmbedJobConfig
    from t2v_ray.task2vec import EmbedConfig

    for cls in (EmbedJobConfig, EmbedConfig, HeadConfig):
        hints = typing.get_type_hints(cls)
        numeric = [
            f for f in dataclasses.fields(cls) if hints[f.name] in (int, float, int | None, float | None)
        ]
        missing = [f.name for f in numeric if "range" not in f.metadata]
        assert not missing, f"{cls.__name__}: numeric settings without a range: {missing}"
