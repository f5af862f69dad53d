"""evaluate_selection on the planted synthetic root: rows, hand-computed values, protocols, filtering."""

from __future__ import annotations

import numpy as np
import pytest

from t2v_ray.core.distance import asymmetric_distance, symmetric_distance
from t2v_ray.report.evaluate import evaluate_selection

EXPECTED_ROWS = [
    "Optimal",
    "Chance",
    "Generic",
    "Task2Vec",
    "Asymmetric Task2Vec",
    "Asym. Task2Vec (α sweep)",
    "MODEL2VEC",
    "LogME",
    "LEEP",
    "NCE",
]


def _allowed(synth) -> np.ndarray:
    return np.array([[t not in src for src in synth.sources] for t in synth.task_ids])


def _hand_picks(synth, distance) -> np.ndarray:
    """argmin over allowed experts with a known source of distance(task vector, expert vector)."""
    allowed, experts = _allowed(synth), synth.expert_vectors()
    picks = []
    for i, v in enumerate(synth.vectors):
        d = [distance(v, f) if allowed[i, j] and synth.sources[j] else np.inf for j, f in enumerate(experts)]
        picks.append(int(np.argmin(d)))
    return np.array(picks)


def test_rows_in_table1_order_and_empty_transfer_column_skipped(evaluated):
    table, _ = evaluated
    # h_score is all NaN in the grid, so there is no H-score row.
    assert list(table["selector"]) == EXPECTED_ROWS
    assert (table["n_tasks"] == 12).all()


def test_values_match_hand_computation(evaluated, synth):
    table, details = evaluated
    row = table.set_index("selector")
    allowed, err = _allowed(synth), synth.errors
    opt = np.where(allowed, err, np.inf).min(axis=1)
    assert row.loc["Optimal", "mean_error"] == pytest.approx(opt.mean(), rel=1e-12)
    chance = np.array([e[a].mean() for e, a in zip(err, allowed, strict=True)])
    assert row.loc["Chance", "rel_increase"] == pytest.approx(chance.mean() / opt.mean() - 1, rel=1e-12)
    generic = synth.expert_ids.index("generic")
    assert row.loc["Generic", "rel_increase"] == pytest.approx(
        err[:, generic].mean() / opt.mean() - 1, rel=1e-12
    )

    n = np.arange(len(opt))
    sym = _hand_picks(synth, symmetric_distance)
    asym = _hand_picks(synth, lambda v, f: asymmetric_distance(f, v, synth.trivial, 0.15))
    np.testing.assert_array_equal(details.picks["Task2Vec"], sym)
    np.testing.assert_array_equal(details.picks["Asymmetric Task2Vec"], asym)
    for name, picks in (("Task2Vec", sym), ("Asymmetric Task2Vec", asym)):
        assert row.loc[name, "rel_increase"] == pytest.approx(
            err[n, picks].mean() / opt.mean() - 1, rel=1e-12
        )
        assert row.loc[name, "regret"] == pytest.approx((err[n, picks] - opt).mean(), rel=1e-12)
    # LEEP is the negated error here, so it always finds the optimum.
    assert row.loc["LEEP", "rel_increase"] == pytest.approx(0.0, abs=1e-12)


def test_planted_structure_is_recovered(evaluated):
    table, _ = evaluated
    row = table.set_index("selector")
    # Experts from the same family are much better than the generic one, and the embeddings find them.
    for name in ("Task2Vec", "Asymmetric Task2Vec", "MODEL2VEC"):
        assert row.loc[name, "rel_increase"] < 0.1 < row.loc["Generic", "rel_increase"]
        assert (
            row.loc[name, "rel_increase_lo"]
            <= row.loc[name, "rel_increase"]
            <= row.loc[name, "rel_increase_hi"]
        )


def test_taxonomy_protocol_never_picks_the_tasks_own_expert(evaluated):
    _, details = evaluated
    own = np.array([details.expert_ids.index(f"x-{t}") for t in details.task_ids])
    for name, picks in details.picks.items():
        assert not (picks == own).any(), name
    per_task = details.per_task()
    assert len(per_task) == len(details.task_ids) * len(details.picks)
    assert (per_task["error"] >= per_task["optimal_error"] - 1e-15).all()


def test_failed_rows_are_ignored(evaluated, synth):
    _, details = evaluated
    assert "broken/task" not in details.embeddings.task_ids
    generic = details.expert_ids.index("generic")
    # The 'error' grid row for (generic, last task) claims error 0.0; the ok value must be used.
    assert details.errors[-1, generic] == pytest.approx(synth.errors[-1, generic])


def test_mixed_protocol_lets_task2vec_pick_the_tasks_own_expert(synth):
    r = synth.root
    table, details = evaluate_selection(
        str(r / "embeddings.parquet"),
        str(r / "grid.parquet"),
        str(r / "experts.parquet"),
        None,
        protocol="mixed",
        n_boot=20,
        model2vec=False,
    )
    own = np.array([details.expert_ids.index(f"x-{t}") for t in details.task_ids])
    np.testing.assert_array_equal(details.picks["Task2Vec"], own)  # d_sym(t, t) = 0
    assert details.allowed.all()
    assert "MODEL2VEC" not in set(table["selector"])
    with pytest.raises(ValueError, match="protocol"):
        evaluate_selection(str(r / "embeddings.parquet"), str(r / "grid.parquet"), None, protocol="oracle")


def _grid_with_n_test(synth, tmp_path, n_test):
    """A copy of the synthetic results root whose grid rows record ``n_test(row)`` test images."""
    import shutil

    import pyarrow as pa

    from t2v_ray.data import storage

    root = tmp_path / "root"
    shutil.copytree(synth.root, root)
    grid = storage.read_parquet(str(root / "grid.parquet"))
    counts = [n_test(r) for r in grid.to_pylist()]
    storage.write_parquet_atomic(
        grid.append_column("n_test", pa.array(counts, pa.int64())), str(root / "grid.parquet")
    )
    return root


def _evaluate(root, n_boot=300):
    return evaluate_selection(
        str(root / "embeddings.parquet"), str(root / "grid.parquet"), str(root / "experts.parquet"),
        None, n_boot=n_boot, seed=1, model2vec=False,
    )  # fmt: skip


def test_intervals_resample_each_cells_test_set_from_the_grids_n_test(synth, tmp_path):
    from t2v_ray.core.selection import evaluate_selectors

    root = _grid_with_n_test(synth, tmp_path, lambda r: 40)
    table, d = _evaluate(root)
    want = evaluate_selectors(
        d.errors, d.allowed, picks={"Generic": d.picks["Generic"]}, n_test=np.full(len(d.task_ids), 40),
        n_boot=300, seed=1,
    ).set_index("selector")  # fmt: skip
    got = table.set_index("selector")
    cols = ["rel_increase_lo", "rel_increase_hi", "mean_error_se"]
    for name in ("Optimal", "Chance", "Generic"):
        np.testing.assert_allclose(got.loc[name, cols].astype(float), want.loc[name, cols].astype(float))
    tasks_only = _evaluate(synth.root)[0].set_index("selector")
    assert got.loc["Generic", "mean_error_se"] > tasks_only.loc["Generic", "mean_error_se"]


def test_a_grid_row_without_a_test_set_size_is_named(synth, tmp_path):
    task = synth.task_ids[2]
    root = _grid_with_n_test(
        synth, tmp_path, lambda r: 0 if (r["expert_id"], r["task_id"]) == ("generic", task) else 40
    )
    with pytest.raises(ValueError, match=f"expert 'generic', task '{task}'.*n_test = 0"):
        _evaluate(root)


def test_variational_embeddings_are_not_given_the_prior_twice(synth, tmp_path):
    import shutil

    import pyarrow as pa

    from t2v_ray.core.selection import asymmetric_scores
    from t2v_ray.data import storage

    root = tmp_path / "root"
    shutil.copytree(synth.root, root)
    emb = storage.read_parquet(str(root / "embeddings.parquet"))
    i = emb.schema.get_field_index("method")
    emb = emb.set_column(i, "method", pa.array(["variational"] * len(emb)))
    storage.write_parquet_atomic(emb, str(root / "embeddings.parquet"))
    _, var = _evaluate(root, n_boot=10)
    _, mc = _evaluate(synth.root, n_boot=10)
    for d, prior in ((var, True), (mc, False)):
        want = asymmetric_scores(d.task_vectors, d.expert_task_embs, d.embeddings.trivial, 0.15, prior)
        np.testing.assert_allclose(d.scores["Asymmetric Task2Vec"], want, rtol=1e-12)
    assert not np.allclose(var.scores["Asymmetric Task2Vec"], mc.scores["Asymmetric Task2Vec"])


def test_expert_margins_are_generic_minus_expert_on_each_source_task(evaluated, synth):
    # The synthetic grid's errors are known per cell: the margin of expert j on its source task s is
    # err[s, generic] - err[s, j], one row per (fine-tuned expert, source task), none for the generic expert.
    _, details = evaluated
    m = details.expert_margins()
    gen = synth.expert_ids.index("generic")
    expected = {
        (e, t): synth.errors[synth.task_ids.index(t), gen] - synth.errors[synth.task_ids.index(t), j]
        for j, (e, src) in enumerate(zip(synth.expert_ids, synth.sources, strict=True))
        for t in src
    }
    got = {(r.expert_id, r.source_task): r.margin for r in m.itertuples()}
    assert got.keys() == expected.keys() and "generic" not in set(m.expert_id)
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-12)
