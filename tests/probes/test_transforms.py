"""Input transforms: size, channels, normalisation."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from PIL import Image

from t2v_ray.probes import get_probe
from t2v_ray.probes.transforms import IMAGENET_NORM


def test_imagenet_normalisation_and_grayscale_input():
    probe = get_probe("small_cnn")
    mean = np.array(IMAGENET_NORM[0])
    # A grey image at the ImageNet mean of the green channel normalises to ~0 in that channel.
    value = round(mean[1] * 255)
    t = probe.transform(Image.fromarray(np.full((28, 28), value, np.uint8), mode="L"))
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    expected = (value / 255 - mean[1]) / IMAGENET_NORM[1][1]
    torch.testing.assert_close(t[1], torch.full((32, 32), expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_input_size_override_and_non_square_input():
    probe = get_probe("resnet18", input_size=40)
    t = probe.transform(Image.new("RGBA", (90, 50)))
    assert t.shape == (3, 40, 40)


def test_transform_pickles_for_ray_workers():
    probe = get_probe("small_cnn")
    img = Image.new("RGB", (32, 32), (10, 200, 30))
    again = pickle.loads(pickle.dumps(probe.transform))
    torch.testing.assert_close(again(img), probe.transform(img), rtol=0, atol=0)
