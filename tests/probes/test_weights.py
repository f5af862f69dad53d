"""Loading state dicts from paths, file:// and s3:// URIs with strict, explicit key checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2v_ray.probes import get_probe
from t2v_ray.probes.weights import is_location, split_head


def _full_state(name: str, n_source: int) -> dict[str, torch.Tensor]:
    """A random full-classifier state dict: the probe's features plus a head with ``n_source`` outputs."""
    torch.manual_seed(11)
    probe = get_probe(name)
    head = torch.nn.Linear(probe.feature_dim, n_source)
    prefix = {"small_cnn": "fc", "resnet18": "fc"}[name]
    state = dict(probe.features.state_dict())
    state.update({f"{prefix}.{k}": v for k, v in head.state_dict().items()})
    return state


def _assert_same_probe(a, b, x):
    assert a.state_hash() == b.state_hash()
    with torch.no_grad():
        torch.testing.assert_close(a.features(x), b.features(x), rtol=0, atol=0)
        torch.testing.assert_close(a.source_head(a.features(x)), b.source_head(b.features(x)), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_round_trip_path_and_file_uri(name, tmp_path: Path, images32):
    state = _full_state(name, n_source=5)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    by_path = get_probe(name, weights=str(path), input_size=32)
    by_uri = get_probe(name, weights=path.as_uri())
    assert by_path.meta["source_classes"] == 5 and by_path.weights == str(path)
    _assert_same_probe(by_path, by_uri, images32)
    torch.testing.assert_close(by_path.source_head.weight, state["fc.weight"], rtol=0, atol=0)
    for key, value in by_path.features.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_features_only_checkpoint_has_no_source_head(tmp_path: Path):
    features = {k: v for k, v in _full_state("small_cnn", 3).items() if not k.startswith("fc.")}
    torch.save({"state_dict": features}, tmp_path / "f.pt")  # nested checkpoints are unwrapped
    probe = get_probe("small_cnn", weights=str(tmp_path / "f.pt"))
    assert probe.source_head is None
    torch.testing.assert_close(probe.features.state_dict()["body.0.weight"], features["body.0.weight"])


def test_missing_and_unexpected_keys_are_named(tmp_path: Path):
    state = _full_state("small_cnn", 3)
    del state["body.4.weight"]
    state["body.9.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        get_probe("small_cnn", weights=str(tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "'small_cnn'" in msg and "missing keys (1): body.4.weight" in msg
    assert "unexpected keys (1): body.9.extra" in msg


def test_shape_mismatch_is_named(tmp_path: Path):
    state = _full_state("small_cnn", 3)
    state["body.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"'small_cnn'.*body\.0\.weight: checkpoint \(16, 3, 3, 3\) vs model \(32, 3, 3, 3\)"
    ):
        get_probe("small_cnn", weights=str(tmp_path / "bad.pth"))


def test_missing_file_is_reported(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        get_probe("small_cnn", weights=str(tmp_path / "nope.pth"))


def test_split_head_and_location_rules():
    feats, head = split_head({"classifier.6.weight": 1, "classifier.3.weight": 2, "x": 3}, "classifier.6")
    assert feats == {"classifier.3.weight": 2, "x": 3} and head == {"weight": 1}
    assert is_location("s3://b/k.pth") and is_location("w.pt") and is_location("dir/w")
    assert not is_location("IMAGENET1K_V1") and not is_location("imagenet")


@pytest.mark.integration
def test_s3_uri_via_endpoint(s3_server, tmp_path: Path, images32):
    state = _full_state("small_cnn", 4)
    torch.save(state, tmp_path / "w.pth")
    bucket = s3_server.make_bucket()
    s3_server.client().upload_file(str(tmp_path / "w.pth"), bucket, "probes/w.pth")
    remote = get_probe("small_cnn", weights=s3_server.uri(bucket, "probes/w.pth"))
    local = get_probe("small_cnn", weights=str(tmp_path / "w.pth"))
    assert remote.meta["source_classes"] == 4
    _assert_same_probe(remote, local, images32)
