"""Leases: a claim object per work item (owner + expiry, written atomically) so that several runs writing into
one output share the work instead of computing everything twice.

A lease is ``<root>/<item>.json`` holding ``{"owner", "host", "pid", "expires", "state"}``. A run takes an item
only when no live lease of another owner holds it; a running lease is stale when it has expired, or when its owner
ran on this host and that process is gone (a driver killed with -9), and a stale lease is taken over. A finished
item keeps a ``done`` lease until it expires, whoever owned it, so a run that read the results before they were
stored does not compute them again (it re-reads them instead). Object stores have no atomic
create-if-absent here, so :meth:`LeaseBook.claim` writes, then reads back: of two runs claiming at once the last
writer wins and the other sees a foreign owner and backs off (the loser may have started nothing yet: claims
happen right before dispatch).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from typing import Any

from t2v_ray.data import storage


def _safe(item: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", item)[:150] + ".json"


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists on this host (also when owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LeaseBook:
    """The leases of one run under ``root`` (a folder or ``s3://`` prefix).

    Args:
        root: where lease objects live, e.g. ``<out>/embeddings.parquet.leases``.
        ttl_seconds: how long a lease holds without renewal.
    """

    def __init__(self, root: str, ttl_seconds: float = 600.0) -> None:
        self.root, self.ttl = root, float(ttl_seconds)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.held: set[str] = set()

    def _uri(self, item: str) -> str:
        return storage.join(self.root, _safe(item))

    def read(self, item: str) -> dict[str, Any] | None:
        """The lease on ``item`` or None (absent or unreadable: a torn lease holds nothing)."""
        uri = self._uri(item)
        try:
            return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None
        except (OSError, ValueError):
            return None

    def held_by_other(self, lease: dict[str, Any] | None) -> bool:
        """True when ``lease`` is live and not ours."""
        if not lease or float(lease.get("expires", 0)) < time.time():
            return False
        if lease.get("state") == "done":
            return True
        if lease.get("owner") == self.owner:
            return False
        return not (lease.get("host") == self.host and not pid_alive(int(lease.get("pid", -1))))

    def claim(self, item: str) -> bool:
        """Take ``item`` unless another live owner holds it; True when this run now holds it."""
        if self.held_by_other(self.read(item)):
            return False
        self._write(item)
        if (self.read(item) or {}).get("owner") != self.owner:  # lost a simultaneous claim
            return False
        self.held.add(item)
        return True

    def renew(self, items: set[str] | None = None) -> None:
        """Push the expiry of held leases (all, or ``items``) ``ttl`` seconds ahead."""
        for item in self.held if items is None else self.held & items:
            self._write(item)

    def finish(self, item: str) -> None:
        """Mark ``item`` done (its result is stored): other runs skip it until the lease expires."""
        if item in self.held:
            self.held.discard(item)
            self._write(item, state="done")

    def release(self, item: str) -> None:
        """Drop our lease on ``item`` (the result is stored; nobody needs to wait for it)."""
        if item in self.held:
            self.held.discard(item)
            if (self.read(item) or {}).get("owner") == self.owner:
                storage.delete(self._uri(item))

    def release_all(self) -> None:
        for item in list(self.held):
            self.release(item)

    def _write(self, item: str, state: str = "running") -> None:
        body = {"owner": self.owner, "host": self.host, "pid": self.pid, "expires": time.time() + self.ttl}
        body["state"] = state
        storage.write_bytes_atomic(self._uri(item), json.dumps(body).encode())
