"""Fast checks of the embedding stage's pieces that need no Ray: result store, cache key, config, retries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from t2v_ray.cli.embed import flag_overrides, load_embed_config
from t2v_ray.config import ConfigError
from t2v_ray.distributed.ray_utils import TransientIOError, retry_io
from t2v_ray.stages.embed import select_tasks
from t2v_ray.stages.embed_worker import describe_error


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
    assert describe_error("t1", err) == str(err)  # already names task, shard and row
    assert describe_error("t1", ValueError("the task has a single class (0)")).startswith(
        "task 't1': the task"
    )
    assert describe_error("t1", RuntimeError("CUDA OOM")) == "task 't1': RuntimeError: CUDA OOM"


def test_cli_module_imports_no_heavy_libraries():
    code = (
        "import sys, t2v_ray.cli.embed; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validate_rejects_unusable_settings_and_makes_local_paths_absolute(tmp_path: Path, monkeypatch):
    from t2v_ray.stages.embed import EmbedJobConfig

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
    from t2v_ray.stages.embed import EmbedJobConfig
    from t2v_ray.task2vec import EmbedConfig

    for cls in (EmbedJobConfig, EmbedConfig, HeadConfig):
        hints = typing.get_type_hints(cls)
        numeric = [
            f for f in dataclasses.fields(cls) if hints[f.name] in (int, float, int | None, float | None)
        ]
        missing = [f.name for f in numeric if "range" not in f.metadata]
        assert not missing, f"{cls.__name__}: numeric settings without a range: {missing}"
