"""The cluster path end to end: ``ray job submit --working-dir . -- python jobs/pipeline.py --config tiny.yaml``
against a private Ray head, with S3 storage (moto) and an MLflow server whose artifacts go to the same bucket.
See ``conftest.py`` for how the services are started and stopped."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow.parquet as pq
import pytest

from t2v_ray.report.evaluate import SELECTOR_ORDER

from .conftest import CONFIG, SubmittedJob

pytestmark = pytest.mark.slow

STAGES = ("embed", "experts", "grid", "select")


def read_parquet(job: SubmittedJob, key: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(job.get(key))).to_pandas()


def test_job_succeeds_through_ray_job_submit(submitted_job: SubmittedJob):
    job = submitted_job
    out = job.submit.stdout + job.submit.stderr
    print("e2e seconds:", {k: round(v, 1) for k, v in job.seconds.items()})
    assert job.submit.returncode == 0, out[-6000:]
    info = job.job_api()
    assert info["status"] == "SUCCEEDED", info.get("message")
    assert info["entrypoint"].startswith("python jobs/pipeline.py --config " + CONFIG)
    logs = job.job_api("/logs")["logs"]
    assert "=== select done" in logs and "Table 1 (taxonomy)" in logs  # the driver ran every stage
    print(next(line for line in logs.splitlines() if line.startswith("stage seconds")))


def test_working_dir_upload_leaves_out_venv_and_data(submitted_job: SubmittedJob):
    job = submitted_job
    pkg = job.uploaded_package()
    assert pkg is not None, "no unpacked working dir on the head"
    # t2v-data/ in there is the job's own Tune state (grid.default_state_root for remote outputs), not upload.
    files = [p for p in pkg.rglob("*") if p.is_file() and p.relative_to(pkg).parts[0] != "t2v-data"]
    top = {p.relative_to(pkg).parts[0] for p in files}
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"uploaded working dir: {len(files)} files, {size_mb:.2f} MB, top level {sorted(top)}")
    assert {"jobs", "t2v_ray", "pyproject.toml"} <= top
    assert not top & {".venv", ".git", "outputs", "mlruns"}
    assert job.canaries and not [c for c in job.canaries if (pkg / c).exists()]
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix == ".db"]
    assert size_mb < 20  # source only: the .venv alone is ~6 GB


def test_library_embeddings_grid_and_table1_are_in_the_bucket(submitted_job: SubmittedJob):
    job = submitted_job
    lib, res = f"{job.prefix}/library", f"{job.prefix}/results"
    keys = set(job.list_keys(job.prefix + "/"))
    tasks = read_parquet(job, f"{lib}/tasks.parquet")
    task_ids = set(tasks["task_id"])
    assert len(task_ids) >= 10
    for shards in tasks["shards"]:  # every shard a task names was written
        assert {f"{lib}/{s}" for s in shards} <= keys

    emb = read_parquet(job, f"{res}/embeddings.parquet")
    ok = emb[emb["status"] == "ok"]
    assert set(ok["task_id"]) == task_ids and len(ok) == len(task_ids)  # one ok row per task
    assert all(len(v) > 0 for v in ok["embedding"])

    experts = read_parquet(job, f"{res}/experts.parquet")
    grid = read_parquet(job, f"{res}/grid.parquet")
    assert set(grid["status"]) == {"ok"}
    pairs = set(zip(grid["expert_id"], grid["task_id"], strict=True))
    assert pairs == {(e, t) for e in experts["expert_id"] for t in task_ids}  # the full expert x task grid
    assert len(experts) >= 3  # n_experts: 2, plus the generic expert

    table = pd.read_csv(io.BytesIO(job.get(f"{res}/select/taxonomy/table1.csv")))
    assert list(table["selector"]) == SELECTOR_ORDER  # every Table 1 row, in order
    assert (table["n_tasks"] > 0).all() and table["mean_error"].between(0, 1).all()
    assert f"{res}/select/taxonomy/table1.md" in keys
    assert any(k.startswith(f"{res}/select/taxonomy/") and k.endswith(".png") for k in keys)


def test_runs_are_in_the_mlflow_server(submitted_job: SubmittedJob):
    from mlflow.tracking import MlflowClient

    job = submitted_job
    client = MlflowClient(tracking_uri=job.mlflow_uri)
    counts = {}
    for stage in STAGES:
        exp = client.get_experiment_by_name(f"t2v/library/{stage}")
        assert exp is not None, f"no experiment t2v/library/{stage}"
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        assert runs and all(r.info.status == "FINISHED" for r in runs), stage
        counts[stage] = len(runs)
    print("MLflow runs per stage:", counts)
    emb = read_parquet(job, f"{job.prefix}/results/embeddings.parquet")
    embed_exp = client.get_experiment_by_name("t2v/library/embed").experiment_id
    children = [r for r in client.search_runs([embed_exp], max_results=1000) if "task_id" in r.data.tags]
    assert sorted(r.data.tags["task_id"] for r in children) == sorted(emb["task_id"])  # one run per task
    # Artifacts went through the server into the bucket (--serve-artifacts --artifacts-destination s3://...).
    assert job.list_keys("mlflow/")
