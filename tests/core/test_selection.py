"""Selectors, protocols and Table 1 metrics, checked by hand on small grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2v_ray.core.distance import asymmetric_distance, symmetric_distance
from t2v_ray.core.selection import (
    asymmetric_scores,
    chance_errors,
    evaluate_selectors,
    generic_picks,
    loo_mask,
    loo_model2vec,
    oracle_picks,
    pick_lowest,
    sweep_alpha,
    symmetric_scores,
)
from tests.core.test_model2vec import planted

# Rows = tasks, columns = experts. Optimal per task: 0.10 (j0), 0.15 (j1), 0.20 (j2), 0.10 (j2); mean 0.1375.
ERR = np.array(
    [
        [0.10, 0.20, 0.40, 0.30],
        [0.30, 0.15, 0.60, 0.35],
        [0.50, 0.25, 0.20, 0.45],
        [0.40, 0.45, 0.10, 0.50],
    ]
)
PICKS = np.array([1, 1, 0, 3])  # selected errors 0.20, 0.15, 0.50, 0.50; mean 0.3375


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _row(df, name):
    return df.set_index("selector").loc[name]


def test_relative_error_both_readings_by_hand():
    df = evaluate_selectors(ERR, picks={"A": PICKS}, n_boot=200)
    a = _row(df, "A")
    # Table 1 reading: 0.3375 / 0.1375 - 1 = 0.2 / 0.1375 = 16/11.
    np.testing.assert_allclose(a.rel_increase, 16 / 11, rtol=1e-12)
    # Per-task reading: (0.2/0.1 - 1, 0, 0.5/0.2 - 1, 0.5/0.1 - 1) = (1, 0, 1.5, 4), mean 6.5/4.
    np.testing.assert_allclose(a.mean_rel_increase, 1.625, rtol=1e-12)
    # Regret: mean(0.1, 0, 0.3, 0.4) = 0.2.
    np.testing.assert_allclose(a.regret, 0.2, rtol=1e-12)
    # Top-3: task 0 (one better) and 1 (best) hit; tasks 2 and 3 have three strictly better experts.
    np.testing.assert_allclose(a.top3, 0.5)
    np.testing.assert_allclose(a.mean_error, 0.3375, rtol=1e-12)
    assert a.n_tasks == 4 and np.isnan(a.kendall_tau)
    assert a.rel_increase_lo <= a.rel_increase <= a.rel_increase_hi
    opt = _row(df, "Optimal")
    np.testing.assert_allclose(
        [opt.mean_error, opt.rel_increase, opt.regret, opt.top3, opt.kendall_tau],
        [0.1375, 0, 0, 1, 1],
        atol=1e-12,
    )


def test_chance_is_mean_over_allowed_experts():
    allowed = np.ones_like(ERR, dtype=bool)
    allowed[0, 0] = allowed[3, 2] = False  # e.g. the expert trained on the task itself
    # Row means over allowed: (0.2+0.4+0.3)/3, 1.4/4, 1.4/4, (0.4+0.45+0.5)/3.
    want = np.array([0.3, 0.35, 0.35, 0.45])
    np.testing.assert_allclose(chance_errors(ERR, allowed), want, rtol=1e-12)
    df = evaluate_selectors(ERR, allowed, n_boot=10)
    chance = _row(df, "Chance")
    # Optimal under the mask: 0.20, 0.15, 0.20, 0.40 -> mean 0.2375.
    np.testing.assert_allclose(_row(df, "Optimal").mean_error, 0.2375, rtol=1e-12)
    np.testing.assert_allclose(chance.rel_increase, want.mean() / 0.2375 - 1, rtol=1e-12)
    # With 3 allowed experts every pick is top-3; with 4 distinct errors a random pick hits with probability 3/4.
    np.testing.assert_allclose(chance.top3, np.mean([1, 0.75, 0.75, 1]), rtol=1e-12)


def test_per_task_reading_guards_zero_optimal_error():
    # Task 1's optimal error is 0: (0.05 - 0) / max(0, floor) with floor 0.01 gives 5; task 0 gives 0.2/0.1 - 1 = 1.
    err = np.array([[0.1, 0.2], [0.0, 0.05]])
    df = evaluate_selectors(err, picks={"B": np.array([1, 1])}, err_floor=0.01, n_boot=10)
    np.testing.assert_allclose(_row(df, "B").mean_rel_increase, 3.0, rtol=1e-12)
    np.testing.assert_allclose(_row(df, "B").rel_increase, 0.25 / 0.1 - 1, rtol=1e-12)


def test_bootstrap_interval_is_exact_when_every_task_doubles_and_seeded():
    # Every e_sel = 2 e_opt, so every resample has mean(sel)/mean(opt) - 1 = 1: a zero-width interval at 1.
    err = np.array([[0.1, 0.2], [0.2, 0.4], [0.3, 0.6]])
    row = _row(evaluate_selectors(err, picks={"C": np.ones(3, int)}, n_boot=50), "C")
    np.testing.assert_allclose([row.rel_increase_lo, row.rel_increase_hi], [1.0, 1.0], rtol=1e-12)
    a = evaluate_selectors(ERR, picks={"A": PICKS}, n_boot=100, seed=7)
    b = evaluate_selectors(ERR, picks={"A": PICKS}, n_boot=100, seed=7)
    assert a.equals(b)
    assert _row(a, "A").rel_increase_lo < _row(a, "A").rel_increase_hi


def test_kendall_sign_and_transfer_scores_negated():
    # Scores ordered like the errors -> tau = 1; reversed -> -1. A transfer score (higher = better) equal to
    # -error ranks exactly like the truth and picks the optimal expert.
    df = evaluate_selectors(
        ERR, scores={"same": ERR, "reversed": -ERR}, transfer_scores={"T": -ERR}, n_boot=10
    )
    np.testing.assert_allclose(_row(df, "same").kendall_tau, 1.0, rtol=1e-12)
    np.testing.assert_allclose(_row(df, "reversed").kendall_tau, -1.0, rtol=1e-12)
    np.testing.assert_allclose(_row(df, "T").kendall_tau, 1.0, rtol=1e-12)
    np.testing.assert_allclose(_row(df, "T").regret, 0.0, atol=1e-15)
    assert list(df.columns) == [
        "selector",
        "mean_error",
        "rel_increase",
        "rel_increase_lo",
        "rel_increase_hi",
        "mean_rel_increase",
        "regret",
        "top3",
        "kendall_tau",
        "n_tasks",
    ]
    assert list(df.selector) == ["Optimal", "Chance", "same", "reversed", "T"]


def test_disallowed_pick_is_rejected():
    allowed = loo_mask(["a", "b", "c", "d"], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="not allowed"):
        evaluate_selectors(ERR, allowed, picks={"Generic": generic_picks(4, 0)})


def test_loo_mask_excludes_experts_trained_on_the_task():
    # Expert 0 trained on "a", expert 1 on the group {"b", "c"}, expert 2 unknown (generic).
    got = loo_mask(["a", "b", "c"], ["a", {"b", "c"}, None])
    want = np.array([[False, True, True], [True, False, True], [True, False, True]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(oracle_picks(np.array([[0.1, 0.2, 0.3]] * 3), got), [1, 0, 0])


def test_pick_lowest_respects_mask_and_nan():
    s = np.array([[0.1, np.nan, 0.3], [np.inf, np.inf, np.inf]])
    allowed = np.array([[False, True, True], [False, False, True]])
    np.testing.assert_array_equal(pick_lowest(s, allowed), [2, 2])


def _embeddings(seed: int, n: int = 8, k: int = 4, d: int = 6):
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 1.0, (n, d)), rng.gamma(2.0, 1.0, (k, d)), np.full(d, 0.5)


def test_task2vec_scores_match_distance_functions_and_skip_unknown_experts():
    tasks, experts, t0 = _embeddings(0)
    experts[3] = np.nan
    sym, asym = symmetric_scores(tasks, experts), asymmetric_scores(tasks, experts, t0, 0.15)
    np.testing.assert_allclose(sym[2, 1], symmetric_distance(tasks[2], experts[1]), rtol=1e-12)
    np.testing.assert_allclose(asym[2, 1], asymmetric_distance(experts[1], tasks[2], t0, 0.15), rtol=1e-12)
    assert np.isinf(sym[:, 3]).all() and not np.any(pick_lowest(asym) == 3)


def test_sweep_alpha_matches_brute_force_and_ignores_own_errors():
    tasks, experts, t0 = _embeddings(1)
    errors = np.random.default_rng(2).uniform(0.1, 0.6, (8, 4))
    alphas = [0.0, 0.3, 0.6, 1.0, 2.0]
    picks, chosen = sweep_alpha(tasks, experts, t0, errors, alphas=alphas)
    for i in range(8):
        rest = np.arange(8) != i
        means = [
            errors[rest][np.arange(7), pick_lowest(asymmetric_scores(tasks, experts, t0, a))[rest]].mean()
            for a in alphas
        ]
        assert chosen[i] == alphas[int(np.argmin(means))]
        assert picks[i] == pick_lowest(asymmetric_scores(tasks[i : i + 1], experts, t0, chosen[i]))[0]
    perturbed = errors.copy()
    perturbed[5] = np.random.default_rng(9).uniform(0, 1, 4)
    picks2, chosen2 = sweep_alpha(tasks, experts, t0, perturbed, alphas=alphas)
    assert chosen2[5] == chosen[5] and picks2[5] == picks[5]


def test_loo_model2vec_never_sees_the_held_out_ground_truth():
    tasks, experts, t0 = _embeddings(3)
    errors = np.random.default_rng(4).uniform(0.1, 0.6, (8, 4))
    base = loo_model2vec(tasks, errors, experts, t0, epochs=15)
    perturbed = errors.copy()
    perturbed[2] = [0.9, 0.0, 0.9, 0.9]  # task 2 now says expert 1 is perfect
    again = loo_model2vec(tasks, perturbed, experts, t0, epochs=15)
    np.testing.assert_array_equal(again[2], base[2])  # bit-identical: task 2's fit never saw its own row
    assert not np.allclose(np.delete(again, 2, axis=0), np.delete(base, 2, axis=0))  # the others did see it


def test_table1_on_planted_structure_model2vec_beats_asymmetric_task2vec():
    f, _, tasks, t0, errors = planted(0, n=20)
    scores = {
        "Asymmetric Task2Vec": asymmetric_scores(tasks, f, t0),
        "MODEL2VEC": loo_model2vec(tasks, errors, f, t0),
    }
    df = evaluate_selectors(errors, scores=scores, n_boot=100).set_index("selector")
    assert df.loc["MODEL2VEC", "regret"] < 0.5 * df.loc["Asymmetric Task2Vec", "regret"]
    assert df.loc["MODEL2VEC", "top3"] >= df.loc["Asymmetric Task2Vec", "top3"]
    assert df.loc["MODEL2VEC", "kendall_tau"] > df.loc["Asymmetric Task2Vec", "kendall_tau"]
    assert df.loc["MODEL2VEC", "rel_increase_hi"] < df.loc["Asymmetric Task2Vec", "rel_increase"]
