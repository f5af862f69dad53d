"""No credential value reaches any output of a submitted pipeline job, and no config field can carry one.

The job ran with recognisable fake credentials in its nodes' environment (``conftest.FAKE_SECRETS``). Every
output is searched for them: ``ray job submit``'s output, the job's logs and record in the Ray job API, every file
the Ray head wrote under its temp dir (session logs, worker logs, Tune staging), the service logs, every MLflow
experiment, run name, param, tag and metric key, every artifact downloaded through the server, the MLflow
database itself, and every object in the bucket (raw bytes, plus decoded Parquet, gzip and zip content).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import typing
import zipfile
from pathlib import Path

import pytest

from t2v_ray.pipeline import PipelineConfig
from t2v_ray.track.redact import is_secret_key

from .conftest import FAKE_SECRETS, SubmittedJob

SECRETS = [v.encode() for v in FAKE_SECRETS.values()]


def decoded(name: str, data: bytes) -> list[bytes]:
    """``data`` plus the text hidden in it by compression or columnar encoding."""
    views = [data]
    try:
        if name.endswith(".parquet") or data[:4] == b"PAR1":
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            views.append(json.dumps(table.to_pylist(), default=repr).encode())
            views.append(json.dumps(str(table.schema.metadata)).encode())
        elif data[:2] == b"\x1f\x8b":
            views.append(gzip.decompress(data))
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                views.extend(z.read(n) for n in z.namelist())
    except Exception as err:  # an undecodable file is still searched raw
        views.append(f"undecodable: {err}".encode())
    return views


def leaks(sources: dict[str, bytes]) -> dict[str, list[str]]:
    """{source: [secret env var names found in it]} for every source that contains a secret."""
    names = list(FAKE_SECRETS)
    found = {}
    for where, data in sources.items():
        hits = [names[i] for i, s in enumerate(SECRETS) if any(s in v for v in decoded(where, data))]
        if hits:
            found[where] = hits
    return found


def process_outputs(job: SubmittedJob) -> dict[str, bytes]:
    out = {
        "ray job submit stdout": job.submit.stdout.encode(),
        "ray job submit stderr": job.submit.stderr.encode(),
        "job API record": json.dumps(job.job_api()).encode(),
        "job API logs": json.dumps(job.job_api("/logs")).encode(),
    }
    for name, service in job.services.items():
        out[f"{name} service log"] = service.log().encode()
    for path in job.ray_temp_dir.rglob("*"):
        if path.is_file() and not path.is_socket():
            try:
                out[f"ray head: {path.relative_to(job.ray_temp_dir)}"] = path.read_bytes()
            except OSError:
                continue  # a file Ray removed while we walked
    return out


def mlflow_outputs(job: SubmittedJob, dst: Path) -> dict[str, bytes]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=job.mlflow_uri)
    logging.getLogger("mlflow.store.artifact.artifact_repo").setLevel(logging.WARNING)  # "no artifacts" x 50
    out = {}
    for exp in client.search_experiments():
        out[f"mlflow experiment {exp.name}"] = json.dumps(
            [exp.name, exp.artifact_location, exp.tags], default=str
        ).encode()
        for run in client.search_runs([exp.experiment_id], max_results=5000):
            data = {
                "name": run.info.run_name,
                "params": run.data.params,
                "tags": run.data.tags,
                "metrics": sorted(run.data.metrics),
            }
            out[f"mlflow run {run.info.run_id}"] = json.dumps(data).encode()
            local = Path(client.download_artifacts(run.info.run_id, "", str(dst / run.info.run_id)))
            for path in local.rglob("*"):
                if path.is_file():
                    out[f"mlflow artifact {run.info.run_id}/{path.relative_to(local)}"] = path.read_bytes()
    out["mlflow database"] = job.mlflow_db.read_bytes()
    return out


def bucket_outputs(job: SubmittedJob) -> dict[str, bytes]:
    return {f"s3://{job.bucket}/{key}": job.get(key) for key in job.list_keys()}


@pytest.mark.slow
def test_no_credential_value_in_any_output(
    submitted_job: SubmittedJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    job = submitted_job
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    assert job.submit.returncode == 0, (job.submit.stdout + job.submit.stderr)[-3000:]
    # Control: the secrets really were in the environment the job inherited (the head's raylet).
    environs = []
    for pid in job.services["ray"].pids():
        try:
            environs.append(Path(f"/proc/{pid}/environ").read_bytes())
        except OSError:
            continue
    assert any(
        f"AWS_SECRET_ACCESS_KEY={FAKE_SECRETS['AWS_SECRET_ACCESS_KEY']}".encode() in e for e in environs
    )

    processes, mlflow, bucket = process_outputs(job), mlflow_outputs(job, tmp_path), bucket_outputs(job)
    n_artifacts = sum(k.startswith("mlflow artifact") for k in mlflow)
    print(
        f"searched {len(processes)} process outputs/log files, {len(mlflow)} MLflow items "
        f"({n_artifacts} artifacts), {len(bucket)} bucket objects"
    )
    assert n_artifacts > 0 and any(k.endswith("embeddings.parquet") for k in bucket)  # not vacuous
    # The artifacts we downloaded are the ones the server stored in the bucket.
    assert n_artifacts == sum(k.startswith(f"s3://{job.bucket}/mlflow/") for k in bucket)
    found = leaks({**processes, **mlflow, **bucket})
    assert not found, f"credential values leaked into: {json.dumps(found, indent=1)}"


def _field_names(cls: type, prefix: str = "") -> list[str]:
    names = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names.append(prefix + f.name)
        inner = [hints[f.name], *typing.get_args(hints[f.name])]
        for tp in inner:
            if dataclasses.is_dataclass(tp):
                names += _field_names(tp, f"{prefix}{f.name}.")
    return names


def test_no_config_field_carries_credentials():
    """S3 credentials come only from the standard AWS chain: no pipeline config key could hold one."""
    names = _field_names(PipelineConfig)
    assert len(names) > 40 and "embed.tracking.uri" in names  # the walk reaches nested stage configs
    assert not [n for n in names if is_secret_key(n) or "key" in n.split(".")[-1].lower()]
