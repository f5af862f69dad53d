"""The grid's linear classifier on a frozen expert (paper supplement §4.1).

"Given an expert, we train a classifier on top of it by replacing the final classification layer and training it
with Adam for 16 epochs. We use weight decay 5e-4 and learning rate 1e-4", each epoch drawing 10,000 images with
replacement, uniformly over classes. The expert is frozen, so the classifier trains on cached features
(:mod:`t2v_ray.train.features`) and costs almost nothing next to the feature pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from t2v_ray.core.heads import HeadConfig, evaluate_head, train_head
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
    """Errors of one classifier: ``test_error`` is the grid's ground truth."""

    test_error: float
    train_error: float
    train_loss: float
    epochs: int
    steps: int
    seconds: float


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
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.from_numpy(train.features).to(device)
    y = torch.from_numpy(train.labels).to(device)
    head, stats = train_head(x, y, n_classes, cfg.head_config(), generator=gen)
    test_error = float("nan")
    if len(test):
        xt = torch.from_numpy(test.features).to(device)
        test_error = evaluate_head(head, xt, torch.from_numpy(test.labels).to(device))
    return ClassifierResult(
        test_error=test_error,
        train_error=1.0 - stats["train_accuracy"],
        train_loss=stats["train_loss"],
        epochs=cfg.epochs,
        steps=stats["steps"],
        seconds=time.perf_counter() - start,
    )
