"""d_sym between every (task, model) pair and its gradient in the models, in one pass over the filters per pair.

MODEL2VEC's fit (:mod:`t2v_ray.core.model2vec`) evaluates d_sym(m_j, t_i) for n tasks x k experts x d filters
every epoch, and again in every leave-one-out / cross-fitting fold. With autograd on broadcast tensors that is
~10 temporaries of n·k·d floats (137 x 13 x 21,008 = 37 M): 2-4.5 s an epoch on 2 cores, i.e. hours for the
default preset's folds. This module computes the same quantity with scalar loops (numba), keeping only three
running sums per pair:

    s = m + t,  uv = Σ m t / s²,  uu = Σ m² / s²,  vv = Σ t² / s²,  d = 1 - uv / sqrt(uu vv)

and, for the backward pass with upstream g_ij = ∂L/∂d_ij (derivatives of the sums: ∂uv/∂m = t (t - m) / s³,
∂uu/∂m = 2 m t / s³, ∂vv/∂m = -2 t² / s³; ∂d/∂uv = -1/den, ∂d/∂uu = uv / (2 den uu), ∂d/∂vv = uv / (2 den vv)):

    ∂L/∂m_j = Σ_i g_ij t_i / s³ · [ -(t_i - m_j) / den + uv m_j / (den uu) - uv t_i / (den vv) ]

0.15 s an epoch on one core here (tests/core/test_model2vec.py checks value and gradient against autograd).
Without numba installed, :func:`available` is False and callers keep the autograd path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def _kernels() -> tuple[Any, Any] | None:
    try:
        from numba import njit, prange
    except ImportError:
        return None

    @njit(parallel=True, fastmath=True, cache=False)
    def forward(tasks, models, eps):  # pragma: no cover - compiled
        n, d = tasks.shape
        k = models.shape[0]
        sums = np.empty((3, n, k))
        for j in prange(k):
            m = models[j]
            for i in range(n):
                t = tasks[i]
                uv = 0.0
                uu = 0.0
                vv = 0.0
                for x in range(d):
                    r = 1.0 / (t[x] + m[x] + eps)
                    r2 = r * r
                    uv += t[x] * m[x] * r2
                    uu += m[x] * m[x] * r2
                    vv += t[x] * t[x] * r2
                sums[0, i, j] = uv
                sums[1, i, j] = uu
                sums[2, i, j] = vv
        return sums

    @njit(parallel=True, fastmath=True, cache=False)
    def backward(tasks, models, sums, grad, eps):  # pragma: no cover - compiled
        n, d = tasks.shape
        k = models.shape[0]
        out = np.zeros((k, d))
        for j in prange(k):
            m = models[j]
            acc = out[j]
            for i in range(n):
                g = grad[i, j]
                if g == 0.0:
                    continue
                uv, uu, vv = sums[0, i, j], sums[1, i, j], sums[2, i, j]
                den = max(np.sqrt(uu * vv), eps)
                c1 = -g / den
                c2 = g * uv / (den * max(uu, eps))
                c3 = g * uv / (den * max(vv, eps))
                t = tasks[i]
                for x in range(d):
                    r = 1.0 / (t[x] + m[x] + eps)
                    acc[x] += (c1 * (t[x] - m[x]) + c2 * m[x] - c3 * t[x]) * t[x] * r * r * r
        return out

    return forward, backward


def available() -> bool:
    """True when numba can be imported (the kernels compile on first use, ~2 s per process)."""
    return _kernels() is not None


def distances(sums: np.ndarray, eps: float) -> np.ndarray:
    """d_sym (n, k) from the running sums (3, n, k) of :func:`pair_sums`."""
    uv, uu, vv = sums
    return 1.0 - uv / np.maximum(np.sqrt(uu * vv), eps)


def pair_sums(tasks: np.ndarray, models: np.ndarray, eps: float) -> np.ndarray:
    """(3, n, k): uv, uu, vv of every (task i, model j) pair (float64)."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("numba is not installed")
    return kernels[0](np.ascontiguousarray(tasks, np.float64), np.ascontiguousarray(models, np.float64), eps)


def grad_models(tasks: np.ndarray, models: np.ndarray, sums: np.ndarray, grad: np.ndarray, eps: float):
    """∂L/∂models (k, d) given ∂L/∂d (n, k) and the forward pass's sums."""
    kernels = _kernels()
    if kernels is None:
        raise RuntimeError("numba is not installed")
    return kernels[1](
        np.ascontiguousarray(tasks, np.float64),
        np.ascontiguousarray(models, np.float64),
        sums,
        np.ascontiguousarray(grad, np.float64),
        eps,
    )
