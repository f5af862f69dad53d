"""A local autoscaling Ray cluster on Ray's fake multi-node provider, started and stopped without touching any
other Ray process on the host.

``ray.cluster_utils.AutoscalingCluster`` is not usable here: its ``start``/``shutdown`` run ``ray stop --force``
(kills every Ray process of every user session on the machine) and it reads ``fake_multi_node/example.yaml``,
which the ray 2.60.0 wheel does not ship. This helper writes the full autoscaler config itself, runs
``ray start --head --block`` in its own session with its own port and ``--temp-dir``, and on exit stops only
processes whose command line names that temp dir.

Usage::

    with FakeMultiNodeCluster(worker_types={"gpu.worker": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 2}}) as c:
        ray.init(address=c.address)
        ...  # tasks/actors needing GPU make the autoscaler add up to 2 fake worker nodes
        c.wait_for_workers(0, timeout=60)  # idle nodes go away after idle_timeout_minutes
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
from pathlib import Path

HEAD_TYPE = "ray.head.default"  # the fake provider hard-codes this name for the head


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            pids.append(int(entry))
    return pids


class FakeMultiNodeCluster:
    """Head + autoscaled fake worker nodes (separate raylets on this machine)."""

    def __init__(
        self,
        worker_types: dict[str, dict],
        head_resources: dict[str, int] | None = None,
        max_workers: int | None = None,
        idle_timeout_minutes: float = 0.1,
        include_dashboard: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.head_resources = dict(head_resources or {"CPU": 0})
        self.worker_types = {
            name: {"min_workers": 0, "node_config": {}, **spec} for name, spec in worker_types.items()
        }
        self.max_workers = max_workers or sum(t.get("max_workers", 1) for t in self.worker_types.values())
        self.idle_timeout_minutes = idle_timeout_minutes
        self.include_dashboard = include_dashboard
        self.extra_env = env or {}
        self.port = 0
        self.dashboard_port: int | None = None
        self.temp_dir = ""
        self._head: subprocess.Popen | None = None

    # ------------------------------------------------------------------ config
    def autoscaler_config(self) -> dict:
        """Everything the v1 autoscaler reads (it does not fill defaults for this provider)."""
        return {
            "cluster_name": "t2v-fake",
            "max_workers": self.max_workers,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "provider": {
                "type": "fake_multinode",
                "gcs_address": f"127.0.0.1:{self.port}",  # default would be <node ip>:6379
                "use_node_id_as_ip": True,  # fake nodes share one IP: key load metrics by node id
                "disable_node_updaters": True,  # nothing to SSH into; else nodes are killed as "launch failed"
                "launch_multiple": True,  # else one node per launch request, whatever the count
            },
            "auth": {"ssh_user": "ubuntu"},  # read even though never used
            "docker": {},
            "available_node_types": {
                HEAD_TYPE: {"resources": self.head_resources, "node_config": {}, "max_workers": 0},
                **self.worker_types,
            },
            "head_node_type": HEAD_TYPE,
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dashboard_port}" if self.dashboard_port else None

    def env(self) -> dict[str, str]:
        """Environment for the head and for any driver/CLI talking to this cluster."""
        return {
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_worker_niceness": "0",
            **self.extra_env,
        }

    def start(self, timeout: float = 120) -> FakeMultiNodeCluster:
        # Short path: Ray's unix sockets live under it (limit ~107 chars).
        self.temp_dir = tempfile.mkdtemp(prefix="t2vfm-", dir="/tmp")
        self.port = _free_port()
        cfg_path = Path(self.temp_dir) / "autoscaling.json"
        cfg_path.write_text(json.dumps(self.autoscaler_config()))
        res = dict(self.head_resources)
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={res.pop('CPU', 0)}",
            f"--num-gpus={res.pop('GPU', 0)}",
            f"--autoscaling-config={cfg_path}",
            f"--ray-client-server-port={_free_port()}",
            "--disable-usage-stats",
        ]
        if res:
            cmd.append(f"--resources={json.dumps(res)}")
        if self.include_dashboard:
            self.dashboard_port = _free_port()
            cmd += [
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            cmd.append("--include-dashboard=false")
        env = {**os.environ, **self.env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        log = open(Path(self.temp_dir) / "head.log", "w")  # noqa: SIM115 - owned by the child
        self._head = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                raise RuntimeError(f"ray start exited {self._head.returncode}: {self.head_log()[-2000:]}")
            if "Ray runtime started" in self.head_log():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"head not up after {timeout}s: {self.head_log()[-2000:]}")

    def head_log(self) -> str:
        p = Path(self.temp_dir) / "head.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def monitor_log(self) -> str:
        p = Path(self.temp_dir) / "session_latest" / "logs" / "monitor.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, grace: float = 10) -> None:
        """Stop the head, then any process still naming our temp dir (fake worker raylets ignore SIGTERM
        while their GCS is gone): SIGTERM, then SIGKILL after ``grace`` seconds. Nothing else is touched."""
        if self._head is not None and self._head.poll() is None:
            self._head.send_signal(signal.SIGTERM)
            try:
                self._head.wait(grace)
            except subprocess.TimeoutExpired:
                self._head.kill()
                self._head.wait()
        if self.temp_dir:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = _pids_mentioning(self.temp_dir)
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                end = time.monotonic() + grace
                while pids and time.monotonic() < end:
                    pids = _pids_mentioning(self.temp_dir)
                    time.sleep(0.2)
                if not pids:
                    break
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> FakeMultiNodeCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ observation
    @staticmethod
    def worker_count() -> int:
        """Alive worker nodes (all alive nodes but the head) as the GCS sees them; needs ray.init(address)."""
        import ray

        return sum(1 for n in ray.nodes() if n["Alive"]) - 1

    def wait_for_workers(self, n: int, timeout: float = 60, poll: float = 0.5) -> float:
        """Block until exactly ``n`` workers are alive; return the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.worker_count() == n:
                return time.monotonic() - t0
            time.sleep(poll)
        raise TimeoutError(
            f"{self.worker_count()} workers alive, wanted {n}; monitor log:\n{self.monitor_log()[-3000:]}"
        )
