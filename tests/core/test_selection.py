"""Selectors, protocols and Table 1 metrics, checked by hand on small grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2v_ray.core.distance import asymmetric_distance, symmetric_distance
from t2v_ray.core.selection import (
    asymmetric_scores,
    binomial_se,
    bootstrap_errors,
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


def test_binomial_se_closed_form():
    np.testing.assert_allclose(binomial_se(0.3, 200), np.sqrt(0.3 * 0.7 / 200), rtol=1e-15)
    np.testing.assert_allclose(binomial_se(np.array([0.0, 0.5]), np.array([50, 4])), [0.0, 0.25], rtol=1e-15)
    assert np.isnan(binomial_se(0.2, 0)) and np.isnan(binomial_se(np.nan, 10))


def test_bootstrap_of_one_task_has_the_binomial_variance_of_its_test_set():
    # One task, so resampling tasks changes nothing: e* = Binomial(200, e) / 200, Var = e (1 - e) / 200.
    err, n = np.array([[0.3, 0.1]]), 200
    draws = bootstrap_errors(err, np.array([n]), n_boot=40_000, seed=3)
    assert draws.tasks.shape == (40_000, 1) and draws.errors.shape == (40_000, 1, 2)
    for j, e in enumerate(err[0]):
        x = draws.errors[:, 0, j]
        np.testing.assert_allclose(x.mean(), e, atol=4 * np.sqrt(e * (1 - e) / n / 40_000))
        np.testing.assert_allclose(
            x.var(), e * (1 - e) / n, rtol=0.03
        )  # sd of a variance estimate: sqrt(2/B)
        assert np.allclose(x * n, np.round(x * n))  # whole test images
    # The same spread reaches Table 1: a selector always picking expert 0 has mean-error SE sqrt(e(1-e)/n).
    row = _row(evaluate_selectors(err, picks={"A": np.array([0])}, n_test=[n], n_boot=40_000), "A")
    np.testing.assert_allclose(row.mean_error_se, np.sqrt(0.3 * 0.7 / n), rtol=0.03)


def test_bootstrap_variance_of_a_mean_error_adds_task_and_test_set_variance():
    # Draws resample T tasks, then each task's test set. By the law of total variance the mean error of a
    # fixed pick has Var = (pop. variance of e_i + mean_i e_i (1 - e_i) / n_i) / T.
    err = np.array([[0.10, 0.5], [0.30, 0.5], [0.20, 0.5], [0.45, 0.5]])
    n_test = np.array([100, 400, 50, 200])
    e = err[:, 0]
    want = (e.var() + np.mean(e * (1 - e) / n_test)) / len(e)
    row = _row(evaluate_selectors(err, picks={"A": np.zeros(4, int)}, n_test=n_test, n_boot=40_000), "A")
    np.testing.assert_allclose(row.mean_error_se**2, want, rtol=0.05)
    tasks_only = _row(evaluate_selectors(err, picks={"A": np.zeros(4, int)}, n_boot=40_000), "A")
    np.testing.assert_allclose(tasks_only.mean_error_se**2, e.var() / len(e), rtol=0.05)


def test_every_row_is_scored_on_the_same_draws_with_its_picks_kept():
    # Selectors and Optimal read the same draw, with Optimal's picks kept: a selector that matches them on
    # every task is at exactly 0 in every draw, although its errors move by ~sqrt(e(1-e)/30) = 6 pp per task.
    n_test = np.full(4, 30)
    best = oracle_picks(ERR)
    picks = {"A": PICKS, "best": best, "A again": PICKS.copy()}
    df = evaluate_selectors(ERR, picks=picks, n_test=n_test, n_boot=500)
    b = _row(df, "best")
    assert b.rel_increase == b.rel_increase_lo == b.rel_increase_hi == 0 and b.mean_error_se > 0.01
    cols = ["rel_increase_lo", "rel_increase_hi", "mean_error_se"]
    assert _row(df, "A again")[cols].equals(_row(df, "A")[cols])
    # The intervals hold their estimate (the draws are centred on the measured errors).
    assert (df["rel_increase_lo"] <= df["rel_increase"]).all() and (
        df["rel_increase"] <= df["rel_increase_hi"]
    ).all()
    # Huge test sets: the test-set noise vanishes and the intervals are those of the bootstrap over tasks.
    sharp = evaluate_selectors(ERR, picks={"A": PICKS}, n_test=np.full(4, 10**9), n_boot=300)
    tasks = evaluate_selectors(ERR, picks={"A": PICKS}, n_boot=300)
    np.testing.assert_allclose(sharp["rel_increase_lo"], tasks["rel_increase_lo"], atol=1e-3)
    np.testing.assert_allclose(sharp["rel_increase_hi"], tasks["rel_increase_hi"], atol=1e-3)


def test_bootstrap_rejects_bad_test_counts_by_cell():
    allowed = np.ones_like(ERR, dtype=bool)
    allowed[1, 0] = False
    counts = np.full(ERR.shape, 50.0)
    counts[1, 0] = 0  # not allowed: never used, so fine
    bootstrap_errors(ERR, counts, n_boot=5, allowed=allowed)
    counts[2, 3] = 0
    with pytest.raises(ValueError, match=r"n_test\[2, 3\] = 0.0 \(task row 2, expert column 3\)"):
        bootstrap_errors(ERR, counts, n_boot=5, allowed=allowed)
    with pytest.raises(ValueError, match=r"n_test has shape \(3,\)"):
        bootstrap_errors(ERR, np.ones(3), n_boot=5)
    with pytest.raises(ValueError, match=r"errors must lie in \[0, 1\]"):
        bootstrap_errors(ERR * 3, np.full(4, 10), n_boot=5)


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
        "mean_error_se",
        "rel_increase",
        "rel_increase_lo",
        "rel_increase_hi",
        "mean_rel_increase",
        "regret",
        "top3",
        "kendall_tau",
        "n_tasks",
        "vs_generic",
        "vs_generic_lo",
        "vs_generic_hi",
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


def test_paired_difference_to_generic_is_exact_for_a_constant_shift_and_zero_for_equal_picks():
    # Expert 1 is exactly 0.1 better than expert 0 (Generic) on every task. Resampling tasks only (no n_test),
    # every draw's mean(e_1) - mean(e_0) is -0.1, so the paired interval is the point [-0.1, -0.1]; a selector
    # that picks Generic everywhere differs by 0 in every draw. With binomial test-set draws the paired
    # interval must still exclude 0 (200 test images, a 10-point gap: se of the difference ~ 0.5 pp / sqrt(n)).
    from t2v_ray.core.selection import evaluate_selectors

    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.6, 40)
    err = np.stack([base, base - 0.1, base + 0.05], axis=1)
    picks = {"Generic": np.zeros(40, int), "Better": np.ones(40, int), "Same": np.zeros(40, int)}
    t = evaluate_selectors(err, picks=picks, n_boot=300).set_index("selector")
    np.testing.assert_allclose(
        t.loc["Better", ["vs_generic", "vs_generic_lo", "vs_generic_hi"]], -0.1, atol=1e-12
    )
    np.testing.assert_allclose(
        t.loc["Same", ["vs_generic", "vs_generic_lo", "vs_generic_hi"]], 0.0, atol=1e-12
    )
    assert t.loc["Optimal", "vs_generic"] == pytest.approx(-0.1)
    noisy = evaluate_selectors(err, picks=picks, n_test=np.full(40, 200), n_boot=300).set_index("selector")
    lo, hi = noisy.loc["Better", ["vs_generic_lo", "vs_generic_hi"]]
    assert lo < -0.1 < hi < 0
    without = evaluate_selectors(err, picks={"Better": np.ones(40, int)}, n_boot=50)
    assert without["vs_generic"].isna().all()
