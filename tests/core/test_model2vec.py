"""MODEL2VEC: the differentiable distance, soft labels, and recovery of a planted expert structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2v_ray.core.distance import pairwise_asymmetric, symmetric_distance
from t2v_ray.core.model2vec import asymmetric_distance_torch, fit_model2vec, soft_labels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: thread hand-offs dominate on a shared 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(seed: int, n: int = 100, d: int = 12, k: int = 4):
    """Experts whose true embedding m*_j = F_j * exp(0.8 z) differs from their task embedding F_j (b*_j != 0).

    Tasks sit near one m*_j each and the error of expert j on task i is d_asym(m*_j -> t_i), so the best expert
    is the nearest m*_j, which the nearest F_j (asymmetric Task2Vec) often is not. The 0.3 offset keeps errors
    positive (d_asym can be negative) without changing any ranking.
    """
    rng = np.random.default_rng(seed)
    f = rng.gamma(2.0, 0.5, (k, d))
    m_true = f * np.exp(0.8 * rng.standard_normal((k, d)))
    tasks = m_true[rng.integers(0, k, n)] * np.exp(0.25 * rng.standard_normal((n, d)))
    t0 = np.full(d, 0.5)
    errors = 0.3 + pairwise_asymmetric(m_true, tasks, t0).T
    return f, m_true, tasks, t0, errors


def _regret(errors: np.ndarray, picks: np.ndarray) -> float:
    return float(np.mean(errors[np.arange(len(errors)), picks] - errors.min(axis=1)))


def test_torch_distance_matches_numpy():
    rng = np.random.default_rng(0)
    models, tasks, t0 = rng.gamma(2.0, 1.0, (3, 7)), rng.gamma(2.0, 1.0, (5, 7)), np.full(7, 0.3)
    got = asymmetric_distance_torch(*(torch.as_tensor(x) for x in (models, tasks, t0)), alpha=0.15)
    np.testing.assert_allclose(
        got.numpy(), pairwise_asymmetric(models, tasks, t0, 0.15).T, rtol=0, atol=1e-12
    )
    args = (torch.as_tensor(x) for x in (models, tasks, t0))
    var = asymmetric_distance_torch(*args, alpha=0.15, includes_prior=True)
    want = pairwise_asymmetric(models, tasks, t0, 0.15, includes_prior=True).T
    np.testing.assert_allclose(var.numpy(), want, rtol=0, atol=1e-12)


def test_soft_labels_by_hand():
    # errors (0.1, 0.2, 0.3): mean 0.2, population std 0.1 sqrt(2/3), so z = (-sqrt(3/2), 0, sqrt(3/2)) and
    # p = softmax(-alpha z). With alpha = 1: p ∝ (e^{1.2247}, 1, e^{-1.2247}).
    z = np.sqrt(1.5)
    want = np.exp([z, 0.0, -z]) / np.exp([z, 0.0, -z]).sum()
    np.testing.assert_allclose(soft_labels(np.array([[0.1, 0.2, 0.3]]), alpha=1.0)[0], want, rtol=1e-12)
    # alpha = 20 is nearly one-hot on the best expert: p_best / p_second = e^{20 sqrt(3/2)} ~ 4e10.
    assert soft_labels(np.array([[0.1, 0.2, 0.3]]))[0, 0] > 1 - 1e-9


def test_soft_labels_mask_and_ties():
    # The disallowed 0.0 must not enter mean/std: over (0.2, 0.4) z = (-1, 1), p ∝ (e^1, e^-1) with alpha = 1.
    p = soft_labels(np.array([[0.0, 0.2, 0.4], [0.3, 0.3, 0.3]]), 1.0, np.array([[0, 1, 1], [1, 1, 1]], bool))
    np.testing.assert_allclose(
        p[0], [0.0, np.e / (np.e + 1 / np.e), (1 / np.e) / (np.e + 1 / np.e)], rtol=1e-12
    )
    np.testing.assert_allclose(p[1], np.full(3, 1 / 3), rtol=1e-12)  # std = 0: uniform, no NaN


@pytest.mark.parametrize("seed", [0, 4])
def test_recovers_planted_structure_and_beats_asymmetric_task2vec(seed):
    f, m_true, tasks, t0, errors = planted(seed)
    train, test = slice(0, 60), slice(60, None)
    model = fit_model2vec(tasks[train], errors[train], f, t0)
    m2v = model.select(tasks[test])
    asym = pairwise_asymmetric(f, tasks[test], t0).T.argmin(axis=1)
    best = errors[test].argmin(axis=1)
    assert np.mean(m2v == best) >= 0.95
    assert np.mean(asym == best) <= 0.7  # the planted bias does mislead the task-embedding-only selector
    assert _regret(errors[test], m2v) < 0.5 * _regret(errors[test], asym)
    # The learned m_j moved from F_j toward the planted m*_j.
    d_learned = np.mean([symmetric_distance(model.model_embs[j], m_true[j]) for j in range(len(f))])
    d_prior = np.mean([symmetric_distance(f[j], m_true[j]) for j in range(len(f))])
    assert d_learned < 0.8 * d_prior
    assert model.gamma > 0


def test_unknown_expert_task_is_learned_from_bias_alone():
    f, _, tasks, t0, errors = planted(0)
    f = f.copy()
    f[1] = np.nan  # expert 1's training task is unknown: F_1 = 0, m_1 = b_1
    model = fit_model2vec(tasks[:60], errors[:60], f, t0)
    np.testing.assert_array_equal(model.prior[1], 0.0)
    assert np.mean(model.select(tasks[60:]) == errors[60:].argmin(axis=1)) >= 0.9


def test_fit_is_deterministic_and_respects_allowed():
    f, _, tasks, t0, errors = planted(1, n=30)
    allowed = np.ones_like(errors, dtype=bool)
    allowed[:, 2] = False
    a = fit_model2vec(tasks, errors, f, t0, allowed=allowed, epochs=20)
    b = fit_model2vec(tasks, errors, f, t0, allowed=allowed, epochs=20)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert a.gamma == b.gamma
    assert np.isfinite(a.bias).all()
    # Expert 2 gets no labels and no softmax mass, so its bias only feels weight decay from 0: it stays 0.
    np.testing.assert_array_equal(a.bias[2], 0.0)
    assert not np.any(a.select(tasks, allowed) == 2)


def test_early_stopping_on_held_out_tasks():
    # Errors unrelated to the embeddings: validation loss cannot keep improving, so patience must stop the fit.
    f, _, tasks, t0, _ = planted(2, n=40)
    errors = np.random.default_rng(3).uniform(0.1, 0.5, (40, 4))
    model = fit_model2vec(tasks, errors, f, t0, epochs=300, patience=5, val_fraction=0.25)
    assert model.epochs_run < 300
    fixed = fit_model2vec(tasks, errors, f, t0, epochs=300)
    assert fixed.epochs_run == 300


def test_numba_kernel_matches_broadcast_autograd_in_value_and_gradient(monkeypatch):
    # Same d_sym and the same ∂L/∂models (derivation in t2v_ray/core/sym_kernel.py) as autograd through the
    # broadcast formula, for an arbitrary upstream gradient G; zero entries (unused filters) included.
    from t2v_ray.core import model2vec as mv
    from t2v_ray.core import sym_kernel

    if not sym_kernel.available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(0)
    models = rng.gamma(0.5, 1.0, (4, 300))
    models[:, :20] = 0.0
    tasks = rng.gamma(0.5, 1.0, (7, 300))
    upstream = torch.tensor(rng.standard_normal((7, 4)))
    out = {}
    for name, threshold in (("kernel", 0), ("autograd", 10**12)):
        monkeypatch.setattr(mv, "KERNEL_MIN_ENTRIES", threshold)
        a = torch.tensor(models).requires_grad_()
        d = mv.symmetric_distance_torch(a, torch.tensor(tasks))
        d.backward(upstream)
        out[name] = (d.detach().numpy(), a.grad.numpy())
    np.testing.assert_allclose(out["kernel"][0], out["autograd"][0], atol=1e-12)
    scale = np.abs(out["autograd"][1]).max()
    np.testing.assert_allclose(out["kernel"][1] / scale, out["autograd"][1] / scale, atol=1e-6)


def test_cross_fit_folds_partition_the_tasks_and_default_to_leave_one_out():
    from t2v_ray.core.selection import cross_fit_folds

    folds = cross_fit_folds(23, 5, seed=3)
    assert len(folds) == 5 and sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert {len(f) for f in folds} <= {4, 5}
    assert [f.tolist() for f in cross_fit_folds(4, 0)] == [[0], [1], [2], [3]]
    assert [f.tolist() for f in cross_fit_folds(4, 9)] == [[0], [1], [2], [3]]


def test_k_fold_model2vec_scores_a_fold_only_with_a_fit_that_never_saw_it():
    # Each fold's rows must equal a fit on the other folds' tasks alone, scored on the held-out tasks.
    from t2v_ray.core.model2vec import fit_model2vec
    from t2v_ray.core.selection import cross_fit_folds, loo_model2vec

    rng = np.random.default_rng(1)
    tasks, experts, t0 = rng.gamma(0.5, 1, (9, 40)), rng.gamma(0.5, 1, (3, 40)), rng.gamma(0.5, 1, 40)
    err = rng.uniform(0.1, 0.6, (9, 3))
    scores = loo_model2vec(tasks, err, experts, t0, folds=3, epochs=5)
    for held in cross_fit_folds(9, 3):
        rest = np.setdiff1d(np.arange(9), held)
        m = fit_model2vec(tasks[rest], err[rest], experts, t0, epochs=5)
        np.testing.assert_allclose(scores[held], m.scores(tasks[held]), rtol=1e-6)
