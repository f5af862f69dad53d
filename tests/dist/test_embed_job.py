"""``ray job submit`` of ``jobs/embed.py`` to a Ray head started by the test, which then stops only that head.

``ray stop`` would kill every Ray process on the host (STACK pitfall 10), including other users' sessions, so the
head runs in the foreground (``--block``) in its own session and the test kills exactly its process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from t2v_ray.dist.results import ResultStore
from tests.dist.conftest import build_synthetic_library

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


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (sockets held open together so the OS cannot hand one out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc (no psutil in the venv)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, stack = set(), [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.add(c)
            stack.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_tree(proc: subprocess.Popen, grace: float = 3.0) -> set[int]:
    """SIGTERM ``proc`` and all its descendants, SIGKILL what is left after ``grace``; returns their pids.

    The grace is short on purpose: the raylet and autoscaler monitor take 10+ s to shut down cleanly, and a
    throwaway test head has nothing worth a clean shutdown.
    """
    pids = descendants(proc.pid) | {proc.pid}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids - {proc.pid}):
            time.sleep(0.2)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
    return pids


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[dict]:
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    temp_dir = tempfile.mkdtemp(prefix="t2vhead-", dir="/tmp")  # short: unix socket paths are limited
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # STACK pitfall 1
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_worker_niceness": "0",
        "RAY_TMPDIR": temp_dir,
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}", "--num-cpus=2"]
    cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1"]
    cmd += [f"{flag}={port}" for flag, port in ports.items()]
    log = open(tmp_path / "head.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        wait_for_http(f"{dashboard}/api/version", proc, timeout=120)
        yield {"dashboard": dashboard, "env": env, "proc": proc}
    finally:
        pids = stop_tree(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not [p for p in pids if alive(p)], "processes of the test's Ray head survived"


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout} s")


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
        "mlflow": {"enabled": False},
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

    rows = ResultStore(out).read().to_pylist()
    assert sorted(r["task_id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"ok"}
    saved = yaml.safe_load((Path(out) / "embed_config.yaml").read_text())
    assert saved["embed"]["seed"] == 3 and saved["input_size"] == 32  # override applied, config resolved
    summary = json.loads((Path(out) / "embed_summary.json").read_text())
    assert (summary["ok"], summary["error"]) == (len(ids), 0)
