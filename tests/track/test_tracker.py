"""Tracker against a temp sqlite store: runs, params, metrics, tags and artifacts are read back via MlflowClient."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from t2v_ray.track import Tracker, run_name, run_tags
from t2v_ray.track.params import MAX_PARAM_VAL_LENGTH, TRUNCATION_MARK
from tests.track._worker import log_embed_child

from .conftest import FAKE_SECRETS

pytestmark = pytest.mark.integration


def _artifact_dir(store: dict[str, Path], stage: str, run_id: str) -> Path:
    return store["data"] / "mlartifacts" / "t2v" / "glyphs" / stage / run_id / "artifacts"


def _assert_no_secret(text: str) -> None:
    for name, value in FAKE_SECRETS.items():
        assert value not in text, f"{name} leaked"


def test_create_twice_reuses_experiment_and_pins_artifacts(make_tracker, store):
    first, second = make_tracker("select"), make_tracker("select")
    assert first.experiment_id == second.experiment_id
    exp = first.client.get_experiment(first.experiment_id)
    assert exp.name == "t2v/glyphs/select"
    assert exp.artifact_location == (store["data"] / "mlartifacts/t2v/glyphs/select").resolve().as_uri()
    assert make_tracker("grid").experiment_id != first.experiment_id


def test_children_from_spawned_processes_nest_under_parent(make_tracker, store):
    tracker = make_tracker("embed")
    payload = pickle.dumps(tracker)
    leaked = FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"]
    with tracker.parent_run("embed", params={"probe": {"name": "tiny"}}, tags=run_tags("embed")) as parent_id:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            child_ids = pool.starmap(log_embed_child, [(payload, parent_id, t, leaked) for t in ("t1", "t2")])

    client = tracker.client
    assert client.get_run(parent_id).info.status == "FINISHED"
    found = tracker.find_runs({"mlflow.parentRunId": parent_id})
    assert sorted(r.info.run_id for r in found) == sorted(child_ids)
    for run in found:
        task = run.data.tags["task_id"]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"embed:tiny:{task}"
        assert {k: run.data.tags[k] for k in ("stage", "task_id", "probe")} == {
            "stage": "embed",
            "task_id": task,
            "probe": "tiny",
        }
        assert run.data.params["probe.name"] == "tiny" and run.data.params["task_id"] == task
        assert "***" in run.data.params["probe.note"]
        _assert_no_secret(run.data.params["probe.note"])
        assert run.data.metrics["norm"] == 1.5
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (0, 3.0),
            (1, 2.0),
            (2, 1.0),
        ]
        art = _artifact_dir(store, "embed", run.info.run_id)
        assert (art / "embedding.json").read_text().split() == ["[", "0.25,", "0.5", "]"]
        log = (art / "notes" / "log.txt").read_text()
        assert log.startswith("worker saw ") and "***" in log
        _assert_no_secret(log)
    assert not (store["cwd"] / "mlruns").exists()
    assert list(store["cwd"].iterdir()) == []


@dataclasses.dataclass(frozen=True)
class _Head:
    lr: float = 1e-4
    epochs: int = 2


def test_params_flattened_truncated_and_batched(make_tracker):
    tracker = make_tracker("experts")
    nested = {
        "head": _Head(),
        "many": {f"k{i:03d}": i for i in range(250)},  # > 100 params: needs several log_batch calls
        "long": "x" * (MAX_PARAM_VAL_LENGTH + 500),
        "layers": ["conv1", "fc"],
    }
    long_series = [float(i) for i in range(1500)]  # > 1000 metrics in one call
    run_id = tracker.log_child("", "flat", params=nested, step_metrics={"curve": long_series})
    params = tracker.client.get_run(run_id).data.params
    assert params["head.lr"] == "0.0001" and params["head.epochs"] == "2"
    assert all(params[f"many.k{i:03d}"] == str(i) for i in range(250))
    assert len(params["long"]) == MAX_PARAM_VAL_LENGTH and params["long"].endswith(TRUNCATION_MARK)
    assert params["layers"] == '["conv1", "fc"]'
    history = tracker.client.get_metric_history(run_id, "curve")
    assert sorted(m.value for m in history) == long_series


def test_binary_artifacts_and_files_land_under_data_dir(make_tracker, store, tmp_path):
    tracker = make_tracker("grid")
    blob = bytes(range(256)) * 4  # not UTF-8: must be stored byte-for-byte
    src = tmp_path / "grid.parquet"
    src.write_bytes(blob)
    with tracker.parent_run("grid") as run_id:
        tracker.log_artifact_bytes(run_id, "embedding.npy", blob)
        tracker.log_file(run_id, src, name="tables/grid.parquet")
        tracker.log_file(run_id, src)
    art = _artifact_dir(store, "grid", run_id)
    assert (art / "embedding.npy").read_bytes() == blob
    assert (art / "tables" / "grid.parquet").read_bytes() == blob
    assert (art / "grid.parquet").read_bytes() == blob
    listed = {a.path for a in tracker.client.list_artifacts(run_id)}
    assert listed == {"embedding.npy", "grid.parquet", "tables"}
    assert not (store["cwd"] / "mlruns").exists()


def test_fake_secrets_never_reach_params_tags_names_or_artifacts(make_tracker, store, tmp_path):
    tracker = make_tracker("redact")
    s = FAKE_SECRETS
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"s3:\n  key_id: {s['AWS_ACCESS_KEY_ID']}\n")
    run_id = tracker.log_child(
        "",
        f"run {s['RAY_AUTH_TOKEN']}",
        params={
            "s3": {"secret_access_key": "literal-not-in-env", "endpoint": "http://u:pw-in-url@minio:9000"}
        },
        tags={"note": f"pw={s['T2V_TEST_SERVICE_PASSWORD']}", "ray_auth_token": "anything"},
        artifacts={
            "config.yaml": config_file,
            "resolved.json": {"mlflow": {"tracking_password": "zzz"}, "k": s["AWS_SECRET_ACCESS_KEY"]},
            "log.txt": f"id={s['AWS_ACCESS_KEY_ID']}".encode(),
        },
    )
    run = tracker.client.get_run(run_id)
    assert run.data.params["s3.secret_access_key"] == "***"
    assert run.data.params["s3.endpoint"] == "http://u:***@minio:9000"
    assert run.data.tags["ray_auth_token"] == "***" and run.data.tags["note"] == "pw=***"
    assert run.info.run_name == "run ***"
    art = _artifact_dir(store, "redact", run_id)
    texts = {p.name: p.read_text() for p in art.rglob("*") if p.is_file()}
    assert texts["config.yaml"] == "s3:\n  key_id: ***\n" and texts["log.txt"] == "id=***"
    assert '"tracking_password": "***"' in texts["resolved.json"]
    blob = "\n".join([*texts.values(), run.info.run_name, repr(run.data.params), repr(run.data.tags)])
    _assert_no_secret(blob)
    assert "zzz" not in blob and "pw-in-url" not in blob


def test_failed_logging_marks_child_failed(make_tracker, tmp_path):
    tracker = make_tracker("experts")
    with pytest.raises(FileNotFoundError):
        tracker.log_child("", "broken", artifacts={"missing.bin": tmp_path / "nope.bin"})
    (run,) = tracker.find_runs("attributes.run_name = 'broken'")
    assert run.info.status == "FAILED"
    with pytest.raises(RuntimeError), tracker.parent_run("boom") as parent_id:
        raise RuntimeError("stage crashed")
    assert tracker.client.get_run(parent_id).info.status == "FAILED"


def test_children_logged_from_threads_stay_separate(make_tracker):
    tracker: Tracker = make_tracker("grid")
    with tracker.parent_run("threads") as parent_id:

        def child(i: int) -> str:
            tags = run_tags("grid", task_id=f"t{i}", expert_id=f"e{i}")
            name = run_name("grid", task_id=f"t{i}", expert_id=f"e{i}")
            return tracker.log_child(parent_id, name, params={"i": i}, metrics={"err": i / 10}, tags=tags)

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(child, range(6)))
    for i, run_id in enumerate(ids):
        run = tracker.client.get_run(run_id)
        assert run.data.params == {"i": str(i)} and run.data.metrics == {"err": i / 10}
        assert (run.data.tags["task_id"], run.data.tags["expert_id"]) == (f"t{i}", f"e{i}")
        assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert len(tracker.find_runs({"mlflow.parentRunId": parent_id, "expert_id": "e3"})) == 1


def test_a_run_left_running_by_a_killed_driver_is_marked_failed_by_the_next_run(make_tracker):
    import subprocess

    from t2v_ray.track.tracker import TAG_DRIVER_HOST, TAG_DRIVER_PID

    tracker = make_tracker("stale")
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now free: the driver that "owned" the run below is gone
    host = __import__("socket").gethostname()
    tags = {"stage": "embed", "out": "/data/out-a"}
    orphan = tracker.start_run("embed:killed", {**tags, TAG_DRIVER_HOST: host, TAG_DRIVER_PID: str(dead.pid)})
    legacy = tracker.start_run("embed:old", tags)  # written before driver tags existed
    alive = tracker.start_run(
        "embed:live", {**tags, TAG_DRIVER_HOST: host, TAG_DRIVER_PID: "1"}
    )  # pid 1 lives
    other_out = tracker.start_run(
        "embed:other", {"stage": "embed", "out": "/data/out-b", TAG_DRIVER_HOST: host}
    )
    with tracker.parent_run("embed:next", tags=tags) as new_id:
        status = {
            r: tracker.client.get_run(r).info.status for r in (orphan, legacy, alive, other_out, new_id)
        }
    assert status == {
        orphan: "FAILED",
        legacy: "FAILED",
        alive: "RUNNING",
        other_out: "RUNNING",
        new_id: "RUNNING",
    }
    assert tracker.client.get_run(new_id).info.status == "FINISHED"
