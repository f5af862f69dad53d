"""Shared fixtures: a moto S3 server on 127.0.0.1, a small offline glyph library, a synthetic results root.

Both are session-scoped because they are expensive relative to a unit test and read-only for their users:
tests that need a clean S3 namespace ask ``s3_server.make_bucket()`` for a fresh bucket instead of a new server.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# No network here: Ray must not try to phone home, whichever test imports it first.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Without this botocore probes 169.254.169.254 for instance credentials and stalls for seconds.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    """Handle on a running moto server.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``; also exported as ``AWS_ENDPOINT_URL`` for the session.
        buckets: names created through :meth:`make_bucket`, in creation order.
    """

    endpoint: str
    buckets: list[str] = field(default_factory=list)

    def client(self):
        """A boto3 S3 client bound to this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=_S3_ENV["AWS_DEFAULT_REGION"])

    def make_bucket(self, prefix: str = "t2v") -> str:
        """Create a bucket with a unique name and return that name (S3 names need >= 3 chars, lowercase)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def uri(self, bucket: str, *parts: str) -> str:
        """``s3://bucket/part/...`` for a key inside ``bucket``."""
        key = "/".join(p.strip("/") for p in parts if p)
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's ThreadedMotoServer on a random free port with the AWS env pointed at it."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO: thousands of lines per library build drown real test output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Port 0 lets the OS pick a free port atomically; get_host_and_port reads back the real one.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**_S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3Server(endpoint=endpoint)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="session")
def small_glyph_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the ``--small`` glyph library (seed 0) once per session and return its folder."""
    from t2v_ray.data.builders.glyphs import build_glyphs

    out = tmp_path_factory.mktemp("glyphs-small") / "library"
    build_glyphs(str(out), small=True, seed=0, processes=1, contact_sheet=False)
    return out


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic results root (embeddings, grid, experts, library) with a known answer: tests/report/synth.py."""
    from tests.report.synth import make_results

    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def evaluated(synth):
    """(table, details) of the taxonomy protocol on the synthetic root (MODEL2VEC LOO is the slow part)."""
    from t2v_ray.report.evaluate import evaluate_selection

    r = synth.root
    return evaluate_selection(
        str(r / "embeddings.parquet"),
        str(r / "grid.parquet"),
        str(r / "experts.parquet"),
        str(r / "library"),
        protocol="taxonomy",
        n_boot=200,
        seed=0,
    )
