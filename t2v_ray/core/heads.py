"""THE linear-head trainer: a softmax layer fitted on cached probe features (paper §3.1, supplement §4.1-§4.2).

The probe (or expert) is frozen, so its features are computed once and the head trains on them alone: many
epochs cost almost nothing. Epochs follow the paper's balanced sampling: each epoch draws a fixed number of
feature rows with replacement, uniformly over classes. Task2Vec's head, the grid's classifiers and the expert
head phase all train here.

Notation: x_i the features of row i with a 1 appended (so the bias is the last column of W), z = W x the
logits, p = softmax(z), y the label. The mean cross-entropy of a batch B has the closed-form gradient
    dL/dW = (1/|B|) Σ_{i∈B} (p_i − e_{y_i}) x_iᵀ,
so no autograd graph is built. The steps are ``torch.optim.Adam``'s (L2 weight decay on weight and bias, as for
``nn.Linear`` parameters), called as ``torch.optim.adam.adam`` -- the function ``Adam.step`` runs, with its fused
kernel -- without the optimizer object's per-step wrapper (hooks, profiler record, parameter-group walk), which
cost ~90 µs a step here, more than the step itself (tests/benchmarks/bench_heads.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam

from t2v_ray.core.settings import HeadConfig


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n indices drawn with replacement so that every class is equally likely (supplement §4.1)."""
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    # P(i) ∝ 1/count(class(i)) gives each class total mass 1/C.
    weights = 1.0 / counts[inverse].double()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def epoch_order(
    labels: torch.Tensor, cfg: HeadConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The rows one epoch visits: ``cfg.epoch_size`` balanced draws (or a random subset), on ``labels``' device."""
    n = labels.shape[0]
    per_epoch = cfg.epoch_size if cfg.epoch_size > 0 else n
    if cfg.balanced:
        return balanced_indices(labels.cpu(), per_epoch, generator).to(labels.device)
    return torch.randperm(n, generator=generator)[:per_epoch].to(labels.device)


def fit_softmax(
    feats: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    cfg: HeadConfig = HeadConfig(),
    generator: torch.Generator | None = None,
    track_loss: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Adam on a zero-initialised softmax layer (it starts at the uniform prediction), closed-form gradients.

    Args:
        feats: (N, D) cached features.
        labels: (N,) labels 0..C-1.
        n_classes: C (a class absent from ``labels`` still gets a row).
        cfg: epochs, draws per epoch, batch size, Adam's rate and weight decay.
        generator: seeds the draws (the same draws as any other trainer given the same generator state).
        track_loss: also return each epoch's mean loss (else an empty list; it costs ~15% per step).

    Returns:
        ``W`` of shape (C, D + 1), the bias in the last column, and the mean loss of each epoch over the drawn
        rows, each taken before the step it contributed to.
    """
    x = torch.cat([feats.float(), torch.ones(feats.shape[0], 1, device=feats.device)], dim=1)
    labels = labels.long()
    onehot = F.one_hot(labels, n_classes).float()
    w = torch.zeros(n_classes, x.shape[1], device=feats.device)
    grad, exp_avg, exp_avg_sq = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
    step = torch.zeros((), device=feats.device)
    hyper = dict(amsgrad=False, beta1=0.9, beta2=0.999, eps=1e-8, maximize=False, foreach=False, fused=True)
    losses = []
    for _ in range(cfg.epochs):
        order, total = epoch_order(labels, cfg, generator), torch.zeros((), device=feats.device)
        for s in range(0, order.numel(), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            rows = x[idx]
            p = torch.softmax(rows @ w.T, dim=1)
            if track_loss:
                total -= p.gather(1, labels[idx, None]).clamp_min_(1e-30).log_().sum()
            torch.matmul(p.sub_(onehot[idx]).T, rows, out=grad).div_(idx.numel())
            adam(
                [w],
                [grad],
                [exp_avg],
                [exp_avg_sq],
                [],
                [step],
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                **hyper,
            )
        if track_loss:
            losses.append(float(total) / max(order.numel(), 1))
    return w, losses


def train_head(
    feats: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    cfg: HeadConfig = HeadConfig(),
    generator: torch.Generator | None = None,
) -> tuple[nn.Linear, dict]:
    """Fit a linear head on cached features (:func:`fit_softmax`) and return it as an ``nn.Linear`` in eval mode.

    Returns:
        The head and stats: final train accuracy and loss on all rows, steps taken.
    """
    w, _ = fit_softmax(feats, labels, n_classes, cfg, generator)
    head = nn.Linear(feats.shape[1], n_classes).to(feats.device)
    with torch.no_grad():
        head.weight.copy_(w[:, :-1])
        head.bias.copy_(w[:, -1])
    head.eval()
    per_epoch = cfg.epoch_size if cfg.epoch_size > 0 else feats.shape[0]
    with torch.no_grad():
        logits = head(feats.float())
        stats = {
            "train_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "train_loss": float(F.cross_entropy(logits, labels.long())),
            "steps": cfg.epochs * -(-per_epoch // cfg.batch_size),
        }
    return head, stats
