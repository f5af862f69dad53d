"""Experts and the classifier grid on local Ray Tune + MLflow sqlite + moto S3 (one Ray session per module).

Experts and the main grid live on S3 (moto); the kill/resume grid writes to a local folder. Three experts
(generic = random-init small_cnn, and two fine-tuned for a few steps) × six tiny tasks = 18 pairs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2v_ray.config import to_dict
from t2v_ray.data import storage
from t2v_ray.distributed.tune_utils import TuneSettings
from t2v_ray.stages.experts import ExpertsConfig, run_experts
from t2v_ray.stages.grid import GridConfig, run_grid
from t2v_ray.track import TrackingSettings
from t2v_ray.train.classifier import ClassifierConfig
from t2v_ray.train.finetune import ExpertTrainConfig
from tests.train.tiny_tasks import TASKS, build_tiny_library

pytestmark = pytest.mark.slow

EXPERT_TRAIN = ExpertTrainConfig(
    head_epochs=1, head_lr=1e-2, finetune_epochs=6, lr=0.05, lr_milestones=(5,), epoch_size=256, batch_size=32
)
HEAD = ClassifierConfig(epochs=4, epoch_size=512, batch_size=32, lr=1e-2)
N_PAIRS = 3 * len(TASKS)
KILL_PAIRS = 2 * len(TASKS)


@dataclasses.dataclass
class World:
    tmp: Path
    library: str
    store: str  # s3:// root holding experts/, features/, grid.parquet
    tracking: TrackingSettings
    tune: TuneSettings
    experts_errors: list
    grid: object = None


def _runs(tracking: TrackingSettings, library: str, stage: str) -> list:
    from mlflow import MlflowClient

    from t2v_ray.track import experiment_name

    client = MlflowClient(tracking.uri)
    exp = client.get_experiment_by_name(experiment_name(library, stage))
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.fixture(scope="module")
def world(ray_session, s3_server, tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("grid")
    library = str(tmp / "library")
    build_tiny_library(library, n_train=24, n_test=8)
    store = s3_server.uri(s3_server.make_bucket(), "run")
    tracking = TrackingSettings(uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "mlartifacts"))
    tune = TuneSettings(cpus_per_trial=1, max_failures=1, storage_path=str(tmp / "tune"), verbose=0)
    cfg = ExpertsConfig(
        probe="small_cnn",
        weights=None,
        tasks=("quadrant", "shapes"),
        train=EXPERT_TRAIN,
        tune=tune,
        tracking=tracking,
    )
    errors = run_experts(dataclasses.replace(cfg, library=library, out=store)).errors
    w = World(tmp, library, store, tracking, tune, errors)
    gcfg = GridConfig(
        classifier=HEAD, tune=tune, tracking=tracking, library=library, expert_store=store, out=store
    )
    w.grid = run_grid(gcfg).grid
    return w


def test_experts_are_stored_on_s3_indexed_and_logged(world):
    assert world.experts_errors == []
    index = storage.read_parquet(storage.join(world.store, "experts.parquet"))
    sources = dict(
        zip(index.column("expert_id").to_pylist(), index.column("source_tasks").to_pylist(), strict=True)
    )
    assert sources == {"generic": [], "quadrant": ["quadrant"], "shapes": ["shapes"]}
    for e in sources:
        assert storage.exists(storage.join(world.store, "experts", e, "weights.pt"))
    runs = {r.data.tags["expert_id"]: r for r in _runs(world.tracking, world.library, "experts")}
    assert set(runs) == set(sources)
    from mlflow import MlflowClient

    client = MlflowClient(world.tracking.uri)
    trained = runs["quadrant"]
    assert len(client.get_metric_history(trained.info.run_id, "train_loss")) == EXPERT_TRAIN.finetune_epochs
    assert {a.path for a in client.list_artifacts(trained.info.run_id)} >= {"weights.pt", "expert.json"}


def test_grid_has_every_pair_once_ok_with_features_extracted_once_on_s3(world):
    rows = world.grid.to_pylist()
    assert len(rows) == N_PAIRS and len({(r["expert_id"], r["task_id"]) for r in rows}) == N_PAIRS
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    assert not any(r["features_cached"] for r in rows)  # each pair's one pass happened in this run
    files = [p for p, _ in storage.list_files(storage.join(world.store, "features")) if p.endswith(".npz")]
    assert len(files) == N_PAIRS
    assert storage.exists(storage.join(world.store, "grid.parquet"))
    trained = [r for r in rows if r["expert_id"] != "generic"]
    assert all(
        r["leep"] is not None and r["nce"] is not None for r in trained
    )  # fine-tuned experts have heads
    runs = _runs(world.tracking, world.library, "grid")
    pairs = sorted((r.data.params["expert_id"], r.data.params["task_id"]) for r in runs)
    assert pairs == sorted((r["expert_id"], r["task_id"]) for r in rows)
    assert all(r.info.status == "FINISHED" and "test_error" in r.data.metrics for r in runs)


def test_an_expert_beats_the_generic_expert_on_its_own_task(world):
    err = {(r["expert_id"], r["task_id"]): r["test_error"] for r in world.grid.to_pylist()}
    # Random-init globally pooled features cannot tell quadrants apart (chance: 0.75); the expert can.
    assert err[("quadrant", "quadrant")] < err[("generic", "quadrant")] - 0.4
    assert {r["task_id"] for r in world.grid.to_pylist() if r["is_source"]} == {"quadrant", "shapes"}


_DRIVER = """
import json, sys
from t2v_ray.config import from_dict
from t2v_ray.stages.grid import GridConfig, run_grid
run_grid(from_dict(GridConfig, json.loads(sys.argv[1])))
"""


def _records(out: Path) -> dict[tuple[str, str], dict]:
    recs = [json.loads(p.read_text()) for p in (out / "grid" / "pairs").rglob("*.json")]
    return {(r["expert_id"], r["task_id"]): r for r in recs}


def test_killed_driver_resumes_without_redoing_finished_pairs(world):
    import ray

    from t2v_ray.distributed.tune_utils import latest_restorable, state_key

    out = world.tmp / "killed"
    tune = dataclasses.replace(world.tune, ray_address=ray.get_runtime_context().gcs_address)
    cfg = GridConfig(experts=("generic", "quadrant"), classifier=HEAD, tune=tune, tracking=world.tracking)
    log = open(world.tmp / "driver.log", "wb")  # noqa: SIM115 - handed to the child process
    where = dict(library=world.library, expert_store=world.store, out=str(out))
    args = [sys.executable, "-c", _DRIVER, json.dumps(to_dict(dataclasses.replace(cfg, **where)))]
    child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.monotonic() + 240
    while len(_records(out)) < 4:
        assert child.poll() is None, (world.tmp / "driver.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the grid never got going"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = _records(out)
    assert 4 <= len(finished) < KILL_PAIRS, "kill came too late to interrupt the grid"
    prefix = f"grid-{state_key(world.library, world.store, str(out))}-"
    assert latest_restorable(world.tune.storage_path, prefix) is not None  # Tune state left behind to restore

    table = run_grid(dataclasses.replace(cfg, tune=world.tune, resume=True, **where)).grid
    rows = table.to_pylist()
    assert len(rows) == KILL_PAIRS and len({(r["expert_id"], r["task_id"]) for r in rows}) == KILL_PAIRS
    assert all(r["status"] == "ok" for r in rows)
    after = _records(out)
    for pair, rec in finished.items():
        assert after[pair]["attempt"] == rec["attempt"], f"{pair} was computed again"
    dirs = [n for n in os.listdir(world.tune.storage_path) if n.startswith(prefix)]
    assert len(dirs) == 1  # the interrupted experiment was restored, not replaced
    key = state_key(world.library, world.store, str(out))
    runs = [r for r in _runs(world.tracking, world.library, "grid") if r.data.tags.get("grid") == key]
    done = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted((r.data.tags["expert_id"], r.data.tags["task_id"]) for r in done) == sorted(_records(out))
    assert {r["mlflow_run_id"] for r in rows} == {
        r.info.run_id for r in done
    }  # one run per pair, no duplicates
