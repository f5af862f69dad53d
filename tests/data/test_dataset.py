"""TaskDataset decoding and the paper's balanced sampler (supplement §4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from t2v_ray.data.dataset import TaskDataset, balanced_sampler
from t2v_ray.data.images import ImageDecodeError, decode_image
from t2v_ray.data.library import TaskLibrary


def test_task_dataset_yields_tensor_and_int_label(small_glyph_library):
    lib = TaskLibrary.open(str(small_glyph_library))
    table = lib.read_task("glyphs/European/Greek")
    train = TaskDataset(table, split="train")
    test = TaskDataset(table, split="test")
    assert len(train) == lib.task("glyphs/European/Greek").n_train and len(test) > 0
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0  # ink on paper, not a blank
    assert isinstance(label, int) and train.num_classes == 10
    batch, labels = next(iter(DataLoader(train, batch_size=8)))
    assert batch.shape == (8, 3, 32, 32) and labels.dtype == torch.int64


def test_decode_image_errors_are_clear():
    with pytest.raises(ImageDecodeError, match="empty image bytes"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="unrecognised image format .*'x7'"):
        decode_image(b"GIF89a-nope", image_id="x7")


def test_balanced_sampler_draws_classes_uniformly_on_an_imbalanced_task():
    # 500 / 50 / 5 images: a plain uniform sampler would give class 0 90% of the draws.
    labels = np.repeat([0, 1, 2], [500, 50, 5])
    n = 30_000
    sampler = balanced_sampler(labels, n, seed=0)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(sampler) == len(draws) == n
    counts = np.bincount(labels[draws], minlength=3)
    # Each class count is Binomial(n, 1/3): sd = sqrt(n * 1/3 * 2/3) ~= 81.6. Five sd (408) bounds a false
    # failure at ~6e-7 per class, while an unbalanced sampler misses by ~17,000.
    assert np.all(np.abs(counts - n / 3) < 5 * np.sqrt(n * (1 / 3) * (2 / 3))), counts
    # Within the rarest class every image is drawn (with replacement): ~2,000 draws each, sd ~43.
    rare = np.bincount(draws[labels[draws] == 2] - 550, minlength=5)
    assert np.all(np.abs(rare - counts[2] / 5) < 5 * np.sqrt(counts[2] * 0.2 * 0.8)), rare


def test_balanced_sampler_epochs_differ_and_seeds_reproduce():
    labels = [0] * 30 + [1] * 3
    a = balanced_sampler(labels, 64, generator=7)
    b = balanced_sampler(labels, 64, generator=torch.Generator().manual_seed(7))
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    assert list(a) != first_a  # a new epoch is a new draw
    with pytest.raises(ValueError, match="num_samples"):
        balanced_sampler(labels, 0)
