"""The cluster path for real, once per e2e package: moto S3, an ``mlflow server`` with S3 artifacts and a Ray head,
each in its own process on 127.0.0.1, then ``ray job submit`` of ``jobs/pipeline.py`` with the tiny config.

The credentials are recognisable fakes (moto accepts any) and live only where a cluster keeps them: in the
environment of the nodes (here: the Ray head, which job drivers and workers inherit) and of the MLflow server,
i.e. the standard AWS chain. The submitted runtime env carries endpoints and the tracking URI only, because Ray
stores and displays a job's runtime env. The security test greps every output for these values.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .procs import BASE_ENV, Service, free_ports, start, wait_http

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONFIG = "jobs/configs/tiny.yaml"
REGION = "us-east-1"

# Recognisable fake credentials; none may ever show up in an output (tests/e2e/test_security.py). A random part
# per session keeps them out of this source file, which the job's working-dir upload carries to the head.
_RUN = uuid.uuid4().hex[:12]
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": f"AKIAFAKEKEY{_RUN.upper()}",
    "AWS_SECRET_ACCESS_KEY": f"FAKESECRETxyz123{_RUN}NeverLogThis",
    "AWS_SESSION_TOKEN": f"FAKESESSIONTOKEN{_RUN}abcdefXYZ",
    "MLFLOW_TRACKING_PASSWORD": f"FAKEMLFLOWPASSWORD{_RUN}",
}
MLFLOW_USER = "t2v-e2e-user"  # not a secret; makes the MLflow client send the password with every request

# What `--working-dir .` must leave out even without .gitignore (README: .venv, t2v-data and outputs).
UPLOAD_EXCLUDES = [
    ".venv",
    "t2v-data",
    ".git",
    "outputs",
    "bench-results",
    "mlruns",
    "mlartifacts",
    "*.db",
    "**/__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
]


@dataclass
class SubmittedJob:
    """Everything a test needs to inspect one submitted pipeline run (services stay up until teardown)."""

    bucket: str
    prefix: str
    s3_endpoint: str
    mlflow_uri: str
    dashboard: str
    submission_id: str
    ray_temp_dir: Path
    mlflow_db: Path
    submit: subprocess.CompletedProcess
    services: dict[str, Service]
    seconds: dict[str, float] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)  # files that were in excluded dirs during the upload

    def s3(self):
        """boto3 client for the moto server (explicit credentials: the pytest process's env stays untouched)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=REGION,
            aws_access_key_id=FAKE_SECRETS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"],
        )

    def list_keys(self, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def get(self, key: str) -> bytes:
        return self.s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def job_api(self, suffix: str = "") -> dict:
        with urllib.request.urlopen(
            f"{self.dashboard}/api/jobs/{self.submission_id}{suffix}", timeout=30
        ) as r:
            return json.loads(r.read())

    def uploaded_package(self) -> Path | None:
        """The working-dir package as the head unpacked it (named in ``ray job submit``'s output)."""
        m = re.search(r"_ray_pkg_([0-9a-f]+)\.zip", self.submit.stdout + self.submit.stderr)
        if not m:
            return None
        found = list(self.ray_temp_dir.glob(f"session_*/runtime_resources/working_dir_files/_ray_pkg_{m[1]}"))
        return found[0] if found else None


def clean_env(**extra: str) -> dict[str, str]:
    """This process's env without Ray/AWS/MLflow settings (e.g. another fixture's moto creds), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the job entrypoint is the venv's
    return {**env, **BASE_ENV, **extra}


def start_services(work: Path, services: dict[str, Service]) -> dict[str, str]:
    """moto, MLflow server and Ray head; returns their URLs and the head's temp dir."""
    s3_port, mlflow_port, *ray_ports = free_ports(11)
    s3 = f"http://127.0.0.1:{s3_port}"
    services["moto"] = start(
        "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], clean_env(), work
    )
    wait_http(f"{s3}/moto-api/", services["moto"], timeout=60)
    bucket = f"t2v-e2e-{uuid.uuid4().hex[:10]}"
    node_env = clean_env(AWS_DEFAULT_REGION=REGION, MLFLOW_TRACKING_USERNAME=MLFLOW_USER, **FAKE_SECRETS)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3,
        region_name=REGION,
        aws_access_key_id=FAKE_SECRETS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_SECRETS["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)

    db = work / "mlflow.db"
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
    mlflow_cmd += ["--workers", "1", "--backend-store-uri", f"sqlite:///{db}"]
    mlflow_cmd += ["--artifacts-destination", f"s3://{bucket}/mlflow", "--serve-artifacts"]
    services["mlflow"] = start("mlflow", mlflow_cmd, {**node_env, "MLFLOW_S3_ENDPOINT_URL": s3}, work)

    temp_dir = tempfile.mkdtemp(prefix="t2ve2e-", dir="/tmp")  # short: Ray's unix sockets live under it
    flags = ["--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port"]
    flags += ["--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    flags += ["--node-manager-port", "--object-manager-port"]
    ports = dict(zip(flags, ray_ports, strict=True))
    ray_cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--temp-dir={temp_dir}", "--num-cpus=2"]
    ray_cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1"]
    ray_cmd += [f"{flag}={port}" for flag, port in ports.items()]
    services["ray"] = start("ray-head", ray_cmd, {**node_env, "RAY_TMPDIR": temp_dir}, work, mention=temp_dir)

    dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    wait_http(f"{dashboard}/api/version", services["ray"], timeout=180)
    wait_http(f"{mlflow_uri}/health", services["mlflow"], timeout=180)
    return {"s3": s3, "bucket": bucket, "mlflow": mlflow_uri, "dashboard": dashboard, "temp_dir": temp_dir}


def submit_pipeline(urls: dict[str, str], prefix: str, submission_id: str) -> subprocess.CompletedProcess:
    """``ray job submit`` as a user types it; blocks until the job ends, streaming its logs."""
    runtime_env = {
        "env_vars": {
            "AWS_ENDPOINT_URL": urls["s3"],
            "MLFLOW_S3_ENDPOINT_URL": urls["s3"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "MLFLOW_TRACKING_URI": urls["mlflow"],
        },
        "excludes": UPLOAD_EXCLUDES,
    }
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        urls["dashboard"],
        "--submission-id",
        submission_id,
    ]
    cmd += ["--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--"]
    cmd += ["python", "jobs/pipeline.py", "--config", CONFIG, f"storage=s3://{urls['bucket']}/{prefix}"]
    cmd += [f"tracking_uri={urls['mlflow']}"]
    # Ignore .gitignore so that the explicit excludes alone must keep .venv (~6 GB) and data out of the upload.
    env = clean_env(RAY_RUNTIME_ENV_IGNORE_GITIGNORE="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def upload_canaries() -> Iterator[list[str]]:
    """Files in excluded folders of the working dir while it is uploaded (removed afterwards).

    The job itself writes into its unpacked working dir (Tune state under ``t2v-data/``), so what the head holds
    afterwards cannot tell uploaded from written; these uniquely named files can.
    """
    made, dirs = [], []
    for folder in ("t2v-data", "outputs", "mlruns"):
        d = REPO / folder
        if not d.exists():
            d.mkdir()
            dirs.append(d)
        path = d / f"e2e-upload-canary-{_RUN}.txt"
        path.write_text("must not be uploaded\n")
        made.append(path)
    try:
        yield [str(p.relative_to(REPO)) for p in made]
    finally:
        for p in made:
            p.unlink(missing_ok=True)
        for d in dirs:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty: someone else may have started using it meanwhile


@pytest.fixture(scope="package")
def submitted_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubmittedJob]:
    """One pipeline job submitted to a private Ray head; everything it started is stopped afterwards."""
    work = tmp_path_factory.mktemp("e2e-submit")
    services: dict[str, Service] = {}
    seconds: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        urls = start_services(work, services)
        seconds["services_up"] = time.monotonic() - t0
        prefix, submission_id = "t2v/tiny", f"t2v-e2e-{uuid.uuid4().hex[:8]}"
        t1 = time.monotonic()
        with upload_canaries() as canaries:
            result = submit_pipeline(urls, prefix, submission_id)
        seconds["job_submit"] = time.monotonic() - t1
        job = SubmittedJob(
            bucket=urls["bucket"],
            prefix=prefix,
            s3_endpoint=urls["s3"],
            mlflow_uri=urls["mlflow"],
            dashboard=urls["dashboard"],
            submission_id=submission_id,
            ray_temp_dir=Path(urls["temp_dir"]),
            mlflow_db=work / "mlflow.db",
            submit=result,
            services=services,
            seconds=seconds,
            canaries=canaries,
        )
        yield job
    finally:
        for name in ("ray", "mlflow", "moto"):  # jobs first, then what they wrote to
            if name in services:
                services[name].stop()
        temp_dir = services["ray"].mention if "ray" in services else None
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        left = {n: s.survivors() for n, s in services.items() if s.survivors()}
        assert not left, f"processes started by the e2e fixture survived: {left}"
