"""The offline glyph library: structure of the small preset, determinism, S3 via the CLI, no-op rebuilds."""

from __future__ import annotations

import os
import shutil
from collections import Counter

from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data import storage
from t2v_ray.data.builders.glyphs import build_glyphs
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
    sizes = sorted(t.n_images for t in lib.tasks if t.dataset == "glyphs" and len(t.taxonomy) == 3)
    assert sizes[-1] > 1.5 * sizes[0]
    table = lib.read_task("glyphs/European/Greek")
    per_class = Counter(
        zip(table.column("label").to_pylist(), table.column("split").to_pylist(), strict=True)
    )
    for c in range(10):
        n = per_class[(c, "train")] + per_class[(c, "test")]
        assert per_class[(c, "test")] == round(
            0.2 * n
        )  # stratified: every class has its share of test images


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
