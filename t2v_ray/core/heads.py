"""Task heads trained on cached probe features (paper §3.1, supplement §4.1-§4.2).

The probe is frozen, so its features are computed once and the linear head trains on them alone:
many epochs cost almost nothing. Epochs follow the paper's balanced sampling: each epoch draws a fixed
number of feature rows with replacement, uniformly over classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HeadConfig:
    """Head-training hyper-parameters (paper: Adam, lr 1e-4; 2 epochs before the Fisher, 16 for classifiers)."""

    # "range" metadata: bounds the config loader checks (t2v_ray.config.check_ranges) before any work starts.
    epochs: int = field(default=2, metadata={"range": (0, None)})
    epoch_size: int = field(default=10_000, metadata={"range": (1, None)})
    batch_size: int = field(default=64, metadata={"range": (1, None)})
    lr: float = field(default=1e-4, metadata={"range": (0.0, None)})
    weight_decay: float = field(default=0.0, metadata={"range": (0.0, None)})
    balanced: bool = True


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n indices drawn with replacement so that every class is equally likely (supplement §4.1)."""
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    # P(i) ∝ 1/count(class(i)) gives each class total mass 1/C.
    weights = 1.0 / counts[inverse].double()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def train_head(
    feats: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    cfg: HeadConfig = HeadConfig(),
    generator: torch.Generator | None = None,
) -> tuple[nn.Linear, dict]:
    """Fit a linear head (zero-initialised, so it starts at the uniform prediction) on cached features.

    Returns:
        The head and stats: final train accuracy and loss on all rows, steps taken.
    """
    feats = feats.float()
    labels = labels.long()
    head = nn.Linear(feats.shape[1], n_classes).to(feats.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = feats.shape[0]
    per_epoch = cfg.epoch_size if cfg.epoch_size > 0 else n
    steps = 0
    for _ in range(cfg.epochs):
        if cfg.balanced:
            order = balanced_indices(labels.cpu(), per_epoch, generator).to(feats.device)
        else:
            order = torch.randperm(n, generator=generator)[:per_epoch].to(feats.device)
        for s in range(0, order.numel(), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = F.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    head.eval()
    with torch.no_grad():
        logits = head(feats)
        stats = {
            "train_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "train_loss": float(F.cross_entropy(logits, labels)),
            "steps": steps,
        }
    return head, stats


@torch.no_grad()
def evaluate_head(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Classification error of ``head`` on cached features."""
    return float((head(feats.float()).argmax(1) != labels.long()).float().mean())
