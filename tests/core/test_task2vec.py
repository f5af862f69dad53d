"""Task2Vec end to end on tiny probes: label invariance, fixed dimension, variational estimator."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from t2v_ray import Task2Vec, symmetric_distance
from t2v_ray.core.fisher import variational_fisher
from t2v_ray.core.heads import HeadConfig
from tests.core.nets import blob_task, tiny_probe

FAST_HEAD = HeadConfig(epochs=2, epoch_size=2000, lr=1e-2)


def test_label_permutation_invariance():
    ds = blob_task(n=90, n_classes=3)
    x, y = ds.tensors
    perm = torch.tensor([2, 0, 1])
    a = Task2Vec(tiny_probe(), head=FAST_HEAD, device="cpu").embed(ds)
    b = Task2Vec(tiny_probe(), head=FAST_HEAD, device="cpu").embed(TensorDataset(x, perm[y]))
    # Relabelling permutes the head's rows and the softmax entries; Σ_y p_y g_y² is unchanged.
    np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-10)
    # Shifting ids (labels 10, 20, 30) is also a relabelling.
    c = Task2Vec(tiny_probe(), head=FAST_HEAD, device="cpu").embed(TensorDataset(x, 10 * (y + 1)))
    np.testing.assert_allclose(a.vector, c.vector, rtol=1e-4, atol=1e-10)


def test_dimension_is_number_of_filters_for_any_number_of_classes():
    probe = tiny_probe()
    x = blob_task(n=100).tensors[0]
    dims = set()
    for k in (2, 5, 10):
        y = torch.arange(100) % k
        emb = Task2Vec(probe, head=FAST_HEAD, device="cpu").embed(TensorDataset(x, y))
        dims.add(emb.dim)
        assert emb.meta["n_classes"] == k
        assert np.all(emb.vector >= 0)
    assert dims == {probe.filter_map.n_filters}


def test_learned_head_beats_chance_and_embed_leaves_probe_unchanged():
    probe = tiny_probe()
    before = {k: v.clone() for k, v in probe.features.state_dict().items()}
    emb = Task2Vec(probe, head=FAST_HEAD, device="cpu").embed(blob_task(n=150, n_classes=3))
    assert emb.meta["head_accuracy"] > 0.6  # chance is 1/3
    for k, v in probe.features.state_dict().items():
        assert torch.equal(v, before[k])


def test_variational_trivial_task_stays_at_prior():
    probe = tiny_probe()
    x = torch.randn(64, 3, 8, 8)
    y = torch.zeros(64, dtype=torch.long)
    head = nn.Linear(12, 2)
    with torch.no_grad():  # a head that already predicts the constant label with certainty
        head.weight.zero_()
        head.bias.copy_(torch.tensor([30.0, -30.0]))
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    res = variational_fisher(
        probe.features,
        head,
        probe.filter_map,
        batches,
        n_samples=64,
        epochs=20,
        generator=torch.Generator().manual_seed(0),
    )
    # The loss is flat in the weights, so the optimum of the KL term keeps Λ at the prior: (β/2N)Λ = (β/2N)λ².
    assert symmetric_distance(res.per_filter, res.trivial) < 1e-3
    np.testing.assert_allclose(res.per_filter, res.trivial, rtol=0.1)


def test_variational_learnable_task_moves_away_from_prior():
    probe = tiny_probe()
    t2v = Task2Vec(probe, method="variational", head=FAST_HEAD, var_epochs=30, beta=1e-3, device="cpu")
    emb = t2v.embed(blob_task(n=128, n_classes=3))
    trivial = emb.meta["trivial"]
    # Λ grows above the prior where the loss is curved: (β/2N)Λ = F + (β/2N)λ² ≥ prior.
    assert symmetric_distance(emb.vector, trivial) > 0.05
    assert np.mean(emb.vector > trivial) > 0.8
