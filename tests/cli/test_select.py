"""`t2v select evaluate` and `t2v report` end to end on the synthetic root, and the MLflow logging contract."""

from __future__ import annotations

import contextlib

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from t2v_ray.cli import app


class RecordingTracker:
    """Stands in for t2v_ray.track.Tracker: records what the select stage logs (no MLflow server needed)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict, dict]] = []
        self.artifacts: dict[str, bytes | str] = {}
        self.metrics: dict[str, float] = {}

    @contextlib.contextmanager
    def parent_run(self, name, params=None, tags=None):
        self.runs.append((name, dict(params or {}), dict(tags or {})))
        yield "run-1"

    def log_artifact_bytes(self, run_id, name, data):
        assert run_id == "run-1"
        self.artifacts[name] = data

    def log_metrics(self, run_id, metrics=None, step_metrics=None):
        self.metrics.update(metrics or {})


@pytest.fixture
def no_figures(monkeypatch):
    """Figures are checked in test_report_files; here they would only cost time."""
    from t2v_ray.report import writer

    monkeypatch.setattr(writer, "_figures", lambda details: {})


def test_select_evaluate_prints_table1_and_writes_files(synth, tmp_path, no_figures):
    out = tmp_path / "sel"
    res = CliRunner().invoke(
        app,
        [
            "select",
            "evaluate",
            "--results",
            str(synth.root),
            "--out",
            str(out),
            "--no-track",
            "model2vec=false",
            "n_boot=50",
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "Asymmetric Task2Vec" in res.output and "Table 1" in res.output
    table = pd.read_csv(out / "table1.csv")
    assert "MODEL2VEC" not in set(table["selector"]) and "Generic" in set(table["selector"])
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (
        cfg["protocol"] == "taxonomy"
        and cfg["n_boot"] == 50
        and cfg["resolved_paths"]["library"].endswith("library")
    )


def test_report_uses_default_output_folder_and_protocol_flag(synth, no_figures):
    res = CliRunner().invoke(
        app,
        [
            "report",
            "--results",
            str(synth.root),
            "--protocol",
            "mixed",
            "--no-track",
            "model2vec=false",
            "n_boot=20",
        ],
    )
    assert res.exit_code == 0, res.output
    out = synth.root / "select" / "mixed"
    assert (out / "table1.md").read_text().startswith("## Table 1 — model selection (mixed)")
    bad = CliRunner().invoke(
        app, ["report", "--results", str(synth.root), "--protocol", "oracle", "--no-track"]
    )
    assert bad.exit_code == 2 and "protocol" in bad.output


def test_run_select_logs_tables_metrics_and_config(synth, tmp_path, monkeypatch, no_figures):
    from t2v_ray.stages import select as stage

    tracker = RecordingTracker()
    monkeypatch.setattr(stage, "stage_tracker", lambda settings, library, name: tracker)
    cfg = stage.SelectConfig(results=str(synth.root), out=str(tmp_path), model2vec=False, n_boot=20)
    summary = stage.run_select(cfg)
    table, written = summary.table1, summary.written
    name, params, tags = tracker.runs[0]
    assert name == "select:taxonomy" and tags["stage"] == "select" and params["protocol"] == "taxonomy"
    assert set(tracker.artifacts) == set(written)  # every file written is also an artifact
    generic = table.set_index("selector").loc["Generic", "rel_increase"]
    assert tracker.metrics["generic.rel_increase"] == pytest.approx(generic)
    assert tracker.metrics["n_tasks"] == 12
