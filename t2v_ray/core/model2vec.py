"""MODEL2VEC: co-embed experts and tasks so that the expert nearest a task performs best on it (paper §3.4,
supplement §4.3).

Notation: t_i task embeddings (n, d), F_j the embedding of expert j's training task (zero if unknown), b_j the
learned model bias, m_j = F_j + b_j, t0 the trivial embedding, gamma > 0 the learned inverse temperature.

Direction of the asymmetric distance: the paper writes d_ij = d_asym(t_i, m_j). Read literally (task as source)
the complexity term -alpha d_sym(t_i, t0) is the same for every expert j and drops out of the softmax, so the
model would never see "complex experts transfer better". We take the model as the source, as in §3.3's transfer
direction source -> target: d_ij = d_sym(m_j, t_i) - alpha d_sym(m_j (+ t0), t0), i.e.
``asymmetric_distance(m_j, t_i)``; t0 is added to m_j in the complexity term unless the embeddings hold it already
(``includes_prior``, the variational estimator; see ``distance.complexity``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-12  # same role as distance.EPS: keeps m/(m+t) defined where both entries are zero
# The fit runs in float32: at 21k filters its broadcast (tasks × experts × filters) steps were 4x faster than in
# float64 on CPU, and distances in [0, 1] need no more than float32's 7 digits.
DTYPE = torch.float32


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=DTYPE)


class _KernelSymDistance(torch.autograd.Function):
    """d_sym (n, k) by :mod:`t2v_ray.core.sym_kernel`: differentiable in the models ``a`` only."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
        from t2v_ray.core import sym_kernel

        a_np, b_np = a.detach().double().numpy(), b.detach().double().numpy()
        sums = sym_kernel.pair_sums(b_np, a_np, eps)
        ctx.arrays = (a_np, b_np)  # the float64 copies, made once for both passes
        ctx.sums, ctx.eps, ctx.dtype = sums, eps, a.dtype
        return torch.from_numpy(sym_kernel.distances(sums, eps)).to(a.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        from t2v_ray.core import sym_kernel

        a_np, b_np = ctx.arrays
        g = sym_kernel.grad_models(b_np, a_np, ctx.sums, grad.double().numpy(), ctx.eps)
        return torch.from_numpy(g).to(ctx.dtype), None, None


# Broadcast autograd below this many pair-filter entries (tests, small demos): the kernel's compile is ~2 s.
KERNEL_MIN_ENTRIES = 2_000_000


def symmetric_distance_torch(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Differentiable d_sym between every row of ``a`` (k, d) and every row of ``b`` (n, d) -> (n, k).

    d_sym(a, b) = 1 - cos(a/(a+b), b/(a+b)), element-wise division (paper §3.3), as ``distance.pairwise_symmetric``.
    Large CPU problems whose ``b`` needs no gradient (the MODEL2VEC fit) go to the numba kernel of
    :mod:`t2v_ray.core.sym_kernel` (same values, ~20x faster, no n·k·d temporaries); the rest to broadcast autograd.
    """
    from t2v_ray.core import sym_kernel

    big = a.shape[0] * b.shape[0] * a.shape[1] >= KERNEL_MIN_ENTRIES
    if big and a.device.type == "cpu" and not b.requires_grad and sym_kernel.available():
        return _KernelSymDistance.apply(a, b, eps)
    s = a[None, :, :] + b[:, None, :] + eps
    u, v = a[None, :, :] / s, b[:, None, :] / s
    den = (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(eps)
    return 1.0 - (u * v).sum(-1) / den


def asymmetric_distance_torch(
    models: torch.Tensor,
    tasks: torch.Tensor,
    t0: torch.Tensor,
    alpha: float = 0.15,
    includes_prior: bool = False,
) -> torch.Tensor:
    """d_ij = d_asym(m_j -> t_i) = d_sym(m_j, t_i) - alpha complexity(m_j), shape (n_tasks, n_models).

    complexity(m) = d_sym(m + t0, t0), or d_sym(m, t0) when ``includes_prior`` (``distance.complexity``).
    """
    source = models if includes_prior else models + t0[None, :]
    return symmetric_distance_torch(models, tasks) - alpha * symmetric_distance_torch(source, t0[None, :])


def soft_labels(errors: np.ndarray, alpha: float = 20.0, allowed: np.ndarray | None = None) -> np.ndarray:
    """p_hat_i = Softmax(-alpha (err_i - mean(err_i)) / std(err_i)) over the allowed experts (supplement §4.3).

    mean and std (population, ddof=0) are over task i's allowed experts; disallowed entries get probability 0.
    A task whose allowed errors are all equal (std = 0) gets uniform labels instead of dividing by zero.
    """
    err = np.asarray(errors, dtype=np.float64)
    mask = _mask(err, allowed)
    filled = np.where(mask, err, 0.0)
    count = mask.sum(axis=1, keepdims=True)
    mean = filled.sum(axis=1, keepdims=True) / count
    std = np.sqrt((np.where(mask, err - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    z = np.where(std > 0, (filled - mean) / np.where(std > 0, std, 1.0), 0.0)
    logits = np.where(mask, -alpha * z, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _mask(errors: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Allowed and with a known ground truth; every task needs at least one such expert."""
    mask = np.isfinite(errors)
    if allowed is not None:
        mask &= np.asarray(allowed, dtype=bool)
    if not mask.any(axis=1).all():
        raise ValueError("every task needs at least one allowed expert with a finite error")
    return mask


@dataclass
class Model2Vec:
    """A fitted MODEL2VEC. Embeddings are stored divided by ``scale`` (d_sym is invariant to a common scale).

    Attributes:
        bias: b_j (k, d) in scaled units.
        prior: F_j (k, d) in scaled units, zero rows for experts whose training task is unknown.
        gamma: learned inverse temperature of Softmax(-gamma d_i).
        t0: trivial embedding in scaled units.
        alpha_asym: alpha of d_asym.
        includes_prior: the embeddings hold t0 already (variational estimator), see ``distance.complexity``.
        scale: the mean entry of the training task embeddings (input units per scaled unit).
        epochs_run: optimiser steps taken (less than the budget when early stopping triggered).
    """

    bias: np.ndarray
    prior: np.ndarray
    gamma: float
    t0: np.ndarray
    alpha_asym: float
    scale: float
    epochs_run: int
    includes_prior: bool = False

    @property
    def model_embs(self) -> np.ndarray:
        """m_j = F_j + b_j in the input units, clipped at zero (see ``_models``)."""
        return np.clip(self.prior + self.bias, 0.0, None) * self.scale

    def scores(self, task_embs: np.ndarray) -> np.ndarray:
        """d_asym(m_j -> t_i) for each task row, shape (n, k); lower = better."""
        tasks = _t(np.asarray(task_embs, dtype=np.float64) / self.scale).clamp_min(0.0)
        with torch.no_grad():
            d = asymmetric_distance_torch(
                _models(_t(self.prior), _t(self.bias)),
                tasks,
                _t(self.t0),
                self.alpha_asym,
                self.includes_prior,
            )
        return d.numpy().astype(np.float64)

    def select(self, task_embs: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """argmin_j d_asym(m_j -> t_i) over the allowed experts of each task, shape (n,)."""
        s = self.scores(task_embs)
        if allowed is not None:
            s = np.where(np.asarray(allowed, dtype=bool), s, np.inf)
        return s.argmin(axis=1)


def _models(prior: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # Embeddings are non-negative (Fisher diagonals) and d_sym assumes it, so m_j is clamped at 0. An entry pushed
    # below zero stops getting loss gradient there, but weight decay keeps pulling b toward 0, i.e. m toward
    # F_j >= 0, so it can come back; softplus would instead make the decay pull m toward softplus(0), not F_j.
    return (prior + bias).clamp_min(0.0)


def _cross_entropy(
    bias: torch.Tensor,
    log_gamma: torch.Tensor,
    prior: torch.Tensor,
    tasks: torch.Tensor,
    t0: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    alpha_asym: float,
    includes_prior: bool,
) -> torch.Tensor:
    """L = -(1/N) sum_i sum_j p_hat_ij log Softmax(-gamma d_i)_j over the allowed experts (supplement §4.3)."""
    d = asymmetric_distance_torch(_models(prior, bias), tasks, t0, alpha_asym, includes_prior)
    logits = (-log_gamma.exp() * d).masked_fill(~mask, float("-inf"))
    logp = torch.log_softmax(logits, dim=1)
    return -torch.where(mask, labels * logp, torch.zeros_like(logp)).sum(dim=1).mean()


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction <= 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_model2vec(
    task_embs: np.ndarray,
    errors: np.ndarray,
    expert_task_embs: np.ndarray,
    t0: np.ndarray,
    alpha_asym: float = 0.15,
    *,
    allowed: np.ndarray | None = None,
    soft_alpha: float = 20.0,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    epochs: int = 81,
    patience: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    includes_prior: bool = False,
) -> Model2Vec:
    """Learn b_j and gamma by minimising the soft-label cross-entropy with Adam (paper §3.4, supplement §4.3).

    One epoch is one full-batch Adam step over the training tasks (the meta-tasks have tens of tasks).
    Stopping: by default a fixed budget of ``epochs`` (the paper stops after 81). With ``val_fraction > 0`` and
    ``patience``, a seeded split of the given tasks is held out, training stops once its loss has not improved
    for ``patience`` epochs, and the parameters of the best validation epoch are returned.

    Args:
        task_embs: (n, d) non-negative embeddings of the training tasks.
        errors: (n, k) ground-truth test error of expert j on task i (NaN = unknown, ignored).
        expert_task_embs: (k, d) F_j; a row of NaN or zeros marks an expert whose training task is unknown.
        t0: (d,) trivial embedding.
        alpha_asym: alpha of d_asym.
        allowed: optional (n, k) mask of experts that may be chosen for each task (protocol); others are left
            out of both the soft labels and the softmax.
        soft_alpha: alpha of the soft labels (paper: 20).
        lr, weight_decay: Adam settings (paper: 0.05, 5e-4). Weight decay applies to b only: it keeps m_j near
            F_j; decaying log gamma would pull the temperature toward 1 for no reason.
        epochs, patience, val_fraction: stopping rule, see above.
        seed: seeds the validation split (the fit itself has no randomness).
        includes_prior: the embeddings hold t0 already (variational estimator), see ``distance.complexity``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    tasks_np = np.clip(np.asarray(task_embs, dtype=np.float64), 0.0, None)
    scale = float(tasks_np.mean()) or 1.0  # d_sym is scale-free; this only puts lr = 0.05 on a unit scale
    prior_np = np.nan_to_num(np.asarray(expert_task_embs, dtype=np.float64), nan=0.0).clip(0.0) / scale
    tasks = _t(tasks_np / scale)
    t0_t = _t(np.clip(np.asarray(t0, dtype=np.float64), 0.0, None) / scale)
    mask_np = _mask(np.asarray(errors, dtype=np.float64), allowed)
    mask = torch.as_tensor(mask_np)
    labels = _t(soft_labels(errors, soft_alpha, mask_np))
    prior = _t(prior_np)

    # Unknown experts start at the mean training task (a zero m_j has no direction for d_sym to compare).
    unknown = ~(prior_np > 0).any(axis=1)
    bias = _t(np.where(unknown[:, None], tasks_np.mean(axis=0) / scale, 0.0)).requires_grad_()
    with torch.no_grad():
        d0 = asymmetric_distance_torch(_models(prior, bias), tasks, t0_t, alpha_asym, includes_prior)
        spread = float(d0.std(dim=1, unbiased=False).mean())
    # Start gamma so that -gamma d_i spans about one logit unit per task.
    log_gamma = torch.tensor(-np.log(max(spread, 1e-6)), dtype=DTYPE, requires_grad=True)
    opt = torch.optim.Adam(
        [{"params": [bias], "weight_decay": weight_decay}, {"params": [log_gamma], "weight_decay": 0.0}],
        lr=lr,
    )
    use_val = val_fraction > 0 and patience is not None
    tr, va = _split(len(tasks_np), val_fraction if use_val else 0.0, seed)

    def loss_on(idx: np.ndarray) -> torch.Tensor:
        return _cross_entropy(
            bias, log_gamma, prior, tasks[idx], t0_t, labels[idx], mask[idx], alpha_asym, includes_prior
        )

    best = (float("inf"), bias.detach().clone(), log_gamma.detach().clone(), 0)
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss_on(tr).backward()
        opt.step()
        if not use_val:
            continue
        with torch.no_grad():
            val = float(loss_on(va))
        if val < best[0]:
            best = (val, bias.detach().clone(), log_gamma.detach().clone(), epoch)
        elif epoch - best[3] >= patience:
            break
    final_bias, final_log_gamma, steps = (
        (best[1], best[2], epoch) if use_val else (bias.detach(), log_gamma, epoch)
    )
    return Model2Vec(
        bias=final_bias.numpy().copy(),
        prior=prior_np,
        gamma=float(final_log_gamma.detach().exp()),
        t0=t0_t.numpy().copy(),
        alpha_asym=alpha_asym,
        scale=scale,
        epochs_run=steps,
        includes_prior=includes_prior,
    )
