"""Pure helpers: names, URIs, filters, flattening and redaction (no MLflow store)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from t2v_ray.track import (
    default_artifact_root,
    default_tracking_uri,
    experiment_name,
    redact,
    redact_text,
    run_name,
    run_tags,
    secret_values,
)
from t2v_ray.track.artifacts import artifact_name
from t2v_ray.track.naming import experiment_artifact_location, sqlite_path
from t2v_ray.track.params import chunked, prepare_params
from t2v_ray.track.query import build_filter


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/libs/glyphs/", "t2v/glyphs/embed"),
        ("s3://bucket", "t2v/bucket/embed"),
        ("file:///data/fashion-mnist", "t2v/fashion-mnist/embed"),
        ("./t2v-data/glyphs", "t2v/glyphs/embed"),
    ],
)
def test_experiment_name_uses_last_path_component(uri, expected):
    assert experiment_name(uri, "embed") == expected


def test_experiment_name_rejects_bad_stage():
    with pytest.raises(ValueError):
        experiment_name("lib", "a/b")


def test_default_uri_is_absolute_sqlite_unless_env_set(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri("data") == f"sqlite:///{tmp_path.resolve()}/data/mlflow.db"
    assert default_artifact_root("data") == f"{tmp_path.resolve()}/data/mlartifacts"
    assert sqlite_path(default_tracking_uri("data")) == tmp_path.resolve() / "data" / "mlflow.db"
    assert sqlite_path("sqlite:///rel/x.db") == tmp_path.resolve() / "rel" / "x.db"
    assert sqlite_path("http://mlflow:5000") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri("data") == "http://mlflow:5000"


def test_artifact_location_is_absolute_and_path_safe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        experiment_artifact_location("art", "t2v/my lib/../embed")
        == (tmp_path / "art/t2v/my_lib/embed").as_uri()
    )
    assert experiment_artifact_location("s3://b/p/", "t2v/l/grid") == "s3://b/p/t2v/l/grid"


def test_run_names_and_tags_keep_ids_separate():
    assert run_name("grid", task_id="t1", expert_id="e2") == "grid:e2:t1"
    assert run_tags("grid", task_id="t1", expert_id="e2") == {
        "stage": "grid",
        "task_id": "t1",
        "expert_id": "e2",
    }


def test_build_filter_quotes_keys_and_values():
    got = build_filter({"task_id": "it's", "metrics.err": 0.5, "mlflow.parentRunId": "abc"})
    assert got == "tags.`task_id` = 'it\\'s' AND metrics.`err` = 0.5 AND tags.`mlflow.parentRunId` = 'abc'"


def test_artifact_names_cannot_escape_the_run():
    assert str(artifact_name("./plots/a.png")) == "plots/a.png"
    for bad in ("../x", "/etc/passwd", "", "a/../../b"):
        with pytest.raises(ValueError):
            artifact_name(bad)


def test_chunked_respects_batch_size():
    assert [len(c) for c in chunked(list(range(250)), 100)] == [100, 100, 50]


def test_redact_masks_keys_env_values_and_url_passwords(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-FAKE-0001-abcdef")
    monkeypatch.setenv("XDG_SESSION_ID", "3")  # name matches, value too short to scrub from text
    cfg = {
        "Session_Name": "x",
        "nested": [{"AWS_Access_Key": "k"}, "Bearer tok-FAKE-0001-abcdef"],
        "uri": "https://alice:s3cr3t@host/p",
        "n": 3,
    }
    assert redact(cfg) == {
        "Session_Name": "***",
        "nested": [{"AWS_Access_Key": "***"}, "Bearer ***"],
        "uri": "https://alice:***@host/p",
        "n": 3,
    }
    assert "3" not in secret_values()
    assert redact_text("a tok-FAKE-0001-abcdef b") == "a *** b"
    assert prepare_params({"a": {"b": ("tok-FAKE-0001-abcdef",)}}) == {"a.b": '["***"]'}


def test_importing_track_does_not_import_mlflow():
    code = "import sys, t2v_ray.track; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
