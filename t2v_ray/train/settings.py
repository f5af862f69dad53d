"""Settings of the training loops (plain dataclasses, no torch: stage configs nest them and must import cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from t2v_ray.core.settings import HeadConfig


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
        """The same recipe as :class:`~t2v_ray.core.settings.HeadConfig` (the shared head trainer's settings)."""
        return HeadConfig(
            epochs=self.epochs,
            epoch_size=self.epoch_size,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            balanced=self.balanced,
        )


@dataclass(frozen=True)
class ExpertTrainConfig:
    """Expert fine-tuning hyper-parameters; defaults are the paper's (supplement §4.1), the demo scales them down.

    Attributes:
        head_epochs: head-only epochs with Adam, network frozen (paper 10).
        head_lr: Adam rate of the head-only phase (the paper does not state it; 1e-4 as for its other heads).
        finetune_epochs: whole-network epochs with SGD (paper 60).
        lr: initial SGD rate (paper 0.001).
        momentum: SGD momentum (not stated in the paper; 0.9 is the usual choice).
        weight_decay: SGD weight decay (paper 5e-4).
        lr_milestones: epochs of the fine-tuning phase where the rate is multiplied by ``lr_gamma`` (paper 40).
        lr_gamma: step-decay factor (paper 0.1).
        epoch_size: images drawn per epoch, balanced over classes (paper 10,000).
        batch_size: images per step (not stated in the paper).
        eval_every: fine-tuning epochs between test-error measurements (0: only at the end).
        preload_mb: decode and transform the whole train split once when it fits in this many MB, instead of
            decoding every drawn image again each epoch.
        freeze_bn: keep BatchNorm layers in eval mode (pre-trained running statistics) while fine-tuning; the
            paper does not say; use it for small tasks and batches (the demo does).
        seed: seeds the draws.
    """

    head_epochs: int = 10
    head_lr: float = 1e-4
    finetune_epochs: int = 60
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (40,)
    lr_gamma: float = 0.1
    epoch_size: int = 10_000
    batch_size: int = 64
    eval_every: int = 0
    preload_mb: int = 1024
    freeze_bn: bool = False
    seed: int = 0


@dataclass(frozen=True)
class FeatureSettings:
    """The frozen feature pass over a task's images.

    Attributes:
        batch_size: images per forward pass.
        device: ``auto`` (CUDA when the trial has a GPU), ``cpu`` or ``cuda``.
        num_workers: DataLoader processes decoding images (0: in the trial's process).
        source_probs: keep the expert's source-head softmax (LEEP/NCE need it).
    """

    batch_size: int = 128
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    source_probs: bool = True
