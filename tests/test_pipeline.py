"""Pipeline orchestration helpers: expert-task choice and the select-stage cache."""

from __future__ import annotations

import pandas as pd

from t2v_ray.config import load_config
from t2v_ray.pipeline import (
    PipelineConfig,
    _cached_select,
    _select_key,
    _store_select_key,
    pick_expert_tasks,
)
from t2v_ray.report.stage import SelectConfig


def test_select_cache_hits_only_for_identical_inputs(tmp_path):
    res, out = tmp_path / "results", tmp_path / "results" / "select" / "taxonomy"
    out.mkdir(parents=True)
    for name in ("embeddings.parquet", "grid.parquet", "experts.parquet"):
        (res / name).write_bytes(name.encode())
    pd.DataFrame({"selector": ["Optimal", "Chance"], "mean_error": [0.1, 0.2]}).to_csv(
        out / "table1.csv", index=False
    )
    scfg = SelectConfig(results=str(res), protocol="taxonomy")
    key = _select_key(scfg, str(res))
    assert _cached_select(str(out), key) is None  # never evaluated with these inputs
    _store_select_key(str(out), key)
    table, files = _cached_select(str(out), key)
    assert list(table["selector"]) == ["Optimal", "Chance"] and files["table1.csv"].endswith("table1.csv")
    (res / "grid.parquet").write_bytes(b"new ground truth")  # a changed grid must re-run the evaluation
    assert _select_key(scfg, str(res)) != key
    assert _select_key(
        SelectConfig(results=str(res), protocol="taxonomy", n_boot=10), str(res)
    ) != _select_key(scfg, str(res))


def test_expert_tasks_default_to_the_largest_taxonomy_tasks(small_glyph_library):
    from t2v_ray.data.library import TaskLibrary

    cfg = load_config(
        PipelineConfig, None, ["library.source=uri", f"library.uri={small_glyph_library}", "n_experts=3"]
    )
    picked = pick_expert_tasks(cfg, str(small_glyph_library))
    tax = sorted(
        (t for t in TaskLibrary.open(str(small_glyph_library)).tasks if t.kind == "taxonomy"),
        key=lambda t: (-t.n_train, t.task_id),
    )
    assert picked == tuple(t.task_id for t in tax[:3])
    explicit = load_config(PipelineConfig, None, ["experts.tasks=[a,b]"])
    assert pick_expert_tasks(explicit, str(small_glyph_library)) == ("a", "b")
