"""Faults of the embed driver: out of actor restarts, and SIGTERM mid-run. Nothing computed is lost, every task
gets a row, the summary is written, the exit code says what happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from t2v_ray.results.embeddings import embedding_store
from t2v_ray.stages.embed import run_embed
from tests.distributed.conftest import build_synthetic_library
from tests.distributed.test_embed import make_cfg
from tests.e2e.procs import BASE_ENV

pytestmark = pytest.mark.slow


def test_out_of_actor_restarts_gives_error_rows_and_a_summary(ray_session, tmp_path: Path):
    # Before: PoolExhausted surfaced as a RuntimeError traceback, the remaining tasks got no rows, no summary.
    library, out = str(tmp_path / "lib"), str(tmp_path / "out")
    ids = build_synthetic_library(library, n_tasks=4)
    cfg = make_cfg(library, out, actors=1, max_restarts=0, max_task_retries=0)
    killed: list[int] = []

    def kill_after_first(progress) -> None:
        if not killed and progress.done >= 1 and progress.in_flight:
            pid = next(iter(progress.in_flight.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = run_embed(cfg, callback=kill_after_first)
    assert killed
    rows = {r["task_id"]: r for r in embedding_store(out).read().to_pylist()}
    assert sorted(rows) == sorted(ids)  # every task has a row
    not_run = [t for t, r in rows.items() if "actor pool exhausted after 0 restarts" in (r["error"] or "")]
    assert not_run and all(rows[t]["status"] == "error" for t in not_run)
    assert summary.ok >= 1 and summary.ok + summary.error == len(ids)
    assert summary.aborted and f"{len(not_run)} of" in summary.aborted
    written = json.loads((Path(out) / "embed_summary.json").read_text())
    assert written["aborted"] == summary.aborted and written["ok"] == summary.ok


def test_sigterm_mid_run_saves_finished_rows_and_marks_the_mlflow_run_killed(tmp_path: Path):
    library, out = str(tmp_path / "lib"), tmp_path / "out"
    ids = build_synthetic_library(library, n_tasks=8)
    db = tmp_path / "mlflow.db"
    ray_tmp = tempfile.mkdtemp(prefix="t2vsig-", dir="/tmp")
    env = {**os.environ, **BASE_ENV, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    proc = _start_embed(library, out, env, "--tracking-uri", f"sqlite:///{db}")
    _wait_for_a_part(proc, out)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "interrupted; finished rows are saved" in stderr
    rows = embedding_store(str(out)).read().to_pylist()
    assert 1 <= len(rows) < len(ids) and {r["status"] for r in rows} == {"ok"}

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"]


def _start_embed(library: str, out: Path, env: dict, *extra: str) -> subprocess.Popen:
    t2v = str(Path(sys.executable).with_name("t2v"))
    cmd = [t2v, "embed", "--library", library, "--out", str(out), "--probe", "small_cnn", "--weights", "none"]
    cmd += ["--input-size", "32", "--actors", "1", "progress=false", "embed.max_samples=120"]
    cmd += ["embed.head.epochs=1", "embed.head.epoch_size=500", "local_cpus=2", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_part(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    parts = out / "embeddings.parquet.parts"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and any(p.name.startswith("part-") for p in parts.iterdir()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no row was saved while the run was alive (exit {proc.poll()})")


def test_a_driver_killed_with_minus_9_leaves_no_ray_process_behind(tmp_path: Path):
    # Before: ray::DashboardAgent and ray::RuntimeEnvAgent were re-parented to init and ran on.
    from t2v_ray.distributed.reaper import _start_time, descendants, is_ray_process

    library = str(tmp_path / "lib")
    build_synthetic_library(library, n_tasks=8)
    ray_tmp = tempfile.mkdtemp(prefix="t2vkill-", dir="/tmp")
    env = {**os.environ, **BASE_ENV, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    proc = _start_embed(library, tmp_path / "out", env, "tracking.enabled=false")
    _wait_for_a_part(proc, tmp_path / "out")
    ray_tree = {p: t for p, t in descendants(proc.pid).items() if is_ray_process(p)}
    assert len(ray_tree) >= 3, ray_tree  # raylet, GCS, agents, the actor
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_start_time(p) == t for p, t in ray_tree.items()):
        time.sleep(0.5)
    survivors = [p for p, t in ray_tree.items() if _start_time(p) == t]
    assert not survivors, [(p, (Path("/proc") / str(p) / "cmdline").read_bytes()[:60]) for p in survivors]


def test_two_concurrent_runs_into_one_output_compute_each_task_once(tmp_path: Path):
    # Before leases, both runs computed every task (12 computations for 6 tasks).
    import re

    library, out = str(tmp_path / "lib"), tmp_path / "out"
    ids = build_synthetic_library(library, n_tasks=6)
    procs = []
    for name in ("a", "b"):
        env = {**os.environ, **BASE_ENV, "RAY_TMPDIR": tempfile.mkdtemp(prefix=f"t2vl{name}-", dir="/tmp")}
        env.pop("RAY_ADDRESS", None)
        procs.append(_start_embed(library, out, env, "tracking.enabled=false", "local_cpus=1"))
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    computed = []
    for stdout, _ in outputs:
        counts = dict(re.findall(r"^\W*(ok|error)\W+(\d+)\W*$", stdout, flags=re.MULTILINE))
        computed.append(int(counts["ok"]) + int(counts["error"]))
    rows = embedding_store(str(out)).read().to_pylist()
    assert sorted(r["task_id"] for r in rows) == sorted(ids) and {r["status"] for r in rows} == {"ok"}
    assert sum(computed) == len(ids), computed  # shared, none twice
    states = {json.loads(p.read_text())["state"] for p in (out / "embeddings.parquet.leases").glob("*.json")}
    assert states <= {"done"}  # no task is left claimed
