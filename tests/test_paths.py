"""Local paths are made absolute once, when a config is loaded, so no stage or Tune trial sees a relative one."""

from __future__ import annotations

import os

import pytest

from t2v_ray.config import absolute_uri, load_config
from t2v_ray.pipeline import PipelineConfig, StageFailures, exit_code


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("t2v-data", "{cwd}/t2v-data"),
        ("./a/../b", "{cwd}/b"),
        ("/abs/x", "/abs/x"),
        ("file://rel/x", "file://{cwd}/rel/x"),
        ("file:///abs/x", "file:///abs/x"),
        ("sqlite:///rel/mlflow.db", "sqlite:///{cwd}/rel/mlflow.db"),  # SQLAlchemy: 3 slashes = relative
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("https://mlflow.example/x", "https://mlflow.example/x"),
        ("", ""),
    ],
)
def test_absolute_uri(uri, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri(uri) == expected.format(cwd=os.getcwd())


def test_every_local_location_of_the_pipeline_config_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        PipelineConfig,
        None,
        [
            "storage=rel-store",
            "tracking_uri=sqlite:///rel.db",
            "library.source=uri",
            "library.uri=libs/x",
            "experts.weights=weights/expert.pth",
            "experts.tune.storage_path=tune-state",
            "experts.tracking.artifact_root=art",
            "embed.weights=IMAGENET1K_V1",
            "embed.tracking.artifact_root=art2",
            "grid.tune.storage_path=s3://bucket/tune",
        ],
    )
    cwd = os.getcwd()
    assert cfg.storage == f"{cwd}/rel-store"
    assert cfg.tracking_uri == f"sqlite:///{cwd}/rel.db"
    assert cfg.library.uri == f"{cwd}/libs/x"
    assert cfg.experts.weights == f"{cwd}/weights/expert.pth"
    assert cfg.experts.tune.storage_path == f"{cwd}/tune-state"
    assert cfg.experts.tracking.artifact_root == f"{cwd}/art"
    assert cfg.embed.weights == "IMAGENET1K_V1"  # a torchvision weights name, not a path
    assert cfg.embed.tracking.artifact_root == f"{cwd}/art2"
    assert cfg.grid.tune.storage_path == "s3://bucket/tune"
    assert cfg.experts.weights != "default" and load_config(PipelineConfig).experts.weights == "default"


def test_a_stage_with_nothing_usable_and_partial_failures():
    none_left = StageFailures("experts", 2, (("a", "boom\n  at line 3"), ("b", "boom")), "/r/experts")
    assert not none_left.usable
    assert none_left.line() == "experts: 2 of 2 failed; first: a: boom at line 3 (all errors: /r/experts)"
    partial = StageFailures("grid", 10, (("e × t", "error: nan loss"),), "/r/grid.parquet")
    assert partial.usable
    result = {"failures": [partial]}
    assert exit_code(PipelineConfig(), result) == 2
    assert exit_code(PipelineConfig(allow_partial=True), result) == 0
    assert exit_code(PipelineConfig(), {"failures": []}) == 0
