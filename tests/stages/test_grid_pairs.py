"""One grid pair without Ray: feature cache, classifier, error rows, skipping, records -> grid table."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from t2v_ray.data import storage
from t2v_ray.results import features as fcache
from t2v_ray.results.features import FeatureSet
from t2v_ray.results.grid import collect_grid, write_pair
from t2v_ray.stages.experts import ExpertsConfig, build_expert
from t2v_ray.stages.grid import GridConfig, GridContext, run_pair
from t2v_ray.track import NoopTracker
from t2v_ray.train.classifier import ClassifierConfig
from tests.train.tiny_tasks import build_tiny_library

FAST = GridConfig(classifier=ClassifierConfig(epochs=2, epoch_size=128, batch_size=32, lr=1e-2))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[str, str]:
    lib = str(tmp_path_factory.mktemp("lib") / "tiny")
    build_tiny_library(lib, n_train=4, n_test=2, tasks=["shapes", "color", "count"], corrupt="count")
    out = str(tmp_path_factory.mktemp("out"))
    build_expert("generic", [], ExpertsConfig(probe="small_cnn", weights=None), lib, out)
    return lib, out


def _ctx(setup, cfg: GridConfig = FAST) -> GridContext:
    lib, out = setup
    return GridContext(cfg, lib, out, out, NoopTracker(), None, {})


def test_feature_cache_round_trip_and_invalidation(tmp_path):
    fs = FeatureSet(np.ones((3, 2), np.float32), np.arange(3), np.full((3, 4), 0.25, np.float32))
    pair = fcache.PairFeatures(fs, FeatureSet(np.zeros((0, 2), np.float32), np.zeros(0, np.int64)))
    calls = []

    def extract():
        calls.append(1)
        return pair

    got, cached, uri = fcache.get_or_extract(str(tmp_path), "e", "hash-1", "task-h", extract)
    assert not cached and uri.endswith("features/e/task-h.npz") and storage.exists(uri)
    again, cached, _ = fcache.get_or_extract(str(tmp_path), "e", "hash-1", "task-h", extract)
    assert cached and len(calls) == 1
    np.testing.assert_array_equal(again.train.source_probs, fs.source_probs)
    assert again.test.features.shape == (0, 2) and again.test.source_probs is None
    _, cached, _ = fcache.get_or_extract(str(tmp_path), "e", "hash-2", "task-h", extract)  # retrained expert
    assert not cached and len(calls) == 2


def test_a_pair_computes_once_then_is_skipped_and_a_new_head_reuses_its_features(setup):
    first = run_pair("generic", "shapes", _ctx(setup))
    assert first["status"] == "ok" and not first["features_cached"]
    assert 0.0 <= first["test_error"] <= 1.0 and first["n_train"] == 12 and first["n_test"] == 6
    e = first["test_error"]
    assert first["test_error_se"] == pytest.approx(math.sqrt(e * (1 - e) / 6), rel=1e-12, abs=1e-15)
    assert math.isfinite(first["logme"]) and math.isnan(first["leep"])  # random-init generic: no source head
    again = run_pair("generic", "shapes", _ctx(setup))
    assert again["skipped"] and again["attempt"] == first["attempt"]
    other = dataclasses.replace(FAST, classifier=dataclasses.replace(FAST.classifier, epochs=1))
    third = run_pair("generic", "shapes", _ctx(setup, other))
    assert third["features_cached"] and third["attempt"] != first["attempt"] and third["epochs"] == 1


def test_broken_images_and_missing_experts_fail_alone_with_a_message(setup):
    bad_task = run_pair("generic", "count", _ctx(setup))
    assert bad_task["status"] == "error"
    assert "ImageDecodeError" in bad_task["error"] and "count-train-0-2" in bad_task["error"]
    no_expert = run_pair("ghost", "color", _ctx(setup))
    assert no_expert["status"] == "error" and "ghost" in no_expert["error"]
    assert run_pair("generic", "color", _ctx(setup))["status"] == "ok"


def test_unexpected_errors_propagate_for_tune_to_retry(setup, monkeypatch):
    import t2v_ray.train.classifier as clf

    def boom(*a, **k):
        raise RuntimeError("transient")

    monkeypatch.setattr(clf, "fit_classifier", boom)
    with pytest.raises(RuntimeError, match="transient"):
        run_pair("generic", "color", _ctx(setup, dataclasses.replace(FAST, transfer=False)))


def test_grid_table_has_one_row_per_planned_pair_in_order(setup):
    _, out = setup
    run_pair("generic", "color", _ctx(setup))
    pairs = [("generic", "color"), ("nobody", "shapes"), ("generic", "shapes")]
    table = collect_grid(out, pairs)
    assert (
        list(zip(table.column("expert_id").to_pylist(), table.column("task_id").to_pylist(), strict=True))
        == pairs
    )
    assert table.column("status").to_pylist()[1] == "missing"
    se, err, n = (table.column(c).to_pylist()[0] for c in ("test_error_se", "test_error", "n_test"))
    assert se == pytest.approx(math.sqrt(err * (1 - err) / n), rel=1e-12, abs=1e-15)
    assert {
        "test_error",
        "train_error",
        "epochs",
        "seconds",
        "status",
        "logme",
        "leep",
        "nce",
        "h_score",
    } <= set(table.column_names)


def test_records_written_before_the_se_column_get_it_in_the_grid_table(setup):
    _, out = setup
    old = {"expert_id": "old", "task_id": "color", "status": "ok", "test_error": 0.25, "n_test": 48}
    write_pair(out, old)
    table = collect_grid(out, [("old", "color")])
    assert table.column("test_error_se").to_pylist() == [pytest.approx(math.sqrt(0.25 * 0.75 / 48))]


def test_trials_that_fail_past_their_retries_leave_an_error_row_but_never_replace_an_ok_one(setup):
    from types import SimpleNamespace

    from t2v_ray.distributed.tune_utils import trial_errors
    from t2v_ray.results.grid import read_pair
    from t2v_ray.stages.grid import record_failures

    _, out = setup
    ok = run_pair("generic", "shapes", _ctx(setup))
    results = [
        SimpleNamespace(
            error=RuntimeError("worker died"), config={"item": {"expert_id": "generic", "task_id": "zz"}}
        ),
        SimpleNamespace(
            error=RuntimeError("late"), config={"item": {"expert_id": "generic", "task_id": "shapes"}}
        ),
        SimpleNamespace(error=None, config={"item": {"expert_id": "generic", "task_id": "color"}}),
    ]
    failures = trial_errors(results)
    assert [f[0]["task_id"] for f in failures] == ["zz", "shapes"]
    record_failures(_ctx(setup), failures)
    row = read_pair(out, "generic", "zz")
    assert row["status"] == "error" and row["error"] == "RuntimeError: worker died"
    assert read_pair(out, "generic", "shapes")["attempt"] == ok["attempt"]


def test_cli_reports_bad_settings_as_a_message_and_exit_status_1(setup):
    from typer.testing import CliRunner

    from t2v_ray.cli import app

    lib, out = setup
    result = CliRunner().invoke(
        app, ["grid", "run", "--library", lib, "--experts", out, "--out", out, "--tasks", "nope"]
    )
    assert result.exit_code == 1 and "no task 'nope'" in result.output
    result = CliRunner().invoke(
        app, ["grid", "run", "--library", lib, "--experts", out, "--out", out, "classifier.lrr=1"]
    )
    assert result.exit_code == 1 and "unknown key" in result.output


def test_chunks_keep_each_expert_in_order_and_split_at_tasks_per_trial():
    from t2v_ray.stages.grid import chunk_items

    pairs = [(e, f"t{i}") for e in ("a", "b") for i in range(5)]
    items = chunk_items(pairs, 2)
    assert items == [
        {"expert_id": "a", "task_ids": ["t0", "t1"]},
        {"expert_id": "a", "task_ids": ["t2", "t3"]},
        {"expert_id": "a", "task_ids": ["t4"]},
        {"expert_id": "b", "task_ids": ["t0", "t1"]},
        {"expert_id": "b", "task_ids": ["t2", "t3"]},
        {"expert_id": "b", "task_ids": ["t4"]},
    ]
    assert chunk_items(pairs, 0) == [
        {"expert_id": e, "task_ids": [f"t{i}" for i in range(5)]} for e in ("a", "b")
    ]


def test_a_chunk_runs_its_other_pairs_past_a_retryable_failure_then_raises(setup, monkeypatch, tmp_path):
    # A transient error on one pair must not cost the chunk's other pairs; the error still reaches Tune.
    from t2v_ray.results.grid import read_pair
    from t2v_ray.stages import grid

    lib, experts = setup
    ctx = GridContext(FAST, lib, experts, str(tmp_path), NoopTracker(), None, {})  # a fresh grid root
    real = grid._compute_pair

    def flaky(expert_id, task_id, ctx):
        if task_id == "shapes":
            raise OSError("S3 read timed out")
        return real(expert_id, task_id, ctx)

    monkeypatch.setattr(grid, "_compute_pair", flaky)
    with pytest.raises(OSError, match="timed out"):
        grid.run_chunk("generic", ["shapes", "color"], ctx)
    assert read_pair(str(tmp_path), "generic", "color")["status"] == "ok"
    assert read_pair(str(tmp_path), "generic", "shapes") is None  # not recorded: Tune's retry computes it
