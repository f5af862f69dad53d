"""The grid's linear classifier on a frozen expert (paper supplement §4.1).

"Given an expert, we train a classifier on top of it by replacing the final classification layer and training it
with Adam for 16 epochs. We use weight decay 5e-4 and learning rate 1e-4", each epoch drawing 10,000 images with
replacement, uniformly over classes. The expert is frozen, so the classifier trains on cached features
(:mod:`t2v_ray.train.extract`) and should cost almost nothing next to the feature pass. Its 2,500 Adam steps
(16 × 10,000 / 64) are taken by the one head trainer, :func:`t2v_ray.core.heads.fit_softmax` (closed-form
gradient, no autograd).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2v_ray.core.heads import fit_softmax
from t2v_ray.results.features import FeatureSet
from t2v_ray.train.settings import ClassifierConfig


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
    w, _ = fit_softmax(x, y, n_classes, cfg.head_config(), gen)
    steps = cfg.epochs * -(-(cfg.epoch_size if cfg.epoch_size > 0 else len(y)) // cfg.batch_size)
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
