"""The offline glyph library: structure of the small preset, determinism, S3 via the CLI, no-op rebuilds."""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict

import pytest
from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data import storage
from t2v_ray.data.builders.fonts import discover_fonts
from t2v_ray.data.builders.glyph_plan import plan_tasks, split_counts
from t2v_ray.data.builders.glyphs import PRESETS, build_glyphs
from t2v_ray.data.library import TaskLibrary
from t2v_ray.data.taxonomy import taxonomy_matrix
from t2v_ray.data.validate import validate_library


def test_small_preset_structure(small_glyph_library):
    lib = TaskLibrary.open(str(small_glyph_library))
    tasks = {t.task_id: t for t in lib.tasks}
    by_dataset = Counter((t.dataset, t.kind) for t in lib.tasks)
    assert by_dataset[("glyphs", "taxonomy")] >= 6
    assert by_dataset[("glyphs-cub", "taxonomy")] == 2
    assert by_dataset[("glyphs-attr", "attribute")] == 2
    assert 8 <= len(tasks) <= 14

    latin = tasks["glyphs/European/Latin"]
    assert latin.taxonomy == ["glyphs", "European", "Latin"]
    assert latin.classes[0] == "U+0041 A" and latin.num_classes == 10
    # The CUB-like twin shares the taxonomy node and classes but is smaller (few images per class).
    cub = tasks["glyphs-cub/European/Latin"]
    assert (cub.taxonomy, cub.classes) == (latin.taxonomy, latin.classes)
    assert cub.n_images < latin.n_images
    assert tasks["glyphs/European"].classes[:3] == ["Latin", "Greek", "Cyrillic"]
    assert tasks["glyphs-attr/Latin/bold"].classes == ["regular", "bold"]

    # CUB-like tasks use held-out fonts: no font of the Latin task appears in its CUB twin.
    fonts = {
        k: {dict(a)["font"] for a in lib.read_task(k).column("attributes").to_pylist()}
        for k in (latin.task_id, cub.task_id)
    }
    assert fonts[latin.task_id].isdisjoint(fonts[cub.task_id])

    # Sibling scripts are 2 apart, the CUB twin 0 from its script task.
    d = taxonomy_matrix([latin, tasks["glyphs/European/Greek"], cub, tasks["glyphs/Semitic/Hebrew"]])
    assert d[0].tolist() == [0, 2, 0, 4]
    assert validate_library(str(small_glyph_library)).ok


def test_task_sizes_are_heavy_tailed_and_splits_stratified(small_glyph_library):
    lib = TaskLibrary.open(str(small_glyph_library))
    sizes = sorted(t.n_train for t in lib.tasks if t.dataset == "glyphs" and len(t.taxonomy) == 3)
    assert sizes[-1] > 1.5 * sizes[0]
    # Every class of every task has exactly its planned train and test images.
    plans, _ = plan_tasks(discover_fonts(PRESETS["small"].font_dirs), PRESETS["small"], seed=0)
    for plan in plans:
        table = lib.read_task(plan.task_id)
        got = Counter(zip(table.column("label").to_pylist(), table.column("split").to_pylist(), strict=True))
        assert [got[(c, "train")] for c in range(len(plan.classes))] == list(plan.train_counts), plan.task_id
        assert [got[(c, "test")] for c in range(len(plan.classes))] == list(plan.test_counts), plan.task_id


def test_every_task_of_the_small_preset_is_measured_on_at_least_200_test_images(small_glyph_library):
    lib = TaskLibrary.open(str(small_glyph_library))
    assert PRESETS["small"].min_test == PRESETS["default"].min_test == 200
    assert min(t.n_test for t in lib.tasks) >= 200, {t.task_id: t.n_test for t in lib.tasks}


def test_split_counts_by_hand():
    # counts (10, 30), 20 % test: the plain split holds out (2, 6) and trains on (8, 24). min_test 100 tops the
    # test split up in proportion to the counts: ceil(100 * 10/40) = 25, ceil(100 * 30/40) = 75.
    assert split_counts((10, 30), 0.2, 100) == ((8, 24), (25, 75))
    assert split_counts((10, 30), 0.2, 0) == ((8, 24), (2, 6))
    assert split_counts((10, 30), 0.2, 5) == ((8, 24), (2, 6))  # the plain split already has >= 5
    train, test = split_counts((3, 7, 11), 0.2, 200)  # ceil rounding never leaves the sum short
    assert train == (2, 6, 9) and sum(test) >= 200


def test_min_test_tops_up_test_sets_and_leaves_train_sets_and_fonts_alone(tmp_path):
    tiny = dict(scripts=("Latin",), max_cub_tasks=1, attribute_scripts=("Latin",), attributes=("bold",))
    kw = dict(small=True, seed=0, processes=1, contact_sheet=False, validate=False, **tiny)
    plain = build_glyphs(str(tmp_path / "plain"), min_test=0, **kw)
    topped = build_glyphs(str(tmp_path / "topped"), min_test=120, **kw)
    assert {t.task_id for t in plain.tasks} == {t.task_id for t in topped.tasks} and len(topped.tasks) == 3
    assert min(t.n_test for t in plain.tasks) < 120 <= min(t.n_test for t in topped.tasks)
    assert [t.n_train for t in plain.tasks] == [t.n_train for t in topped.tasks]
    assert validate_library(str(tmp_path / "topped")).ok
    # The attribute task's test fonts are held out by family, class by class, also in the topped-up images.
    table = TaskLibrary.open(str(tmp_path / "topped")).read_task("glyphs-attr/Latin/bold")
    families: dict = defaultdict(set)
    for label, split, attrs in zip(
        *(table.column(c).to_pylist() for c in ("label", "split", "attributes")), strict=True
    ):
        families[(label, split)].add(dict(attrs)["family"])
    for label in (0, 1):
        assert families[(label, "test")] and families[(label, "train")].isdisjoint(families[(label, "test")])


def test_bad_split_settings_are_rejected_with_their_name(tmp_path):
    with pytest.raises(ValueError, match="min_test must be an integer >= 0, got -1"):
        build_glyphs(str(tmp_path / "x"), small=True, min_test=-1)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        build_glyphs(str(tmp_path / "x"), small=True, test_fraction=1.0)


def _mtimes(root) -> dict[str, int]:
    return {rel: os.stat(root / rel).st_mtime_ns for rel, _ in storage.list_files(str(root))}


def test_rebuild_same_seed_is_a_no_op(small_glyph_library, tmp_path, monkeypatch):
    import t2v_ray.data.builders.glyphs as glyphs

    copy = tmp_path / "lib"
    shutil.copytree(small_glyph_library, copy)  # copy2 keeps mtimes
    before = _mtimes(copy)

    # With build_state.json in place nothing is even rendered: the recipes match.
    def no_render(plan):
        raise AssertionError(f"rendered {plan.task_id} again")

    with monkeypatch.context() as m:
        m.setattr(glyphs, "render_task", no_render)
        summary = build_glyphs(str(copy), small=True, seed=0, processes=1, contact_sheet=False)
    assert summary.stats.shards_written == 0 and not summary.stats.tasks_file_written
    assert summary.stats.shards_reused == sum(len(t.shards) for t in summary.tasks)
    assert _mtimes(copy) == before

    # Without it every task is rendered again, and the content hashes still find every shard in place.
    os.remove(copy / "build_state.json")
    summary = build_glyphs(str(copy), small=True, seed=0, processes=1, contact_sheet=False)
    assert summary.stats.shards_written == 0 and not summary.stats.tasks_file_written
    after = _mtimes(copy)
    assert after.pop("build_state.json") and after == {
        k: v for k, v in before.items() if k != "build_state.json"
    }


def test_other_seed_gives_other_content(small_glyph_library, tmp_path):
    summary = build_glyphs(
        str(tmp_path / "s1"),
        small=True,
        seed=1,
        processes=1,
        contact_sheet=False,
        validate=False,
        scripts=("Latin",),
    )
    ref = {t.task_id: t.content_hash for t in TaskLibrary.open(str(small_glyph_library)).tasks}
    assert summary.tasks and all(ref.get(t.task_id) != t.content_hash for t in summary.tasks)


def test_s3_build_with_the_cli_matches_the_local_build(small_glyph_library, s3_server):
    uri = s3_server.uri(s3_server.make_bucket(), "libraries", "glyphs")
    result = CliRunner().invoke(app, ["library", "build", "glyphs", "--small", "--out", uri, "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "glyphs-cub" in result.output and "12/12 tasks usable" in " ".join(result.output.split())
    remote, local = TaskLibrary.open(uri), TaskLibrary.open(str(small_glyph_library))
    assert [(t.task_id, t.content_hash) for t in remote.tasks] == [
        (t.task_id, t.content_hash) for t in local.tasks
    ]
    assert remote.read_task("glyphs/European/Greek").equals(local.read_task("glyphs/European/Greek"))
    assert storage.exists(storage.join(uri, "contact_sheet.png"))
    assert CliRunner().invoke(app, ["library", "validate", uri]).exit_code == 0
