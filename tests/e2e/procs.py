"""Start services for the e2e tests and stop exactly what was started (STACK pitfall 10: never ``ray stop``).

Each service runs in its own session (process group). Stopping one signals its group, every descendant found
in /proc, and, for a Ray head, every process whose command line names the head's private temp dir (Ray
workers and job drivers that were re-parented away from the head). Nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# What every process the e2e tests start gets (STACK pitfalls 1, 5, 8, 15, 16).
BASE_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_worker_niceness": "0",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (held open together so the OS cannot hand one out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def related_pids(root: int, mention: str | None = None) -> set[int]:
    """Descendants of ``root``, members of its process group, and processes naming ``mention``."""
    children: dict[int, list[int]] = {}
    group = set()
    named = set()
    for pid in _all_pids():
        fields = _stat(pid)
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(pid)
        if int(fields[2]) == root:
            group.add(pid)
        if mention:
            with contextlib.suppress(OSError):
                if mention.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    named.add(pid)
    tree, stack = set(), [root]
    while stack:
        for c in children.get(stack.pop(), []):
            tree.add(c)
            stack.append(c)
    return (tree | group | named | {root}) - {os.getpid()}


@dataclass
class Service:
    """A started process tree and its combined stdout/stderr log."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    mention: str | None = None  # e.g. a Ray head's temp dir
    pids_seen: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> set[int]:
        found = related_pids(self.proc.pid, self.mention)
        self.pids_seen |= found
        return found

    def stop(self, grace: float = 5.0) -> set[int]:
        """SIGTERM the tree, SIGKILL what is left after ``grace``; returns the pids that were signalled."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = {p for p in self.pids() if alive(p)}
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(alive(p) for p in self.pids() - {self.proc.pid}):
                time.sleep(0.2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace if sig == signal.SIGTERM else 30)
            if not any(alive(p) for p in self.pids()):
                break
        return self.pids_seen

    def survivors(self) -> list[int]:
        return sorted(p for p in self.pids_seen | self.pids() if alive(p))


def start(
    name: str, cmd: list[str], env: dict[str, str], log_dir: Path, mention: str | None = None
) -> Service:
    """Start ``cmd`` in a new session with its output in ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, proc, log_path, mention)


def wait_http(url: str, service: Service, timeout: float, expect: bytes | None = None) -> None:
    """Poll ``url`` until it answers 200 (and contains ``expect``); fail early when the service exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited {service.proc.returncode}:\n{service.log()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200 and (expect is None or expect in r.read()):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{service.name}: {url} not up after {timeout}s:\n{service.log()[-3000:]}")
