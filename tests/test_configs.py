"""Experiment configs: every shipped YAML resolves into a typed PipelineConfig, and the demo's copies agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from t2v_ray.config import ConfigError, load_config
from t2v_ray.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo", "taxonomy", "mixed", "paper", "tiny"])
def test_shipped_configs_resolve(name, monkeypatch):
    monkeypatch.setenv("T2V_STORAGE_URI", "s3://bucket/t2v/")
    cfg = load_config(PipelineConfig, ROOT / "jobs" / "configs" / f"{name}.yaml")
    assert cfg.embed.probe == cfg.experts.probe, "experts and the probe should share an architecture"
    assert set(cfg.protocols) <= {"taxonomy", "mixed"}
    if name in ("taxonomy", "mixed", "paper"):
        assert cfg.storage == f"s3://bucket/t2v/{name}"  # ${T2V_STORAGE_URI} expanded from the node's env


def test_paper_config_has_the_papers_hyperparameters():
    cfg = load_config(PipelineConfig, ROOT / "jobs" / "configs" / "paper.yaml")
    t, c = cfg.experts.train, cfg.grid.classifier
    assert (cfg.embed.probe, cfg.embed.weights, cfg.embed.embed.method) == (
        "resnet34",
        "IMAGENET1K_V1",
        "variational",
    )
    assert (t.head_epochs, t.finetune_epochs, t.lr, t.weight_decay, t.lr_milestones, t.lr_gamma) == (
        10,
        60,
        1e-3,
        5e-4,
        (40,),
        0.1,
    )
    assert (c.epochs, c.lr, c.weight_decay, c.epoch_size) == (16, 1e-4, 5e-4, 10_000)
    assert cfg.embed.embed.lr_precision == 1e-2 and cfg.embed.embed.head.lr == 1e-4


def test_packaged_demo_config_matches_jobs_copy():
    # `t2v demo` reads the packaged copy (works after a plain pip install); jobs/configs/demo.yaml is what a
    # cluster user submits. They must not drift.
    assert (ROOT / "t2v_ray" / "configs" / "demo.yaml").read_text() == (
        ROOT / "jobs" / "configs" / "demo.yaml"
    ).read_text()


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("embed: {actors: 2, actorz: 3}\n")
    with pytest.raises(ConfigError, match="actorz"):
        load_config(PipelineConfig, bad)
    with pytest.raises(ConfigError, match="integer"):
        load_config(PipelineConfig, None, ["n_experts=many"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("library.source=web", "config.library.source"),
        ("protocols=[taxonomy,oracle]", "config.protocols[1]"),
        ("stages=[library,train]", "config.stages[1]"),
        ("embed.embed.method=fisher", "config.embed.embed.method"),
        ("experts.device=tpu", "config.experts.device"),
        ("grid.features.device=tpu", "config.grid.features.device"),
    ],
)
def test_enum_like_fields_reject_unknown_values_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: .* is not one of"):
        load_config(PipelineConfig, None, [override])
