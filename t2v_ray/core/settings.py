"""Settings of the estimators (plain dataclasses, no torch: stage configs nest them and must import cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class HeadConfig:
    """Head-training hyper-parameters (paper: Adam, lr 1e-4; 2 epochs before the Fisher, 16 for classifiers)."""

    epochs: int = 2
    epoch_size: int = 10_000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    balanced: bool = True


@dataclass(frozen=True)
class EmbedConfig:
    """Everything that changes an embedding's value (it is hashed into the cache key).

    Attributes:
        method: "montecarlo" (exact per-sample Fisher) or "variational" (robust, paper §3.1).
        n_draws: Monte-Carlo labels per image drawn from the model; 0 = exact expectation over labels.
        max_classes: with n_draws=0, classes kept per image (most probable); None = all.
        max_samples: images per task used for head and Fisher (sampled without replacement when more).
        batch_size: images per forward/backward pass.
        head: head-training settings (paper: Adam lr 1e-4, 2 epochs of balanced sampling).
        beta: prior weight of the variational estimator; also scales the trivial embedding.
        var_epochs, lr_precision, lr_prior, var_labels: variational-estimator settings.
        trivial_n: N used for the trivial embedding t0 = (β/2N)·λ² of the Monte-Carlo estimator.
        seed: seeds sampling, head training and label draws.
        amp: forward passes under bf16 autocast (GPU only; Fisher arithmetic stays fp32).
    """

    method: Literal["montecarlo", "variational"] = "montecarlo"
    n_draws: int = 0
    max_classes: int | None = None
    max_samples: int = 10_000
    batch_size: int = 64
    head: HeadConfig = field(default_factory=HeadConfig)
    beta: float = 1.0
    var_epochs: int = 2
    lr_precision: float = 1e-2
    lr_prior: float = 1e-2
    var_labels: Literal["true", "model"] = "true"
    trivial_n: int = 1000
    seed: int = 0
    amp: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("montecarlo", "variational"):
            raise ValueError(f"method must be 'montecarlo' or 'variational', got {self.method!r}")
        if self.n_draws < 0:
            raise ValueError("n_draws must be >= 0 (0 = exact expectation)")
