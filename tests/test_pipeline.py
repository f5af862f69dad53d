"""Pipeline orchestration helpers: expert-task choice (the select-stage cache: tests/stages/test_select.py)."""

from __future__ import annotations

from t2v_ray.config import load_config
from t2v_ray.pipeline import PipelineConfig, pick_expert_tasks


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
