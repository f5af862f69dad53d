"""The one head trainer takes exactly the steps of an autograd ``nn.Linear`` head under ``torch.optim.Adam``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2v_ray.core.heads import epoch_order, fit_softmax, train_head
from t2v_ray.core.settings import HeadConfig


def _blobs(n: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    centers = torch.randn(c, d, generator=torch.Generator().manual_seed(99))
    return centers[labels] + torch.randn(n, d, generator=g), labels


def autograd_head(x, y, n_classes, cfg: HeadConfig, gen) -> tuple[nn.Linear, list[float]]:
    """The reference: zero-initialised nn.Linear, F.cross_entropy, backward(), torch.optim.Adam, same draws."""
    head = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    for _ in range(cfg.epochs):
        order, total = epoch_order(y, cfg, gen), 0.0
        for s in range(0, order.numel(), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        losses.append(total / order.numel())
    return head, losses


@pytest.mark.parametrize("balanced", [True, False])
def test_closed_form_trainer_takes_the_same_adam_steps_as_the_autograd_head(balanced):
    x, y = _blobs(50, 7, 3)
    cfg = HeadConfig(epochs=3, epoch_size=40, batch_size=16, lr=1e-2, weight_decay=5e-2, balanced=balanced)
    w, losses = fit_softmax(x, y, 3, cfg, torch.Generator().manual_seed(4), track_loss=True)
    ref, ref_losses = autograd_head(x, y, 3, cfg, torch.Generator().manual_seed(4))
    torch.testing.assert_close(w[:, :-1], ref.weight.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w[:, -1], ref.bias.detach(), rtol=1e-4, atol=1e-6)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    head, stats = train_head(x, y, 3, cfg, generator=torch.Generator().manual_seed(4))
    assert stats["steps"] == 3 * 3  # ceil(40 / 16) steps per epoch
    torch.testing.assert_close(head.weight.detach(), w[:, :-1])


def test_first_step_moves_every_weight_by_the_learning_rate_against_the_gradient_sign():
    # Adam's first step is -lr * m / (sqrt(v) + eps) with m = (1-b1) g / (1-b1) and v = (1-b2) g^2 / (1-b2):
    # exactly -lr * sign(g) where g != 0. At W = 0, p = 1/C, so g = (1/B) sum_i (1/C - e_{y_i}) x_i^T.
    x, y = _blobs(8, 4, 2)
    cfg = HeadConfig(epochs=1, epoch_size=0, batch_size=8, lr=0.01, balanced=False)
    w, _ = fit_softmax(x, y, 2, cfg, torch.Generator().manual_seed(0))
    xa = torch.cat([x, torch.ones(8, 1)], dim=1)
    g = (torch.full((8, 2), 0.5) - F.one_hot(y, 2).float()).T @ xa / 8
    torch.testing.assert_close(w, -0.01 * torch.sign(g), rtol=1e-5, atol=1e-6)
