"""TASK2VEC distances (paper §3.3) and the domain-embedding baseline.

Notation: F_a, F_b are diagonal-Fisher embeddings on the same probe (non-negative, one entry per filter);
t0 is the trivial embedding (the variational prior, §3.1).

Complexity (the distance of a task from the trivial embedding, §3.3) is measured on the variational footing: the
variational estimator returns (β/2N)Λ ≈ F + t0 (supplement §6), so a Monte-Carlo embedding F is compared as
F + t0. Compared bare, d_sym(F, t0) is blind to F's scale whenever F and t0 differ in scale (it tends to
1 - mean(F/t0)/rms(F/t0) as F/t0 -> 0) and is not monotone in it: a task with 1000x less Fisher information can
score as more complex. With the floor, a trivial task (F = 0) is at distance 0 and the term grows with F.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # keeps F/(F_a+F_b) defined where both entries are zero (the reference code returns NaN there)


def _normalised_pair(a: np.ndarray, b: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.clip(np.asarray(a, dtype=np.float64), 0.0, None)
    b = np.clip(np.asarray(b, dtype=np.float64), 0.0, None)
    if a.shape != b.shape:
        raise ValueError(
            f"embeddings have different shapes {a.shape} vs {b.shape}: were they made with the same probe?"
        )
    s = a + b + eps
    return a / s, b / s


def cosine_distance(u: np.ndarray, v: np.ndarray, eps: float = EPS) -> float:
    """1 - cos(u, v); a zero vector is at distance 1 from everything but itself (0)."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu < eps and nv < eps:
        return 0.0
    if nu < eps or nv < eps:
        return 1.0
    return float(1.0 - np.dot(u, v) / (nu * nv))


def symmetric_distance(a, b, eps: float = EPS) -> float:
    """d_sym(F_a, F_b) = d_cos(F_a/(F_a+F_b), F_b/(F_a+F_b)), element-wise division.

    Both normalised vectors are non-negative, so the result lies in [0, 1]; it is 0 exactly when the two
    halves are parallel, e.g. F_a == F_b (both halves 1/2 everywhere). Accepts arrays or TaskEmbeddings.
    """
    a, b = _vec(a), _vec(b)
    na, nb = _normalised_pair(a, b, eps)
    return float(np.clip(cosine_distance(na, nb, eps), 0.0, 1.0))


def complexity(a, t0, includes_prior: bool = False, eps: float = EPS) -> float:
    """d_sym(t_a, t0), the distance from the trivial embedding, with t_a = F_a + t0 unless ``includes_prior``.

    ``includes_prior``: the embedding already holds the prior (the variational estimator's (β/2N)Λ); a
    Monte-Carlo Fisher does not, and gets it added (see the module docstring).
    """
    a, t0 = _vec(a), _vec(t0)
    return symmetric_distance(a if includes_prior else a + np.clip(t0, 0.0, None), t0, eps)


def asymmetric_distance(
    a, b, t0, alpha: float = 0.15, eps: float = EPS, includes_prior: bool = False
) -> float:
    """d_asym(t_a -> t_b) = d_sym(t_a, t_b) - alpha * complexity(t_a) (paper §3.3).

    ``a`` is the source (the expert's task), ``b`` the target task; complex sources (far from the
    trivial embedding t0) are brought closer. ``complexity`` is :func:`complexity` (``includes_prior`` as there).
    """
    return symmetric_distance(a, b, eps) - alpha * complexity(a, t0, includes_prior, eps)


# Rows of the left operand per block, so no (rows, m, d) temporary exceeds ~32M floats: a 137-task library
# on EfficientNet-Lite0 (21,008 filters) would otherwise build several 3 GB arrays at once.
_BLOCK_ELEMENTS = 32 * 2**20


def cross_symmetric(a: np.ndarray, b: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Matrix D[i, j] = d_sym(A[i], B[j]) for (n, d) and (m, d) stacks, vectorised in row blocks."""
    a = np.clip(np.atleast_2d(np.asarray(a, dtype=np.float64)), 0.0, None)
    b = np.clip(np.atleast_2d(np.asarray(b, dtype=np.float64)), 0.0, None)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"embeddings have different shapes {a.shape[1:]} vs {b.shape[1:]}: were they made with the same probe?"
        )
    step = max(1, _BLOCK_ELEMENTS // max(1, b.shape[0] * b.shape[1]))
    return np.concatenate([_cross_block(a[i : i + step], b, eps) for i in range(0, len(a), step)], axis=0)


def _cross_block(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    s = a[:, None, :] + b[None, :, :] + eps
    u = a[:, None, :] / s
    v = b[None, :, :] / s
    num = (u * v).sum(-1)
    nu, nv = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
    den = nu * nv
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1.0 - np.where(den > eps, num / np.where(den > eps, den, 1.0), 0.0)
    d[(nu < eps) & (nv < eps)] = 0.0
    return np.clip(d, 0.0, 1.0)


def pairwise_symmetric(embs: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Matrix D[i, j] = d_sym(E[i], E[j]) for an (n, d) stack."""
    d = cross_symmetric(embs, embs, eps)
    np.fill_diagonal(d, 0.0)
    return d


def cross_complexity(embs: np.ndarray, t0: np.ndarray, includes_prior: bool = False) -> np.ndarray:
    """:func:`complexity` of every row of an (n, d) stack."""
    embs = np.clip(np.atleast_2d(np.asarray(embs, dtype=np.float64)), 0.0, None)
    t0 = np.clip(np.asarray(t0, dtype=np.float64).reshape(1, -1), 0.0, None)
    return cross_symmetric(embs if includes_prior else embs + t0, t0)[:, 0]


def pairwise_asymmetric(
    sources: np.ndarray,
    targets: np.ndarray,
    t0: np.ndarray,
    alpha: float = 0.15,
    includes_prior: bool = False,
) -> np.ndarray:
    """Matrix D[i, j] = d_asym(source_i -> target_j)."""
    triv = cross_complexity(sources, t0, includes_prior)
    return cross_symmetric(sources, targets) - alpha * triv[:, None]


def _vec(x) -> np.ndarray:
    return np.asarray(getattr(x, "vector", x), dtype=np.float64).reshape(-1)
