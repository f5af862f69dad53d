"""Shared fixtures: recognisable fake credentials in the environment and one temp sqlite store per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Fake, recognisable credential values: any of them showing up in MLflow is a redaction failure.
FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "FAKEawsSecret/0123456789abcdef",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID12345",
    "RAY_AUTH_TOKEN": "fake-ray-token-5f1e2d3c",
    "T2V_TEST_SERVICE_PASSWORD": "hunter2-fake-password",  # matched by name pattern only
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A data dir holding the sqlite DB, and an empty cwd that must stay empty; fake secrets set in env."""
    root = tmp_path_factory.mktemp("track")
    paths = {"data": root / "t2v-data", "cwd": root / "cwd"}
    paths["cwd"].mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(paths["cwd"])
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, value in FAKE_SECRETS.items():
            mp.setenv(name, value)
        yield paths


@pytest.fixture(scope="module")
def make_tracker(store: dict[str, Path]) -> Callable[[str], object]:
    """Build a Tracker on the module's sqlite store for a given stage of library ``glyphs``."""
    from t2v_ray.track import create_tracker, default_tracking_uri, experiment_name

    def make(stage: str):
        return create_tracker(
            default_tracking_uri(store["data"]), experiment_name("s3://bkt/libs/glyphs/", stage)
        )

    return make
