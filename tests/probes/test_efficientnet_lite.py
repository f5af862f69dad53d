"""EfficientNet-Lite0 architecture against the packaged ImageNet checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2v_ray.probes import get_probe
from t2v_ray.probes.efficientnet_lite import EfficientNetLite0, SamePad2d
from t2v_ray.probes.registry import _packaged_lite0_path

ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504


@pytest.fixture(scope="module")
def lite0():
    return get_probe("efficientnet_lite0", weights="imagenet")


def test_checkpoint_keys_match_architecture_exactly():
    state = torch.load(_packaged_lite0_path(), map_location="cpu", weights_only=True)
    model_state = EfficientNetLite0().state_dict()
    assert list(state) == list(model_state)  # same names, same (forward) order
    assert all(state[k].shape == v.shape for k, v in model_state.items())


def test_same_padding_matches_tensorflow():
    # TF SAME, k=3, s=2 on 224: out 112, total pad (112-1)·2+3-224 = 1 -> (0 top, 1 bottom).
    x = torch.ones(1, 1, 224, 224)
    y = SamePad2d(3, 2)(x)
    assert y.shape == (1, 1, 225, 225) and y[0, 0, 0].sum() == 224 and y[0, 0, -1].sum() == 0
    # Odd input 225, k=5, s=2: total (113-1)·2+5-225 = 4 -> symmetric 2/2.
    assert SamePad2d(5, 2)(torch.ones(1, 1, 225, 225)).shape == (1, 1, 229, 229)


def test_coffee_is_espresso(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    x = lite0.transform(Image.fromarray(skimage_data.coffee()))[None]
    with torch.no_grad():
        p = lite0.source_head(lite0.features(x)).softmax(-1)[0]
    top = p.topk(5)
    assert {ESPRESSO, CUP, COFFEE_MUG} & set(top.indices.tolist())
    assert int(top.indices[0]) == ESPRESSO and float(top.values[0]) > 0.8  # measured 0.94
    assert lite0.meta["source_class_names"][ESPRESSO] == "espresso"


def test_imagenet_meta(lite0):
    assert lite0.meta["source_classes"] == 1000
    assert lite0.meta["n_params"] + lite0.meta["n_params_head"] == 4_652_008
    assert lite0.weights.startswith("imagenet")
    assert get_probe("efficientnet_lite0", weights="default").state_hash() == lite0.state_hash()


def test_transform_uses_lite_scaling(lite0):
    # (x·255 − 127)/128: pixel 127 -> 0, pixel 255 -> 1.
    img = np.full((40, 60, 3), 127, np.uint8)
    img[:, :, 2] = 255
    t = lite0.transform(Image.fromarray(img))
    assert t.shape == (3, 224, 224)
    torch.testing.assert_close(t[0], torch.zeros(224, 224), atol=1e-6, rtol=0)
    torch.testing.assert_close(t[2], torch.ones(224, 224), atol=1e-6, rtol=0)
