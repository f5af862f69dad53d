"""Task2Vec distances (paper §3.3)."""

from __future__ import annotations

import numpy as np
import pytest

from t2v_ray.core.distance import (
    asymmetric_distance,
    complexity,
    cosine_distance,
    pairwise_asymmetric,
    pairwise_symmetric,
    symmetric_distance,
)


@pytest.fixture
def embs():
    return np.random.default_rng(0).gamma(0.5, 1.0, size=(6, 40))


def test_symmetric_distance_properties(embs):
    for a in embs:
        assert symmetric_distance(a, a) == pytest.approx(0.0, abs=1e-12)
        for b in embs:
            d = symmetric_distance(a, b)
            assert 0.0 <= d <= 1.0
            assert d == pytest.approx(symmetric_distance(b, a), abs=1e-12)


def test_symmetric_distance_closed_form():
    # a = (1, 0), b = (0, 1): a/(a+b) = (1, 0), b/(a+b) = (0, 1) -> orthogonal -> distance 1.
    assert symmetric_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # a = (1, 1), b = (1, 3): halves (1/2, 1/4) and (1/2, 3/4); cos = (1/4 + 3/16) / (|u||v|).
    u, v = np.array([0.5, 0.25]), np.array([0.5, 0.75])
    expected = 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    assert symmetric_distance([1.0, 1.0], [1.0, 3.0]) == pytest.approx(expected)


def test_zero_entries_do_not_produce_nan():
    a = np.array([0.0, 1.0, 0.0])
    b = np.array([0.0, 2.0, 1.0])
    d = symmetric_distance(a, b)
    assert np.isfinite(d)
    assert cosine_distance(np.zeros(3), np.zeros(3)) == 0.0
    assert np.isfinite(pairwise_symmetric(np.stack([a, b, np.zeros(3)]))).all()


def test_asymmetric_matches_formula(embs):
    t0 = np.full(40, 0.3)
    a, b = embs[0], embs[1]
    for alpha in (0.0, 0.15, 1.0):
        # Monte-Carlo embeddings lack the prior: the complexity term compares a + t0 (the variational footing).
        expected = symmetric_distance(a, b) - alpha * symmetric_distance(a + t0, t0)
        assert asymmetric_distance(a, b, t0, alpha) == pytest.approx(expected, abs=1e-12)
        # Variational embeddings hold it already: the paper's formula as written.
        expected = symmetric_distance(a, b) - alpha * symmetric_distance(a, t0)
        assert asymmetric_distance(a, b, t0, alpha, includes_prior=True) == pytest.approx(expected, abs=1e-12)


def test_complexity_is_zero_for_a_trivial_task_and_grows_with_the_fisher_information():
    # Paper §3.3 and supplement §1.2: complexity is the distance from the trivial embedding, and sources with less
    # information (models trained on less data) must come out closer to it. Scale one Fisher G by s over 8 decades
    # around t0's scale: the term must rise monotonically from 0. Compared bare, d_sym(sG, t0) does not: it is
    # 0.474 as s -> 0 (and 1 at s = 0), dips to 0.472 at s = 0.03, peaks at 0.887 at s = 1e3 and is 0.841 at 1e4.
    g = np.random.default_rng(1).gamma(0.5, 1.0, 40)
    t0 = np.full(40, 0.3)
    scales = np.logspace(-4, 4, 17)
    c = [complexity(s * g, t0) for s in scales]
    assert complexity(np.zeros(40), t0) == 0.0 and c[0] < 1e-3
    assert np.all(np.diff(c) > 0), np.round(c, 4)
    # The sym - asym gap of the public distance is alpha times that term.
    gaps = [symmetric_distance(s * g, g) - asymmetric_distance(s * g, g, t0, 0.5) for s in scales]
    np.testing.assert_allclose(gaps, 0.5 * np.array(c), atol=1e-12)
    # A Monte-Carlo F and its variational equivalent F + t0 have the same complexity.
    assert complexity(g, t0) == pytest.approx(complexity(g + t0, t0, includes_prior=True), abs=1e-15)


def test_pairwise_matrices_match_scalar_versions(embs):
    d = pairwise_symmetric(embs)
    for i in range(6):
        for j in range(6):
            assert d[i, j] == pytest.approx(symmetric_distance(embs[i], embs[j]), abs=1e-10)
    t0 = embs.mean(0)
    da = pairwise_asymmetric(embs[:2], embs, t0, alpha=0.15)
    assert da[1, 4] == pytest.approx(asymmetric_distance(embs[1], embs[4], t0, 0.15), abs=1e-10)
    dv = pairwise_asymmetric(embs[:2], embs, t0, alpha=0.15, includes_prior=True)
    want = asymmetric_distance(embs[1], embs[4], t0, 0.15, includes_prior=True)
    assert dv[1, 4] == pytest.approx(want, abs=1e-10) and dv[1, 4] != pytest.approx(da[1, 4], abs=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same probe"):
        symmetric_distance(np.ones(3), np.ones(4))


def test_cross_distances_are_the_same_in_row_blocks(embs, monkeypatch):
    from t2v_ray.core import distance

    whole = distance.cross_symmetric(embs[:4], embs)
    monkeypatch.setattr(distance, "_BLOCK_ELEMENTS", 1)  # one row per block
    np.testing.assert_array_equal(distance.cross_symmetric(embs[:4], embs), whole)
    assert whole[2, 2] == pytest.approx(0.0, abs=1e-12) and whole[1, 3] == pytest.approx(
        symmetric_distance(embs[1], embs[3])
    )
