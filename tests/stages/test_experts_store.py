"""Expert storage without Ray: records, weights round trip, index, leave-one-out, plan validation, skipping."""

from __future__ import annotations

import pytest
import torch

from t2v_ray.results.experts import GENERIC_ID, ExpertError, ExpertStore, excluded_experts
from t2v_ray.stages.experts import ExpertsConfig, build_expert, expert_plan
from t2v_ray.train.finetune import ExpertTrainConfig
from tests.train.tiny_tasks import build_tiny_library

TINY_TRAIN = ExpertTrainConfig(
    head_epochs=1, head_lr=1e-2, finetune_epochs=1, lr=0.05, lr_milestones=(), epoch_size=32, batch_size=16
)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("lib") / "tiny")
    build_tiny_library(uri, n_train=4, n_test=2, tasks=["shapes", "color", "size"])
    return uri


@pytest.fixture(scope="module")
def stored(library, tmp_path_factory) -> tuple[str, ExpertsConfig]:
    out = str(tmp_path_factory.mktemp("experts"))
    cfg = ExpertsConfig(
        probe="small_cnn",
        weights=None,
        tasks=("shapes",),
        groups={"pair": ["color", "size"]},
        train=TINY_TRAIN,
    )
    for item in expert_plan(cfg, {"shapes", "color", "size"}):
        build_expert(item["expert_id"], item["tasks"], cfg, library, out)
    return out, cfg


def test_plan_lists_generic_single_and_group_experts_and_rejects_unknown_tasks():
    cfg = ExpertsConfig(tasks=("a/b",), groups={"g 1": ["a/b", "c"]})
    plan = expert_plan(cfg, {"a/b", "c"})
    assert plan == [
        {"expert_id": GENERIC_ID, "tasks": []},
        {"expert_id": "a_b", "tasks": ["a/b"]},
        {"expert_id": "g_1", "tasks": ["a/b", "c"]},
    ]
    with pytest.raises(ValueError, match="unknown task"):
        expert_plan(ExpertsConfig(tasks=("zzz",)), {"a"})
    with pytest.raises(ValueError, match="duplicate"):
        expert_plan(ExpertsConfig(tasks=("x",), groups={"x": ["x"]}), {"x"})


def test_index_records_source_tasks_for_leave_one_out(stored):
    out, _ = stored
    index = ExpertStore(out).write_index()
    rows = {r["expert_id"]: r for r in index.to_pylist()}
    assert set(rows) == {"generic", "shapes", "pair"}
    assert rows["generic"]["source_tasks"] == [] and rows["pair"]["source_tasks"] == ["color", "size"]
    assert rows["pair"]["n_classes"] == 3 + 2  # merged label space
    assert excluded_experts(index, "size") == {"pair"}
    assert excluded_experts(index, "shapes") == {"shapes"}
    assert ExpertStore(out).read_index().equals(index)


def test_weights_reload_as_a_probe_with_the_trained_head(stored):
    out, _ = stored
    record, probe = ExpertStore(out).load_probe("shapes")
    assert probe.state_hash() == record.state_hash
    assert probe.source_head is not None and probe.source_head.out_features == 3
    assert record.curves["train_loss"] and record.metrics["test_error"] is not None
    _, generic = ExpertStore(out).load_probe("generic")
    assert generic.source_head is None  # a random-init probe has no source head
    assert generic.state_hash() != probe.state_hash()


def test_rebuilding_an_identical_expert_is_skipped_but_a_new_recipe_retrains(stored, library):
    out, cfg = stored
    before = ExpertStore(out).load_record("shapes")
    again, skipped = build_expert("shapes", ["shapes"], cfg, library, out)
    assert skipped and again.created_at == before.created_at
    cfg2 = ExpertsConfig(**{**cfg.__dict__, "train": ExpertTrainConfig(**{**TINY_TRAIN.__dict__, "seed": 1})})
    _, skipped = build_expert("shapes", ["shapes"], cfg2, library, out)
    assert not skipped


def test_missing_weights_and_missing_records_are_expert_errors(stored, tmp_path):
    out, _ = stored
    with pytest.raises(ExpertError, match="no expert.json"):
        ExpertStore(out).load_probe("nobody")
    broken = ExpertStore(str(tmp_path))
    rec = ExpertStore(out).load_record("generic")
    broken.save(rec, {"not": torch.zeros(1)})
    with pytest.raises(ExpertError, match="do not load"):
        broken.load_probe("generic")
