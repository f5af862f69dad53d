"""Fixtures: one synthetic results root per session, and its evaluation (MODEL2VEC LOO is the slow part)."""

from __future__ import annotations

import pytest

from tests.report.synth import Synth, make_results


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return make_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def evaluated(synth: Synth):
    """(table, details) of the taxonomy protocol on the synthetic root."""
    from t2v_ray.report.evaluate import evaluate_selection

    r = synth.root
    return evaluate_selection(
        str(r / "embeddings.parquet"),
        str(r / "grid.parquet"),
        str(r / "experts.parquet"),
        str(r / "library"),
        protocol="taxonomy",
        n_boot=200,
        seed=0,
    )
