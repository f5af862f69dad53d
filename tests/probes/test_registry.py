"""Registry contract: shapes, filter maps, eval/determinism and weight-name handling."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from t2v_ray.probes import get_probe, list_probes

ALL = ["resnet18", "resnet34", "densenet121", "vgg13", "efficientnet_lite0", "small_cnn"]


def test_list_probes_names_the_registry():
    assert list_probes() == ALL


@pytest.mark.parametrize("name", ALL)
def test_feature_shape_and_filter_map(name, probe32, images32):
    probe = probe32(name)
    with torch.no_grad():
        out = probe.features(images32)
    assert out.shape == (2, probe.feature_dim)
    # Independent count: every Conv2d's out_channels plus every Linear's out_features.
    expected = sum(
        m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        for m in probe.features.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    )
    assert probe.filter_map.n_filters == expected > 0
    assert probe.filter_map.layer_offsets[-1] == expected


def test_known_dimensions(probe32):
    # ResNet-18 convs: stem 64 + 4·64 + (4·128+128) + (4·256+256) + (4·512+512) = 4800 (downsamples counted).
    assert probe32("resnet18").filter_map.n_filters == 4800
    assert probe32("resnet18").feature_dim == 512
    assert probe32("densenet121").feature_dim == 1024
    # VGG-13 keeps classifier.0 and classifier.3 (4096 units each) in the extractor; classifier.6 is the head.
    vgg = probe32("vgg13")
    assert vgg.feature_dim == 4096
    assert [g.module for g in vgg.filter_map.groups if g.kind == "linear"] == ["classifier.0", "classifier.3"]
    assert probe32("efficientnet_lite0").feature_dim == 1280
    assert 100_000 <= probe32("small_cnn").meta["n_params"] <= 200_000


@pytest.mark.parametrize("name", ALL)
def test_eval_mode_and_deterministic(name, probe32, images32):
    probe = probe32(name)
    assert not any(m.training for m in probe.features.modules())
    with torch.no_grad():
        a, b = probe.features(images32), probe.features(images32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_small_cnn_init_ignores_global_rng():
    torch.manual_seed(1)
    a = get_probe("small_cnn").state_hash()
    torch.manual_seed(2)
    assert get_probe("small_cnn").state_hash() == a


def test_torchvision_random_init_follows_global_rng():
    torch.manual_seed(3)
    a = get_probe("resnet18").state_hash()
    torch.manual_seed(3)
    b = get_probe("resnet18").state_hash()
    torch.manual_seed(4)
    assert a == b != get_probe("resnet18").state_hash()


def test_meta_records_task_classes_and_weights():
    probe = get_probe("small_cnn", num_classes=7, input_size=48)
    assert probe.meta["num_classes"] == 7
    assert probe.input_size == probe.meta["input_size"] == 48
    assert probe.source_head is None and probe.meta["source_classes"] is None
    assert probe.weights.startswith("none")


def test_unknown_probe_lists_available():
    with pytest.raises(ValueError, match="resnet34"):
        get_probe("resnet1000")


def test_small_cnn_has_no_named_weights():
    with pytest.raises(ValueError, match="small_cnn"):
        get_probe("small_cnn", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="no pre-trained .default. weights"):
        get_probe("small_cnn", weights="default")


def test_unknown_torchvision_weights_name():
    with pytest.raises(ValueError, match="IMAGENET1K_V9"):
        get_probe("resnet18", weights="IMAGENET1K_V9")


@pytest.mark.parametrize("weights", ["default", "imagenet", "IMAGENET1K_V1"])
def test_download_failure_names_probe_and_suggests_path(weights, monkeypatch):
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    # torchvision fetches named weights through this module-level function.
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"probe 'resnet34'.*IMAGENET1K_V1.*local path"):
        get_probe("resnet34", weights=weights)
