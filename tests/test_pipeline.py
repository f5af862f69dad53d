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


def test_spread_pick_gives_every_family_an_expert_before_any_gets_a_second(small_glyph_library):
    from t2v_ray.data.library import TaskLibrary

    lib = TaskLibrary.open(str(small_glyph_library))
    families: dict[tuple, list] = {}
    for t in lib.tasks:
        if t.kind in ("taxonomy", "attribute"):
            families.setdefault(tuple(t.taxonomy[:2]), []).append(t)
    n_fam = len(families)
    assert n_fam >= 3
    cfg = load_config(PipelineConfig, None, [f"n_experts={n_fam + 1}", "expert_pick=spread"])
    picked = pick_expert_tasks(cfg, str(small_glyph_library))
    family_of = {t.task_id: tuple(t.taxonomy[:2]) for t in lib.tasks}
    first = picked[:n_fam]
    assert len(picked) == n_fam + 1 and len(set(picked)) == len(picked)
    assert {family_of[t] for t in first} == set(families)  # one per family first
    for t in first:  # ... and it is the family's largest task
        assert lib.task(t).n_train == max(s.n_train for s in families[family_of[t]])
    sizes = [lib.task(t).n_train for t in first]
    assert sizes == sorted(sizes, reverse=True)  # the round in order of size
    # The extra pick is the largest second task of any family.
    seconds = [
        sorted(ts, key=lambda s: (-s.n_train, s.task_id))[1] for ts in families.values() if len(ts) > 1
    ]
    assert picked[-1] == min(seconds, key=lambda s: (-s.n_train, s.task_id)).task_id


def test_demo_presets_pick_their_config_files():
    from t2v_ray.cli.demo import preset_config

    assert preset_config("small").name == "demo.yaml"
    assert preset_config("default").name == "demo-default.yaml"
    cfg = load_config(PipelineConfig, preset_config("default"))
    assert (cfg.library.preset, cfg.expert_pick, cfg.n_experts) == ("default", "spread", 12)
    assert cfg.embed.input_size == cfg.experts.input_size  # the probe and the experts see the same pixels
