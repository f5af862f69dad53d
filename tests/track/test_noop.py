"""NoopTracker: same public API as Tracker, and nothing is written anywhere."""

from __future__ import annotations

import inspect
import pickle
import sys

import pytest

from t2v_ray.track import MlflowTracker, NoopTracker, Tracker, create_tracker


def _public(cls: type) -> dict[str, object]:
    return {n: v for c in reversed(cls.__mro__[:-1]) for n, v in vars(c).items() if not n.startswith("_")}


def test_noop_overrides_every_public_member_with_same_signature():
    tracker_api = _public(MlflowTracker)
    assert {
        "parent_run",
        "log_child",
        "log_params_flat",
        "log_artifact_bytes",
        "log_figure",
        "log_file",
    } <= set(tracker_api)
    assert "find_runs" in tracker_api
    assert isinstance(NoopTracker(), Tracker) and not issubclass(NoopTracker, MlflowTracker)
    # Defined on NoopTracker itself: an inherited method would reach MLflow.
    missing = sorted(set(tracker_api) - set(vars(NoopTracker)))
    assert missing == []
    for name, member in tracker_api.items():
        if inspect.isfunction(member):
            noop = vars(NoopTracker)[name]
            assert inspect.signature(noop) == inspect.signature(member), name


def test_disabled_tracker_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = create_tracker(f"sqlite:///{tmp_path}/db/mlflow.db", "t2v/lib/embed", enabled=False)
    assert isinstance(tracker, NoopTracker) and not tracker.enabled
    with tracker.parent_run("p", params={"a": 1}) as parent_id:
        child = tracker.log_child(parent_id, "c", params={"b": 2}, artifacts={"x.txt": "y"})
        tracker.log_artifact_bytes(child, "z.bin", b"z")
    assert parent_id != child and parent_id.startswith("noop-")
    assert tracker.find_runs({"task_id": "t1"}) == []
    assert tracker.log_params_flat(child, {"a": {"token": "v"}}) == {"a.token": "***"}
    assert list(tmp_path.iterdir()) == []
    assert isinstance(pickle.loads(pickle.dumps(tracker)), NoopTracker)


def test_missing_mlflow_falls_back_to_noop(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` raise ImportError
    with pytest.warns(RuntimeWarning, match="mlflow is not installed"):
        tracker = create_tracker(f"sqlite:///{tmp_path}/mlflow.db", "t2v/lib/embed")
    assert isinstance(tracker, NoopTracker)
    assert list(tmp_path.iterdir()) == []
