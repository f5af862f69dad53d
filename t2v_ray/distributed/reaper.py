"""Stop the local Ray processes a driver started when that driver is killed with -9.

Ray's raylet and GCS exit with their driver, but the agents they spawn (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) are re-parented to init and live on (measured: both left behind after ``kill -9`` of a
``t2v embed`` driver). :func:`start_reaper` forks a small watcher, in its own session so it survives the driver,
that remembers the Ray processes in the driver's tree while the driver lives and, once the driver is gone,
terminates those still running (a process is matched by pid and start time, so a reused pid is never hit). Linux only (``/proc``); elsewhere it does nothing.

    python -m t2v_ray.distributed.reaper DRIVER_PID
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def start_reaper(driver_pid: int | None = None) -> subprocess.Popen | None:
    """Start the watcher for ``driver_pid`` (default: this process); None where ``/proc`` is missing."""
    if not PROC.is_dir():
        return None
    pid = driver_pid or os.getpid()
    cmd = [sys.executable, "-m", "t2v_ray.distributed.reaper", str(pid)]
    return subprocess.Popen(
        cmd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): a pid with another start time is another process."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(root: int) -> dict[int, str]:
    """``{pid: start time}`` of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is not None:
            out[pid] = start
            todo += children.get(pid, [])
    return out


def reap(known: dict[int, str], grace: float = 3.0) -> list[int]:
    """SIGTERM, then after ``grace`` seconds SIGKILL, the processes of ``known`` that still run; returns them."""
    alive = [p for p, start in known.items() if _start_time(p) == start]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in (p for p in alive if _start_time(p) == known[p]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_start_time(p) == known[p] for p in alive):
            time.sleep(0.1)
    return alive


def is_ray_process(pid: int) -> bool:
    """Ray's own processes: ``ray::…`` workers and agents, the raylet and GCS binaries, ``ray/…`` scripts."""
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return cmd.startswith("ray::") or "/ray/" in cmd or "gcs_server" in cmd or "raylet" in cmd


def watch(driver: int, poll: float = 1.0, settle: float = 5.0) -> list[int]:
    """Remember ``driver``'s tree until it exits; then give Ray ``settle`` seconds to clean up and reap the rest."""
    driver_start = _start_time(driver)
    known: dict[int, str] = {}
    while driver_start is not None and _start_time(driver) == driver_start:
        known.update({p: t for p, t in descendants(driver).items() if p not in known and is_ray_process(p)})
        time.sleep(poll)
    time.sleep(settle)
    return reap(known)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
