"""Settings of the estimators (plain dataclasses, no torch: stage configs nest them and must import cheaply),
and the numeric ranges their fields declare (the config loader checks them too: :mod:`t2v_ray.config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


def ranged(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A dataclass field whose value must lie in ``[lo, hi]`` (None: unbounded)."""
    return field(default=default, metadata={"range": (lo, hi)})


def range_problem(value: Any, f: dataclasses.Field) -> str | None:
    """``"<value> is out of range [lo, hi]"`` when ``value`` breaks the range of field ``f``, else None."""
    bounds = f.metadata.get("range")
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    lo, hi = bounds
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{value!r} is out of range [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    return None


def check_ranges(cfg: Any, where: str = "config", error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the field for any field of ``cfg`` (nested dataclasses too) outside its range."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{where}.{f.name}", error)
        elif (problem := range_problem(value, f)) is not None:
            raise error(f"{where}.{f.name}: {problem}")


@dataclass(frozen=True)
class HeadConfig:
    """Head-training hyper-parameters (paper: Adam, lr 1e-4; 2 epochs before the Fisher, 16 for classifiers)."""

    epochs: int = ranged(2, 0)
    epoch_size: int = ranged(10_000, 1)
    batch_size: int = ranged(64, 1)
    lr: float = ranged(1e-4, 0.0)
    weight_decay: float = ranged(0.0, 0.0)
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
    n_draws: int = ranged(0, 0, 1000)
    max_classes: int | None = ranged(None, 1)
    max_samples: int = ranged(10_000, 1)
    batch_size: int = ranged(64, 1)
    head: HeadConfig = field(default_factory=HeadConfig)
    beta: float = ranged(1.0, 0.0)
    var_epochs: int = ranged(2, 1)
    lr_precision: float = ranged(1e-2, 0.0)
    lr_prior: float = ranged(1e-2, 0.0)
    var_labels: Literal["true", "model"] = "true"
    trivial_n: int = ranged(1000, 1)
    seed: int = ranged(0, 0)
    amp: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("montecarlo", "variational"):
            raise ValueError(f"method must be 'montecarlo' or 'variational', got {self.method!r}")
        check_ranges(
            self, "embed"
        )  # also for configs built in code: max_samples=0 fails here, before any work
