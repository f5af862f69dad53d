"""Transferability baselines scored from one expert's outputs on a target task: LogME, LEEP, NCE, H-score.

All four are "higher = better" scores of how well a frozen expert suits a labelled target task. They are the
comparison rows of Table 1 next to the TASK2VEC selectors (paper §4.2). Notation: N samples, D feature dimensions,
C target classes, F the (N, D) feature matrix used as is (no centering), y the integer target labels 0..C-1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_SOLVER_EPS = (
    1e-5  # added to the squared norms in the alpha/beta updates (LogME convention), avoids division by 0
)
_MAX_ITER = 11
_TOL = 1e-3  # relative change of lambda = alpha / beta that counts as converged


class Evidence(NamedTuple):
    """One target's LogME fit: log evidence per sample, the fitted prior/noise precisions, and whether the
    fixed point met the tolerance within the iteration cap (the reference reports unconverged values as well)."""

    evidence: float
    alpha: float
    beta: float
    converged: bool


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors U (N, k) and squared singular values sigma (k,) of F, k = rank(F)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    if n > d:
        # The D x D Gram matrix is cheaper to decompose than F itself when N > D; U = F V / s.
        evals, v = np.linalg.eigh(f.T @ f)
        sigma = np.clip(evals, 0.0, None)
        keep = sigma > sigma.max() * max(n, d) * np.finfo(np.float64).eps
        s = np.sqrt(sigma[keep])
        return (f @ v[:, keep]) / s, sigma[keep]
    # N <= D: U and s² are the eigenpairs of the N x N Gram matrix F Fᵀ (4-10x cheaper than an SVD of F here).
    sigma, u = np.linalg.eigh(f @ f.T)
    sigma = np.clip(sigma, 0.0, None)
    keep = sigma > sigma.max() * max(n, d) * np.finfo(np.float64).eps
    return u[:, keep], sigma[keep]


def _evidence(x2: np.ndarray, res_out: float, sigma: np.ndarray, n: int, d: int) -> Evidence:
    """Maximise the evidence of y ~ N(F m, 1/beta), m ~ N(0, 1/alpha I_D) over (alpha, beta) by fixed point.

    ``x2`` holds (U^T y)^2 per singular direction and ``res_out`` = |y|^2 - |U^T y|^2 (the part of y outside
    the column space of F). With t = alpha/beta the posterior mean is m = V diag(s/(sigma+t)) U^T y, so
        |m|^2 = sum sigma x2 / (sigma+t)^2,   |y - F m|^2 = sum x2 t^2 / (sigma+t)^2 + res_out,
    and MacKay's updates are alpha = gamma/|m|^2, beta = (N-gamma)/|y-Fm|^2, gamma = sum sigma/(sigma+t).
    The log evidence (Bishop PRML eq. 3.86) with A = alpha I + beta F^T F is
        D/2 log alpha + N/2 log beta - beta/2 |y-Fm|^2 - alpha/2 |m|^2 - 1/2 log|A| - N/2 log 2 pi.
    log|A| = sum_k log(alpha + beta sigma) + (D - k) log alpha: the last term, non-zero when rank k < D (always
    when N < D), is the one the published reference drops. Like the reference, the final evidence uses the
    |m|^2 and residual of the last iteration's t with the updated alpha, beta (this reproduces its values).
    """
    k = sigma.size
    alpha, beta, converged = 1.0, 1.0, False
    for _ in range(_MAX_ITER):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
        res2 = float((x2 * t**2 / (sigma + t) ** 2).sum()) + res_out
        alpha = gamma / (m2 + _SOLVER_EPS)
        beta = (n - gamma) / (res2 + _SOLVER_EPS)
        if abs(alpha / beta - t) / t <= _TOL:
            converged = True
            break
    log_det_a = float(np.log(alpha + beta * sigma).sum()) + (d - k) * np.log(alpha)
    ev = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - beta / 2 * res2
        - alpha / 2 * m2
        - log_det_a / 2
        - n / 2 * np.log(2 * np.pi)
    )
    return Evidence(float(ev / n), float(alpha), float(beta), converged)


def _project(u: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    x = u.T @ target
    res_out = max(float(target @ target - x @ x), 0.0)  # round-off can make it slightly negative
    return x**2, res_out


def logme_evidence(features: np.ndarray, target: np.ndarray) -> Evidence:
    """LogME for one real-valued target vector y (N,): the maximised Bayesian linear-regression evidence / N."""
    f = np.asarray(features, dtype=np.float64)
    u, sigma = _spectrum(f)
    x2, res_out = _project(u, np.asarray(target, dtype=np.float64))
    return _evidence(x2, res_out, sigma, *f.shape)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al., ICML 2021; fixed-point solver of their 2021 follow-up): higher = better transfer.

    Each class c is a regression target y_c = 1[label == c] on the raw features F; the score is the mean over
    classes 0..max(label) of the per-sample maximised log evidence log p(y_c | F, alpha_c, beta_c) / N.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    u, sigma = _spectrum(f)
    onehot = (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)
    evidences = [
        _evidence(*_project(u, onehot[:, c]), sigma, *f.shape).evidence for c in range(onehot.shape[1])
    ]
    return float(np.mean(evidences))


def _joint(source_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Empirical joint P(y, z) = 1/N sum_i theta(x_i)_z 1[y_i = y], shape (C_target, C_source)."""
    y = np.asarray(labels).reshape(-1)
    onehot = (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)
    return onehot.T @ np.asarray(source_probs, dtype=np.float64) / len(y)


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al., ICML 2020): (1/N) sum_i log sum_z P(y_i | z) theta(x_i)_z, higher = better.

    ``source_probs`` (N, Z) are the expert's softmax outputs over its own Z source classes; P(y | z) =
    P(y, z) / P(z) from the soft joint above. A source class never predicted (P(z) = 0) carries zero weight.
    """
    theta = np.asarray(source_probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    joint = _joint(theta, y)
    p_z = joint.sum(axis=0, keepdims=True)
    cond = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)  # P(y | z)
    eep = theta @ cond.T  # (N, C): expected empirical prediction of each target class
    return float(np.mean(np.log(eep[np.arange(len(y)), y])))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE (Tran et al., ICCV 2019): -H(Y | Z) in nats from hard source labels z (e.g. argmax of the expert).

    H(Y|Z) = -sum_{y,z} P(y, z) log P(y | z) over the empirical joint; higher (closer to 0) = better.
    """
    z = np.asarray(source_labels).reshape(-1).astype(int)
    onehot_z = (z[:, None] == np.arange(z.max() + 1)[None, :]).astype(np.float64)
    joint = _joint(onehot_z, labels)
    p_z = joint.sum(axis=0, keepdims=True)
    nz = joint > 0  # 0 log 0 = 0
    cond = np.divide(joint, p_z, out=np.ones_like(joint), where=p_z > 0)
    return float((joint[nz] * np.log(cond[nz])).sum())


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao et al., ICIP 2019): tr(cov(f)^+ cov(E[f | y])), higher = better.

    cov is the unbiased sample covariance for both terms (the factor cancels in the trace); E[f | y] replaces
    every sample by its class mean; ^+ is the Moore-Penrose pseudo-inverse (rcond 1e-15).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    n = f.shape[0]
    onehot = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)
    counts = onehot.sum(axis=0)
    fc = f - f.mean(axis=0)
    # cov(E[f|y]) = M Mᵀ with M = (μ_c − μ)·√(n_c/(N−1)): rank ≤ C, so only C columns are needed.
    m = ((onehot.T @ fc) / counts[:, None]).T * np.sqrt(counts / (n - 1))[None, :]
    # cov(f) is symmetric PSD: its pseudo-inverse from eigh (≈3x cheaper than pinv's SVD at D = 1280), with
    # pinv's cut-off (rcond · largest eigenvalue); tr(cov_f⁺ M Mᵀ) = Σ_i ‖v_iᵀ M‖² / λ_i over kept λ_i.
    if n < f.shape[1]:
        # Fewer samples than dimensions (most tasks: ~200 images, D = 1280): the non-zero eigenvalues of
        # Fcᵀ Fc are those of the N x N Gram matrix K = Fc Fcᵀ = U diag(s²) Uᵀ, with v_i = Fcᵀ u_i / s_i, so
        # ‖v_iᵀ M‖² / λ_i = (u_iᵀ Fc M)² (N−1) / s_i⁴: the same sum from an N x N eigh (~100x cheaper here).
        # Centring leaves K an exact null vector (all ones) whose round-off eigenvalue must not count: the rank
        # cut-off is LAPACK's usual max(N, D)·eps relative to the largest eigenvalue.
        s2, u = np.linalg.eigh(fc @ fc.T)
        keep = s2 > max(float(s2.max()), 0.0) * max(f.shape) * np.finfo(np.float64).eps
        proj = u[:, keep].T @ (fc @ m)
        return float(((proj**2).sum(axis=1) * (n - 1) / s2[keep] ** 2).sum())
    lam, vec = np.linalg.eigh(np.atleast_2d(fc.T @ fc) / (n - 1))
    keep = lam > 1e-15 * max(float(np.abs(lam).max()), 0.0)
    proj = vec[:, keep].T @ m
    return float(((proj**2).sum(axis=1) / lam[keep]).sum())
