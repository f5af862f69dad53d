"""Supplement Fig. 4 toy experiment: binary tasks on a 2-D grid, two hand-made probes.

64 tasks: k-means splits a uniform grid of the plane into k ∈ [3, 16] clusters, half of the clusters are
class 1. Probes: degree-3 polynomial features and 10 random ReLU features max(0, ax + by + c). The task
embedding is the Fisher diagonal of the linear model on the probe's features (supplement §5:
F = (1/n) Σ_i p_i(1 − p_i) φ(x_i)φ(x_i)ᵀ), computed with the same exact estimator as real probes.
More clusters make a harder task for a fixed feature set, so p stays nearer 1/2 and ‖F‖ grows.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from torch import nn

from t2v_ray.core.distance import pairwise_symmetric
from t2v_ray.core.fisher import montecarlo_fisher
from t2v_ray.probes.base import FilterMap


class _Poly3(nn.Module):
    def forward(self, xy):
        x, y = xy[:, 0], xy[:, 1]
        cols = [x, y, x * x, x * y, y * y, x**3, x * x * y, x * y * y, y**3]
        return torch.stack(cols, 1)


class _RandomRelu(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ab = torch.rand(10, 2, generator=g) - 0.5  # a, b ~ U[-1/2, 1/2]
        self.c = torch.rand(10, generator=g) * 2 - 1  # c ~ U[-1, 1]

    def forward(self, xy):
        return torch.relu(xy @ self.ab.T + self.c)


def _grid() -> torch.Tensor:
    g = torch.linspace(-1, 1, 24)
    return torch.cartesian_prod(g, g).double()


def _tasks(points: np.ndarray, n_tasks: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_tasks):
        k = int(rng.integers(3, 17))
        assign = KMeans(k, n_init=1, random_state=t).fit_predict(points)
        pos = rng.permutation(k)[: k // 2]
        out.append((k, np.isin(assign, pos).astype(np.int64)))
    return out


def _embed(phi: nn.Module, x: torch.Tensor, y: np.ndarray) -> np.ndarray:
    feats = phi(x)
    mu, sd = feats.mean(0), feats.std(0) + 1e-8
    model = nn.Sequential(nn.Identity())  # features are fixed: the "filters" are the linear model's weights
    lin = nn.Linear(feats.shape[1], 2).double()
    target = torch.as_tensor(y)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    z = (feats - mu) / sd

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lin(z), target) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # The per-weight Fisher of row 1 of a 2-way softmax is E[p(1 − p) φ_j²]: the supplement's diagonal.
    probe = nn.Sequential(model, lin)
    fm = FilterMap.from_module(probe)
    res = montecarlo_fisher(probe, nn.Identity(), fm, [z], n_draws=0, per_weight=True)
    return res.per_weight[0][1]


def _check(phi: nn.Module):
    x = _grid()
    tasks = _tasks(x.numpy())
    ks = np.array([k for k, _ in tasks])
    embs = np.stack([_embed(phi, x, y) for _, y in tasks])
    rho = spearmanr(ks, embs.sum(1)).statistic
    assert rho > 0.5, f"embedding norm should grow with task complexity k (Spearman {rho:.2f})"
    d = pairwise_symmetric(embs)
    same = [d[i, j] for i in range(64) for j in range(i + 1, 64) if ks[i] == ks[j]]
    far = [d[i, j] for i in range(64) for j in range(i + 1, 64) if abs(ks[i] - ks[j]) >= 9]
    assert np.mean(same) < np.mean(far), f"same-k {np.mean(same):.3f} vs very different k {np.mean(far):.3f}"
    return rho, np.mean(same), np.mean(far)


def test_polynomial_probe_orders_tasks_by_complexity():
    _check(_Poly3().double())


def test_random_relu_probe_orders_tasks_by_complexity():
    phi = _RandomRelu(0)
    phi.ab, phi.c = phi.ab.double(), phi.c.double()
    _check(phi)
