"""S3 faults: a stalled endpoint (moto frozen with SIGSTOP), an unreachable one, a wrong bucket, denied access.

The stall tests start their own ``moto_server`` process (the session's in-process moto cannot be paused) and
only ever signal that process. Before the storage layer retried, a frozen endpoint failed every call after
~10 s (pyarrow: 3 attempts x 3 s request timeout), so the stall here is longer than that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from t2v_ray.data import storage
from t2v_ray.data.library import LibraryError, TaskLibrary
from t2v_ray.results.embeddings import embedding_store

from ..e2e.procs import Service, free_ports, start, wait_http

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OLD_SURVIVAL_S = 11.0  # measured: the old code's calls died 10.3-11.0 s into a stall
STALL_S = 13.0
PATIENCE_S = 20.0
PATIENCE_ENV = "T2V_S3_PATIENCE_S"  # spelled out: the fault tests must also run against code without it
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def moto_proc(tmp_path_factory) -> Iterator[tuple[Service, str]]:
    """A ``moto_server`` process of our own on 127.0.0.1 and its endpoint."""
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    service = start("moto-faults", cmd, env, tmp_path_factory.mktemp("moto-faults"))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", service, timeout=60)
        yield service, endpoint
    finally:
        # Never leave it stopped: a stopped process does not act on SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.kill(service.proc.pid, signal.SIGCONT)
        service.stop()


@pytest.fixture
def s3_env(moto_proc, monkeypatch) -> str:
    """Point AWS_* at our moto process with ``PATIENCE_S``; returns a fresh bucket's URI."""
    import uuid

    import boto3

    _, endpoint = moto_proc
    for k, v in {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint, PATIENCE_ENV: str(PATIENCE_S)}.items():
        monkeypatch.setenv(k, v)
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@contextlib.contextmanager
def frozen(service: Service, seconds: float | None = None) -> Iterator[None]:
    """SIGSTOP our moto process; SIGCONT after ``seconds`` (from a timer) or on leaving the block."""
    pid = service.proc.pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT)) if seconds else None
    try:
        if timer:
            timer.start()
        yield
    finally:
        if timer:
            timer.join()
        os.kill(pid, signal.SIGCONT)


def _in_thread(fn, results: dict, name: str) -> threading.Thread:
    def run():
        try:
            results[name] = fn()
        except Exception as err:  # reported by the assertions below
            results[name] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_stall_shorter_than_the_patience_completes_a_write_and_a_read(moto_proc, s3_env, caplog):
    assert OLD_SURVIVAL_S < STALL_S < PATIENCE_S
    storage.write_bytes_atomic(f"{s3_env}/old.bin", b"before the stall")
    table = pa.table({"task_id": ["a", "b"], "x": [1.0, 2.0]})
    results: dict = {}
    caplog.set_level(logging.WARNING, logger="t2v_ray.data.retry")
    with frozen(moto_proc[0], STALL_S):
        threads = [
            _in_thread(
                lambda: storage.write_parquet_atomic(table, f"{s3_env}/new.parquet"), results, "write"
            ),
            _in_thread(lambda: storage.read_bytes(f"{s3_env}/old.bin"), results, "read"),
        ]
        for t in threads:
            t.join(timeout=PATIENCE_S + 30)
    assert results == {"write": None, "read": b"before the stall"}
    assert storage.read_parquet(f"{s3_env}/new.parquet").equals(table)
    # The stall was felt and waited out, not missed: each call logged its retry.
    retried = [r.getMessage() for r in caplog.records if "retrying for up to 20 s" in r.getMessage()]
    assert sorted(m.split(" s3://")[0] for m in retried) == ["reading", "writing"]


def test_a_stall_longer_than_the_patience_names_the_endpoint_and_keeps_flushed_rows(
    moto_proc, s3_env, monkeypatch
):
    monkeypatch.setenv(PATIENCE_ENV, "3")
    service, endpoint = moto_proc
    out = f"{s3_env}/run"
    first = embedding_store(out, flush_rows=1)
    first.add({"task_id": "t1", "status": "ok"})  # flushed: one part file
    with frozen(service), pytest.raises(Exception, match=f"cannot reach S3 endpoint {endpoint} ") as info:
        first.add({"task_id": "t2", "status": "ok"})
    assert "writing s3://" in str(info.value) and "T2V_S3_PATIENCE_S" in str(info.value)
    # The endpoint is back: the flushed row survived (the abandoned write may also land whole once moto
    # resumes: it was a complete request), and a rerun adds what may have been lost.
    rerun = embedding_store(out, flush_rows=1)
    assert "t1" in [r["task_id"] for r in rerun.read().to_pylist()]
    rerun.add({"task_id": "t2", "status": "ok"})
    assert sorted(r["task_id"] for r in rerun.compact().to_pylist()) == ["t1", "t2"]


def _t2v(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "t2v_ray.cli", *args]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_validate_on_an_unreachable_endpoint_says_so_and_exits_2():
    (port,) = free_ports(1)  # nothing listens there: connection refused
    endpoint = f"http://127.0.0.1:{port}"
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint, PATIENCE_ENV: "1"}
    done = _t2v(["library", "validate", "s3://some-bucket/lib"], env)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"cannot reach S3 endpoint {endpoint}" in " ".join(output.split())  # rich may wrap lines
    assert "Traceback" not in output


def test_a_missing_bucket_is_named_with_the_endpoint_not_called_not_a_library(s3_server):
    # What a wrong endpoint that answers 404 to everything looks like, too.
    with pytest.raises(LibraryError, match=f"no bucket 'no-such-bucket' at S3 endpoint {s3_server.endpoint}"):
        TaskLibrary.open("s3://no-such-bucket/lib")
    bucket = s3_server.make_bucket()
    with pytest.raises(LibraryError, match="no tasks.parquet"):  # the bucket exists: the old message fits
        TaskLibrary.open(s3_server.uri(bucket, "lib"))


def test_a_denied_read_is_a_clear_library_error_and_validate_exits_2(monkeypatch):
    from t2v_ray.data.validate import validate_library

    denied = "AWS Error ACCESS_DENIED during HeadObject operation: No response body."

    def refuse(uri):
        raise OSError(denied)

    monkeypatch.setattr(storage, "exists", refuse)
    with pytest.raises(LibraryError, match=f"s3://b/lib: cannot read \\({denied}"):
        TaskLibrary.open("s3://b/lib")
    report = validate_library("s3://b/lib")
    assert (report.exit_code, report.summary()) == (2, f"UNUSABLE: s3://b/lib: cannot read ({denied})")


class Failing:
    """A callable raising ``OSError(text)`` on its first ``failures`` calls (all calls when None)."""

    def __init__(self, text: str, failures: int | None = None):
        self.text, self.failures, self.calls = text, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise OSError(self.text)
        return "data"


@pytest.mark.parametrize(
    "text",
    [
        "When reading 'k': AWS Error ACCESS_DENIED during GetObject operation: Access Denied",
        "AWS Error NO_SUCH_BUCKET during HeadBucket operation: The specified bucket does not exist",
        "AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: No response body.",
        "Parquet magic bytes not found in footer",
    ],
)
def test_permanent_errors_fail_at_once(text, monkeypatch):
    monkeypatch.setenv(PATIENCE_ENV, "60")
    fn = Failing(text)
    with pytest.raises(OSError) as info:
        storage.call_with_retries(fn, "reading s3://b/k")
    assert (str(info.value), fn.calls) == (text, 1)


@pytest.mark.parametrize(
    "text",
    [
        "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 28, Timeout was reached",
        "AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.",
        "AWS Error UNKNOWN (HTTP status 503) during GetObject operation: Service Unavailable",
    ],
)
def test_transient_errors_are_retried(text):
    fn = Failing(text, failures=2)
    policy = storage.RetryPolicy(patience_s=60, first_delay_s=0)
    assert storage.call_with_retries(fn, "reading s3://b/k", policy) == "data"
    assert fn.calls == 3
    assert not storage.is_transient_error(FileNotFoundError("Path does not exist 'b/k'"))
    assert not storage.is_transient_error(pa.ArrowInvalid("Could not open Parquet input source"))


def test_the_patience_comes_from_the_environment(monkeypatch):
    assert storage.PATIENCE_ENV == PATIENCE_ENV
    monkeypatch.delenv(PATIENCE_ENV, raising=False)
    assert storage.retry_policy().patience_s == 300  # default: S3 blips and throttling last minutes
    monkeypatch.setenv(PATIENCE_ENV, "20")
    policy = storage.retry_policy()
    assert policy.patience_s == 20
    # A stalled request must fail (and be retried) several times within the patience: 3 SDK attempts each.
    assert 3 * 3 * policy.request_timeout_s <= policy.patience_s
    monkeypatch.setenv(PATIENCE_ENV, "soon")
    with pytest.raises(ValueError, match="T2V_S3_PATIENCE_S='soon' is not a number of seconds"):
        storage.retry_policy()
