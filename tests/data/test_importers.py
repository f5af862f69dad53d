"""Importers of users' own data, driven through the CLI as a user would: folder trees and attribute tables."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data.library import TaskLibrary

# leaf folder -> number of images; "mouse" is below --min-images and must not become a class.
TREE = {
    "birds/sparrow": 12,
    "birds/robin": 10,
    "mammals/cat": 11,
    "mammals/dog": 12,
    "mammals/mouse": 3,
    "fish": 10,
}


def _save(path: Path, value: int, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), "RGB").save(path, format=fmt)


@pytest.fixture
def zoo(tmp_path) -> Path:
    root = tmp_path / "zoo"
    k = 0
    for leaf, n in TREE.items():
        for i in range(n):
            k += 1
            _save(root / leaf / f"img{i}.png", k)
    (root / "mammals" / "cat" / "img99.png").write_bytes(b"\x89PNG broken")  # one bad file among 12
    _save(root / "mammals" / "dog" / "extra.bmp", 999, fmt="BMP")  # non-PNG/JPEG: re-encoded
    (root / "notes.txt").write_text("not an image")
    return root


def test_import_folder_tasks_taxonomy_and_bad_files(zoo, tmp_path):
    out = tmp_path / "lib"
    result = CliRunner().invoke(
        app, ["library", "import-folder", str(zoo), "--out", str(out), "--min-images", "10"]
    )
    assert result.exit_code == 0, result.output
    assert "img99.png" in result.output  # the undecodable file is listed, the build went on

    lib = TaskLibrary.open(str(out))
    got = {t.task_id: (t.taxonomy, t.classes, t.n_images) for t in lib.tasks}
    assert got == {
        "zoo": (["zoo"], ["birds", "fish", "mammals"], 22 + 10 + (11 + 13 + 3)),
        "zoo/birds": (["zoo", "birds"], ["robin", "sparrow"], 22),
        "zoo/mammals": (["zoo", "mammals"], ["cat", "dog"], 11 + 13),
    }
    assert all(t.kind == "taxonomy" and t.dataset == "zoo" for t in lib.tasks)
    # The root task's "mammals" class holds mouse images too: classes are whole sub-trees.
    root_rows = lib.read_task("zoo").to_pylist()
    assert sum("mammals/mouse/" in r["image_id"] for r in root_rows) == 3
    # Stratified split: each class keeps round(0.2 n) test images.
    mammals = Counter((r["label"], r["split"]) for r in lib.read_task("zoo/mammals").to_pylist())
    assert (mammals[(0, "test")], mammals[(1, "test")]) == (2, 3)
    # The BMP was re-encoded to PNG.
    dog = {r["image_id"]: r["image"] for r in lib.read_task("zoo/mammals").to_pylist()}
    assert dog["mammals/dog/extra.bmp"][:4] == b"\x89PNG"


def test_import_folder_max_per_class_samples_with_seed(zoo, tmp_path):
    args = [
        "library",
        "import-folder",
        str(zoo),
        "--min-images",
        "10",
        "--max-per-class",
        "5",
        "--no-contact-sheet",
    ]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / name), "--seed", seed]).exit_code == 0
    libs = {n: TaskLibrary.open(str(tmp_path / n)) for n in "abc"}
    assert libs["a"].task("zoo/birds").n_images == 10
    ids = {n: sorted(lib.read_task("zoo").column("image_id").to_pylist()) for n, lib in libs.items()}
    assert ids["a"] == ids["b"] != ids["c"]


def test_import_attributes_binary_and_multiclass_tasks(tmp_path):
    images = tmp_path / "imgs"
    colors = ["red"] * 12 + ["blue"] * 12 + ["green"] * 10 + [""] * 4
    patterns = ["striped;dotted", "striped", "dotted", "plain"] * 9 + ["plain", "striped"]
    with open(tmp_path / "shop.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "color", "pattern"])
        for i, (c, p) in enumerate(zip(colors, patterns, strict=True)):
            _save(images / f"{i}.jpg", i, fmt="JPEG")
            w.writerow([f"{i}.jpg", c, p])
    out = tmp_path / "lib"
    cmd = [
        "library",
        "import-attributes",
        str(tmp_path / "shop.csv"),
        "--images",
        str(images),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*cmd, "--min-images", "8", "--multi-sep", ";"])
    assert result.exit_code == 0, result.output
    lib = TaskLibrary.open(str(out))
    tasks = {t.task_id: t for t in lib.tasks}
    assert set(tasks) == {
        "shop/color/blue",
        "shop/color/green",
        "shop/color/red",
        "shop/color",
        "shop/pattern/dotted",
        "shop/pattern/plain",
        "shop/pattern/striped",
        "shop/pattern",
    }
    red = tasks["shop/color/red"]
    assert (red.kind, red.taxonomy, red.classes) == (
        "attribute",
        ["shop", "color", "red"],
        ["not red", "red"],
    )
    assert red.n_images == 34  # 4 rows without a color are unknown, not negatives
    labels = Counter(lib.read_task("shop/pattern/striped").column("label").to_pylist())
    assert labels == {1: 19, 0: 19}  # "striped;dotted" rows count as striped
    # Multi-valued rows are left out of the column's multi-class task.
    assert tasks["shop/pattern"].classes == ["dotted", "plain", "striped"]
    assert tasks["shop/pattern"].n_images == 9 + 10 + 10
    jpeg = lib.read_task("shop/color").column("image").to_pylist()[0]
    assert jpeg[:2] == b"\xff\xd8"  # JPEG bytes kept as they were
