"""``ray job submit`` of ``jobs/embed.py`` to a Ray head started by the test, which then stops only that head.

``ray stop`` would kill every Ray process on the host (STACK pitfall 10), including other users' sessions, so the
head runs in the foreground (``--block``) in its own session and the test kills exactly its process tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from t2v_ray.results.embeddings import embedding_store
from tests.distributed.conftest import build_synthetic_library
from tests.e2e.procs import BASE_ENV, free_ports, start, wait_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[dict]:
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    temp_dir = tempfile.mkdtemp(prefix="t2vhead-", dir="/tmp")  # short: unix socket paths are limited
    env = {**os.environ, **BASE_ENV, "RAY_TMPDIR": temp_dir}  # BASE_ENV: auth off, niceness 0, no usage stats
    env.pop("RAY_ADDRESS", None)
    cmd = [RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}", "--num-cpus=2"]
    cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1"]
    cmd += [f"{flag}={port}" for flag, port in ports.items()]
    # Its own session; stopping signals only its process tree and processes naming its temp dir.
    head = start("head", cmd, env, tmp_path, mention=temp_dir)
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        wait_http(f"{dashboard}/api/version", head, timeout=120)
        yield {"dashboard": dashboard, "env": env}
    finally:
        # A short grace on purpose: the raylet and autoscaler monitor take 10+ s to shut down cleanly, and a
        # throwaway test head has nothing worth a clean shutdown.
        head.stop(grace=3.0)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not head.survivors(), "processes of the test's Ray head survived"


def test_job_submit_embeds_library_and_stops_only_its_head(ray_head, tmp_path: Path):
    library, out = str(tmp_path / "lib"), str(tmp_path / "out")
    ids = build_synthetic_library(library, n_tasks=3)
    config = {
        "library": library,
        "out": out,
        "probe": "small_cnn",
        "weights": None,
        "input_size": 32,
        "actors": 1,  # one torch import less on a 2-core machine; scaling is tested in test_embed.py
        "progress": False,
        "embed": {"max_samples": 100, "head": {"epochs": 1, "epoch_size": 300}},
        "tracking": {"enabled": False},
    }
    cfg_path = tmp_path / "embed.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    runtime_env = {
        "excludes": [".venv", "t2v-data", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache"]
    }
    cmd = [RAY, "job", "submit", "--address", ray_head["dashboard"], "--working-dir", str(REPO)]
    cmd += ["--runtime-env-json", json.dumps(runtime_env), "--", sys.executable, "jobs/embed.py"]
    cmd += ["--config", str(cfg_path), "embed.seed=3"]
    res = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout

    rows = embedding_store(out).read().to_pylist()
    assert sorted(r["task_id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"ok"}
    saved = yaml.safe_load((Path(out) / "embed_config.yaml").read_text())
    assert saved["embed"]["seed"] == 3 and saved["input_size"] == 32  # override applied, config resolved
    summary = json.loads((Path(out) / "embed_summary.json").read_text())
    assert (summary["ok"], summary["error"]) == (len(ids), 0)
