"""The grid's linear classifier on a frozen expert (paper supplement §4.1).

"Given an expert, we train a classifier on top of it by replacing the final classification layer and training it
with Adam for 16 epochs. We use weight decay 5e-4 and learning rate 1e-4", each epoch drawing 10,000 images with
replacement, uniformly over classes. The expert is frozen, so the classifier trains on cached features
(:mod:`t2v_ray.train.features`) and should cost almost nothing next to the feature pass. Its 2,500 Adam steps
(16 × 10,000 / 64) are what remains, so :func:`fit_linear` takes them without autograd: the gradient of the mean
cross-entropy of a linear softmax layer is closed-form, (softmax(xW^T) - onehot(y))^T x / B, and Adam is
written out. It follows ``torch.optim.Adam`` with L2 weight decay on weight and bias (what
:func:`t2v_ray.core.heads.train_head` runs) step for step, about 3-4x faster per step on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2v_ray.core.heads import HeadConfig, balanced_indices
from t2v_ray.train.features import FeatureSet


@dataclass(frozen=True)
class ClassifierConfig:
    """Linear-classifier hyper-parameters; defaults are the paper's (supplement §4.1).

    Attributes:
        epochs: passes of ``epoch_size`` draws (paper 16).
        epoch_size: images drawn per epoch, with replacement (paper 10,000, whatever the task size).
        batch_size: images per Adam step (not stated in the paper).
        lr: Adam learning rate (paper 1e-4).
        weight_decay: Adam weight decay (paper 5e-4).
        balanced: draw classes uniformly (paper: yes, "in all experiments").
        seed: seeds the draws, so a pair's result is reproducible.
    """

    epochs: int = 16
    epoch_size: int = 10_000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 5e-4
    balanced: bool = True
    seed: int = 0

    def head_config(self) -> HeadConfig:
        return HeadConfig(
            epochs=self.epochs,
            epoch_size=self.epoch_size,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            balanced=self.balanced,
        )


@dataclass
class ClassifierResult:
    """Errors of one classifier: ``test_error`` is the grid's ground truth.

    ``test_error_se`` = sqrt(e (1 - e) / n_test) is its binomial standard error: the test set is a sample.
    """

    test_error: float
    test_error_se: float
    n_test: int
    train_error: float
    train_loss: float
    epochs: int
    steps: int
    seconds: float


_BETAS, _EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam defaults


def fit_linear(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ClassifierConfig, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Adam on a zero-initialised linear softmax layer over rows of ``x`` drawn per ``cfg``.

    Returns:
        ``W`` of shape (C, D + 1), the bias in the last column (logits = [x, 1] W^T), and the number of steps.
    """
    n = x.shape[0]
    xa = torch.cat([x.float(), torch.ones(n, 1, dtype=torch.float32, device=x.device)], dim=1)
    onehot = F.one_hot(y.long(), n_classes).float()
    w = torch.zeros(n_classes, xa.shape[1], device=x.device)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    (b1, b2), per_epoch, t = _BETAS, (cfg.epoch_size if cfg.epoch_size > 0 else n), 0
    for _ in range(cfg.epochs):
        # The same draws as core.heads.train_head for the same generator state.
        if cfg.balanced:
            order = balanced_indices(y, per_epoch, generator).to(x.device)
        else:
            order = torch.randperm(n, generator=generator)[:per_epoch].to(x.device)
        for s in range(0, order.numel(), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            rows = xa[idx]
            grad = torch.softmax(rows @ w.T, dim=1).sub_(onehot[idx]).T @ rows
            grad.div_(idx.numel()).add_(w, alpha=cfg.weight_decay)
            t += 1
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(_EPS)
            w.addcdiv_(m, denom, value=-cfg.lr / (1 - b1**t))
    return w, t


def _logits(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.float() @ w[:, :-1].T + w[:, -1]


def fit_classifier(
    train: FeatureSet,
    test: FeatureSet,
    n_classes: int,
    cfg: ClassifierConfig = ClassifierConfig(),
    device: str | torch.device = "cpu",
) -> ClassifierResult:
    """Train a linear classifier on ``train`` features and measure its error on ``test``.

    Args:
        train: cached features of the task's train split.
        test: cached features of its test split (an empty test split gives ``test_error`` NaN).
        n_classes: classes of the task (the head's width; a class absent from train still gets a row).
        cfg: hyper-parameters.
        device: where to train.
    """
    from t2v_ray.core.selection import binomial_se

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.from_numpy(train.features).to(device)
    y = torch.from_numpy(train.labels).to(device)
    w, steps = fit_linear(x, y, n_classes, cfg, gen)
    logits = _logits(w, x)
    test_error = float("nan")
    if len(test):
        xt, yt = torch.from_numpy(test.features).to(device), torch.from_numpy(test.labels).to(device)
        test_error = float((_logits(w, xt).argmax(1) != yt).float().mean())
    return ClassifierResult(
        test_error=test_error,
        test_error_se=float(binomial_se(test_error, len(test))),
        n_test=len(test),
        train_error=float((logits.argmax(1) != y).float().mean()),
        train_loss=float(F.cross_entropy(logits, y.long())),
        epochs=cfg.epochs,
        steps=steps,
        seconds=time.perf_counter() - start,
    )
