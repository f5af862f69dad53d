"""``t2v library import-folder`` on trees as real collections have them (issue 11, item 3): decompression-bomb
headers, very large images, symbolic-link loops and duplicates, dangling links, files that are not images.
Nothing stops the import, every file left out is listed with its reason, and the skip report is stored."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin
from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data.builders.common import read_skip_report
from t2v_ray.data.builders.folder import build_folder
from t2v_ray.data.images import DEFAULT_MAX_SIDE
from t2v_ray.data.library import TaskLibrary
from tests.data.pngs import write_png

LEAVES = {"birds/robin": 4, "birds/sparrow": 4, "mammals/cat": 4, "mammals/dog": 4, "fish": 4}
TASKS = {"zoo", "zoo/birds", "zoo/mammals"}


def _save(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def zoo(tmp_path) -> Path:
    root = tmp_path / "zoo"
    k = 0
    for leaf, n in LEAVES.items():
        for i in range(n):
            k += 1
            _save(root / leaf / f"img{i}.png", k)
    return root


def _import(root: Path, out: Path, *extra: str):
    args = ["library", "import-folder", str(root), "--out", str(out), "--min-images", "3"]
    return CliRunner().invoke(app, [*args, "--no-contact-sheet", *extra])


def _skip_line(report: list[str], path: str) -> str:
    hits = [line for line in report if path in line]
    assert len(hits) == 1, (path, report)
    return hits[0]


def _content_hashes(lib: TaskLibrary, task_id: str) -> list[str]:
    return [hashlib.sha256(b).hexdigest() for b in lib.read_task(task_id).column("image").to_pylist()]


def test_bomb_headers_are_left_out_from_the_header_and_listed(zoo, tmp_path):
    # 30000^2 = 900 MP: over Pillow's own limit, whose DecompressionBombError used to abort the import.
    write_png(zoo / "fish" / "bomb.png", 30_000, 30_000, rows_written=1)
    # 9000^2 = 81 MP: under Pillow's limit, over our cap; a header without pixel data, so an attempt to decode
    # it would fail as truncated: "too large" proves that the header alone decided.
    write_png(zoo / "birds" / "robin" / "huge.png", 9000, 9000, rows_written=0)
    out = tmp_path / "lib"
    result = _import(zoo, out)
    assert result.exit_code == 0, result.output
    assert "bomb.png" in result.output and "huge.png" in result.output
    report = read_skip_report(str(out))
    assert "image too large" in _skip_line(report, "fish/bomb.png")
    assert "9000x9000 = 81,000,000 pixels, over the cap of 80,000,000" in _skip_line(report, "robin/huge.png")
    lib = TaskLibrary.open(str(out))
    assert {t.task_id for t in lib.tasks} == TASKS and lib.task("zoo/birds").n_images == 8


def test_the_pixel_cap_is_configurable(zoo, tmp_path):
    Image.new("RGB", (40, 40), "red").save(zoo / "fish" / "big.png")
    out = tmp_path / "lib"
    assert _import(zoo, out, "--max-pixels", "1000").exit_code == 0
    assert "40x40 = 1,600 pixels, over the cap of 1,000" in _skip_line(read_skip_report(str(out)), "big.png")
    assert TaskLibrary.open(str(out)).task("zoo").n_images == 20  # the 8x8 images stay
    assert _import(zoo, tmp_path / "lib2", "--max-pixels", "0").exit_code == 2  # a usage error
    with pytest.raises(ValueError, match="max_pixels must be a positive number of pixels or None, got 0"):
        build_folder(str(zoo), str(tmp_path / "lib3"), max_pixels=0)  # e.g. from --config or -s


def test_an_8000_px_png_is_box_reduced_then_stored_at_max_side(zoo, tmp_path, monkeypatch):
    side = 8000
    gradient = bytes(x * 255 // (side - 1) for x in range(side))  # grey value rises left to right
    write_png(zoo / "fish" / "poster.png", side, side, row=lambda _y: gradient)
    factors = []
    reduce = Image.Image.reduce

    def spy(self, factor, box=None):
        factors.append(factor)
        return reduce(self, factor, box)

    monkeypatch.setattr(Image.Image, "reduce", spy)
    out = tmp_path / "lib"
    result = _import(zoo, out)
    assert result.exit_code == 0, result.output
    # 8000 -> 1024: an integer box reduction by 3 (leaving >= 2x the target for the filter), then the resize.
    assert factors == [3]
    rows = {r["image_id"]: r["image"] for r in TaskLibrary.open(str(out)).read_task("zoo").to_pylist()}
    img = Image.open(io.BytesIO(rows["fish/poster.png"]))
    assert img.size == (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE)
    # The gradient survives: pixel x of the stored image is ~ 255 x / 1023.
    got = np.asarray(img)[DEFAULT_MAX_SIDE // 2].astype(float)
    want = 255 * np.arange(DEFAULT_MAX_SIDE) / (DEFAULT_MAX_SIDE - 1)
    assert np.abs(got - want)[4:-4].max() <= 2


def test_a_large_jpeg_is_decoded_at_reduced_scale(tmp_path, monkeypatch):
    from t2v_ray.data.builders.importing import normalise_image

    buf = io.BytesIO()
    Image.linear_gradient("L").resize((4096, 4096)).save(buf, format="JPEG", quality=80)
    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        res = draft(self, mode, size)
        scales.append(None if res is None else 4096 / res[1][2])
        return res

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = Image.open(io.BytesIO(normalise_image(buf.getvalue(), max_side=256)))
    # The decoder's DCT scaling produced 512 px (1/8 of the file: 2x the target), not all 4096 px.
    assert scales[0] == 8
    assert (out.format, out.size) == ("JPEG", (256, 256))


def test_directory_symlinks_are_not_followed_by_default_and_loops_end(zoo, tmp_path):
    (zoo / "birds" / "robin" / "loop").symlink_to("..")  # an ancestor: followed, it never ends
    (zoo / "fish" / "alias").symlink_to("../mammals/cat")  # cat images inside the fish class
    out = tmp_path / "lib"
    result = _import(zoo, out)
    assert result.exit_code == 0, result.output
    report = read_skip_report(str(out))
    assert "directory symlink -> .. not followed" in _skip_line(report, "birds/robin/loop")
    assert "directory symlink -> ../mammals/cat not followed" in _skip_line(report, "fish/alias")
    lib = TaskLibrary.open(str(out))
    assert {t.task_id: t.n_images for t in lib.tasks} == {"zoo": 20, "zoo/birds": 8, "zoo/mammals": 8}


def test_follow_symlinks_stops_at_loops_and_drops_what_the_links_duplicate(zoo, tmp_path):
    (zoo / "birds" / "robin" / "loop").symlink_to("..")
    (zoo / "fish" / "alias").symlink_to("../mammals/cat")
    out = tmp_path / "lib"
    result = _import(zoo, out, "--follow-symlinks")
    assert result.exit_code == 0, result.output
    report = read_skip_report(str(out))
    assert "loops back to an ancestor folder" in _skip_line(report, "birds/robin/loop")
    lib = TaskLibrary.open(str(out))
    assert {t.task_id for t in lib.tasks} == TASKS  # no birds/robin/loop/robin/loop/... tasks
    # In the root task the 4 cat images are in "mammals" and (through the link) in "fish": dropped from both.
    root = lib.read_task("zoo").to_pylist()
    assert Counter(r["image_id"].split("/")[0] for r in root) == {"birds": 8, "mammals": 4, "fish": 4}
    dropped = [line for line in report if line.startswith("zoo: same image in several classes")]
    assert len(dropped) == 4 and all("fish/alias/" in line and "mammals/cat/" in line for line in dropped)
    assert lib.task("zoo/mammals").n_images == 8  # its classes do not see the link: nothing dropped


def test_duplicate_files_are_dropped_from_every_class_they_are_in(zoo, tmp_path):
    mammals = zoo / "mammals"
    (mammals / "cat" / "dup.png").symlink_to("../dog/img0.png")  # one image in two classes
    (mammals / "dog" / "zz-copy.png").write_bytes((mammals / "dog" / "img1.png").read_bytes())  # same class
    out = tmp_path / "lib"
    assert _import(zoo, out).exit_code == 0
    lib = TaskLibrary.open(str(out))
    ids = set(lib.read_task("zoo/mammals").column("image_id").to_pylist())
    assert "mammals/cat/dup.png" not in ids and "mammals/dog/img0.png" not in ids
    assert "mammals/dog/img1.png" in ids and "mammals/dog/zz-copy.png" not in ids  # the first path is kept
    for t in lib.tasks:  # no content twice in a task: none in two classes, none in both train and test
        hashes = _content_hashes(lib, t.task_id)
        assert len(hashes) == len(set(hashes)), t.task_id
    report = read_skip_report(str(out))
    assert any(
        line.startswith("zoo/mammals: same image in several classes")
        and "mammals/cat/dup.png" in line
        and "mammals/dog/img0.png" in line
        for line in report
    )
    assert "zoo/mammals: mammals/dog/zz-copy.png: duplicate of mammals/dog/img1.png, left out" in report


def test_dangling_links_and_non_images_are_listed(zoo, tmp_path):
    (zoo / "fish" / "gone.png").symlink_to("nowhere.png")
    (zoo / "notes.txt").write_text("not an image")
    (zoo / "fish" / "fake.png").write_text("not a png either")
    out = tmp_path / "lib"
    summary = build_folder(str(zoo), str(out), min_images=3, contact_sheet=False)
    assert summary.skipped == read_skip_report(str(out))
    assert "dangling symlink -> nowhere.png" in _skip_line(summary.skipped, "fish/gone.png")
    assert "not an image" in _skip_line(summary.skipped, "notes.txt")
    assert "undecodable image" in _skip_line(summary.skipped, "fish/fake.png")
    assert summary.n_tasks == 3 and len(summary.skipped) == 3


def test_an_unreadable_folder_is_listed(zoo, tmp_path, monkeypatch):
    from t2v_ray.data.builders import listing

    locked = zoo / "fish" / "locked"
    _save(locked / "a.png", 1)
    scandir = os.scandir

    def refuse(path):  # what a folder without read permission does (root, running the tests, reads anything)
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(listing.os, "scandir", refuse)
    summary = build_folder(str(zoo), str(tmp_path / "lib"), min_images=3, contact_sheet=False)
    assert "unreadable folder (Permission denied)" in _skip_line(summary.skipped, "fish/locked")
    assert summary.n_tasks == 3


def test_large_images_are_decoded_at_most_two_at_a_time(tmp_path, monkeypatch):
    from t2v_ray.data.builders import importing

    for i in range(6):
        Image.new("L", (20, 20), i).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(importing, "LARGE_PIXELS", 399)  # every 20x20 image counts as large
    active, peak = [0], [0]
    lock = threading.Lock()
    normalise = importing.normalise_image

    def spy(*args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)  # overlap, if the reader allowed it; nothing here asserts on time
        with lock:
            active[0] -= 1
        return normalise(*args)

    monkeypatch.setattr(importing, "normalise_image", spy)
    got = importing.ImageReader(threads=6).read(str(tmp_path / f"{i}.png") for i in range(6))
    assert len(got) == 6 and peak[0] == importing.LARGE_DECODES == 2


def test_the_attribute_importer_shares_the_checks(tmp_path):
    from t2v_ray.data.builders.attributes import build_attributes

    images = tmp_path / "imgs"
    lines = ["file,color"]
    for i in range(8):
        _save(images / f"{i}.png", i)
        lines.append(f"{i}.png,{'red' if i < 4 else 'blue'}")
    write_png(images / "bomb.png", 30_000, 30_000, rows_written=1)
    lines += ["bomb.png,red", "0.png,blue"]  # 0.png listed again with the other value: its label is ambiguous
    (tmp_path / "shop.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "lib"
    summary = build_attributes(str(tmp_path / "shop.csv"), str(images), str(out), min_images=3)
    assert "image too large" in _skip_line(summary.skipped, "bomb.png")
    assert "shop/color/blue: same image in several classes, dropped from all: 0.png, 0.png" in summary.skipped
    assert TaskLibrary.open(str(out)).task("shop/color/blue").n_images == 7
    assert summary.skipped == read_skip_report(str(out))
