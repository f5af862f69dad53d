"""Tiny networks shared by the core tests (deterministic, CPU, milliseconds)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from t2v_ray.probes.base import FilterMap, Probe


def tiny_cnn(seed: int = 0) -> nn.Module:
    """Conv (plain, grouped, 1x1) + BN + Linear: exercises every per-sample identity in fisher.py."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 12),
        nn.ReLU(),
    )
    # Non-trivial BN statistics so eval mode matters.
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def tiny_probe(seed: int = 0) -> Probe:
    feats = tiny_cnn(seed)
    return Probe(
        name="tiny",
        features=feats,
        feature_dim=12,
        input_size=8,
        transform=lambda im: im,
        filter_map=FilterMap.from_module(feats),
    )


def blob_task(n: int = 120, n_classes: int = 3, seed: int = 0, size: int = 8) -> TensorDataset:
    """Images whose class shifts the mean of one colour channel: learnable from tiny_cnn features."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 1.5 * (1 + y // 3).float()[:, None, None]
    return TensorDataset(x, y)
