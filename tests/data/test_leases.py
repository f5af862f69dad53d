"""Leases: a live lease of another owner blocks a claim; expired, dead-owner and own leases do not; done blocks."""

from __future__ import annotations

import json
import subprocess
import time

from t2v_ray.data.leases import LeaseBook


def test_claims_between_two_runs(tmp_path):
    a, b = LeaseBook(str(tmp_path)), LeaseBook(str(tmp_path))
    assert a.claim("task-1") and a.claim("task-1")  # taking one's own lease again is fine
    assert not b.claim("task-1")  # live, other owner
    a.release("task-1")
    assert b.claim("task-1")
    b.finish("task-1")
    assert not a.claim("task-1")  # done: the result is stored, nobody recomputes it while the lease lasts
    assert json.loads((tmp_path / "task-1.json").read_text())["state"] == "done"


def test_expired_and_dead_owner_leases_are_taken_over(tmp_path):
    short = LeaseBook(str(tmp_path), ttl_seconds=0.05)
    assert short.claim("t")
    time.sleep(0.1)
    assert LeaseBook(str(tmp_path)).claim("t")  # expired
    dead = subprocess.Popen(["true"])
    dead.wait()
    ghost = LeaseBook(str(tmp_path))
    ghost.pid = dead.pid  # a driver on this host that was killed with -9
    assert ghost.claim("u")
    assert LeaseBook(str(tmp_path)).claim("u")


def test_a_torn_lease_holds_nothing(tmp_path):
    (tmp_path / "t.json").write_text('{"owner": "x", "expi')
    assert LeaseBook(str(tmp_path)).claim("t")
