"""The pipeline as a user runs it: ``jobs/pipeline.py`` with a *relative* ``storage``, from the repository root and
from another directory. Ray Tune runs each trial in its own working directory, so before paths were resolved once at
config load every expert failed here (``LibraryError: t2v-data/library: no tasks.parquet``).

The two runs start from empty storage with one config, so they also check that the pipeline is deterministic:
identical Table 1, identical expert test errors and identical grid errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .procs import BASE_ENV

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jobs" / "configs" / "tiny.yaml"
pytestmark = pytest.mark.slow


def _run_pipeline(cwd: Path, storage: str, *overrides: str) -> subprocess.CompletedProcess:
    ray_tmp = tempfile.mkdtemp(
        prefix="t2v-ray-"
    )  # a Ray session dir of its own (no collision with other tests)
    env = {**os.environ, **BASE_ENV, "RAY_TMPDIR": ray_tmp}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(REPO / "jobs" / "pipeline.py"), "--config", str(CONFIG), f"storage={storage}"]
    try:
        return subprocess.run(
            [*cmd, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=840
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _outputs(root: Path) -> dict[str, pd.DataFrame]:
    res = root / "results"
    return {
        "table1": pd.read_csv(res / "select" / "taxonomy" / "table1.csv"),
        "experts": pd.read_parquet(res / "experts.parquet").sort_values("expert_id"),
        "grid": pd.read_parquet(res / "grid.parquet").sort_values(["expert_id", "task_id"]),
    }


def _check_layout(root: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rel in (
        "library/tasks.parquet",
        "results/experts.parquet",
        "results/embeddings.parquet",
        "results/grid.parquet",
        "results/select/taxonomy/table1.md",
        "mlflow.db",
        "mlartifacts",
    ):
        assert (root / rel).exists(), f"{rel} missing under {root}"
    experts = pd.read_parquet(root / "results" / "experts.parquet")
    tuned = experts[experts["expert_id"] != "generic"]
    assert len(experts) == 3 and len(tuned) == 2  # generic + n_experts=2
    assert tuned["test_error"].notna().all()  # the generic expert is the untuned probe: no source test error
    grid = pd.read_parquet(root / "results" / "grid.parquet")
    assert (grid["status"] == "ok").all() and len(grid) == 3 * 12


def test_relative_storage_from_repo_root_and_elsewhere_gives_identical_results(tmp_path):
    name = f"t2v-data-test-{uuid.uuid4().hex[:8]}"  # relative; under the repo root for the first run
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    try:
        first = _run_pipeline(REPO, name)
        _check_layout(REPO / name, first)
        second = _run_pipeline(elsewhere, name)
        _check_layout(elsewhere / name, second)
        assert sorted(p.name for p in elsewhere.iterdir()) == [name]  # nothing landed beside it (no ./mlruns)
        a, b = _outputs(REPO / name), _outputs(elsewhere / name)
    finally:
        shutil.rmtree(REPO / name, ignore_errors=True)
    pd.testing.assert_frame_equal(a["table1"], b["table1"])
    np.testing.assert_array_equal(a["experts"]["test_error"], b["experts"]["test_error"])  # NaN == NaN here
    np.testing.assert_array_equal(a["grid"]["test_error"], b["grid"]["test_error"])


def test_a_stage_that_produced_nothing_usable_stops_the_pipeline(tmp_path):
    # A negative learning rate makes torch's SGD raise inside every expert trial: no fine-tuned expert exists.
    proc = _run_pipeline(
        tmp_path,
        "store",
        "experts.train.lr=-1",
        "experts.tune.max_failures=0",
        "stages=[library,experts,grid]",
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("pipeline stopped:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "experts: 2 of 2 failed; first: " in lines[0] and "ValueError: Invalid learning rate" in lines[0]
    assert "=== grid" not in proc.stdout  # the grid never started
