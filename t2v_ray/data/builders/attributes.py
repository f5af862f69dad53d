"""Import an attribute table (CSV: image path + attribute columns) as attribute tasks, iMaterialist/DeepFashion
style: one binary task per attribute value ("has value v" vs "has another value of this column") and, for columns
with a few distinct values, one multi-class task over them.

Empty cells mean "unknown" and keep the image out of that column's tasks. With ``multi_sep`` a cell can hold
several values (multi-label attributes); such rows are left out of the column's multi-class task.
"""

from __future__ import annotations

import csv
import io
import posixpath
import time
from collections import defaultdict

from t2v_ray.data import storage
from t2v_ray.data.builders.common import BuildSummary, finish_build
from t2v_ray.data.builders.importing import ImageReader, check_image_limits, read_task_rows
from t2v_ray.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from t2v_ray.data.library import DEFAULT_SHARD_BYTES, LibraryWriter


def read_table(csv_uri: str, path_column: str | None) -> tuple[str, list[str], list[dict[str, str]]]:
    """``(path column, attribute columns, rows)`` of a CSV with a header row."""
    text = storage.read_bytes(csv_uri).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if not header:
        raise ValueError(f"{csv_uri}: empty CSV or no header row")
    path_column = path_column or header[0]
    if path_column not in header:
        raise ValueError(f"{csv_uri}: no column {path_column!r}; columns are {header}")
    return path_column, [c for c in header if c != path_column], list(reader)


def _values(cell: str | None, sep: str | None) -> list[str]:
    cell = (cell or "").strip()
    if not cell:
        return []
    return [v.strip() for v in cell.split(sep) if v.strip()] if sep else [cell]


def plan_attribute_tasks(
    rows: list[dict[str, str]],
    path_column: str,
    columns: list[str],
    min_images: int,
    multi_sep: str | None = None,
    max_multiclass: int = 20,
) -> list[tuple[str, str | None, list[str], list[list[str]]]]:
    """Tasks as ``(column, value or None for multi-class, class names, image paths per class)``."""
    out = []
    for col in columns:
        per_row = [(r[path_column], _values(r.get(col), multi_sep)) for r in rows]
        known = [(p, vs) for p, vs in per_row if vs]
        by_value: dict[str, list[str]] = defaultdict(list)
        for p, vs in known:
            for v in vs:
                by_value[v].append(p)
        for v in sorted(by_value):
            pos = by_value[v]
            neg = [p for p, vs in known if v not in vs]
            if len(pos) >= min_images and len(neg) >= min_images:
                out.append((col, v, [f"not {v}", v], [neg, pos]))
        single = {v: [p for p, vs in known if vs == [v]] for v in sorted(by_value)}
        kept = {v: ps for v, ps in single.items() if len(ps) >= min_images}
        if 3 <= len(kept) <= max_multiclass:  # two values are already the binary task
            out.append((col, None, list(kept), list(kept.values())))
    return out


def build_attributes(
    csv_uri: str,
    images_root: str,
    out_uri: str,
    path_column: str | None = None,
    columns: list[str] | None = None,
    min_images: int = 10,
    max_per_class: int | None = 1000,
    multi_sep: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    dataset: str | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    contact_sheet: bool = True,
    validate: bool = True,
    progress: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> BuildSummary:
    """Import an attribute CSV into a library at ``out_uri``.

    Args:
        csv_uri: CSV with a header; one row per image.
        images_root: folder or S3 prefix that the path column is relative to.
        out_uri: library folder or S3 prefix.
        path_column: column holding image paths (default: the first column).
        columns: attribute columns to use (default: all others).
        min_images: a class needs this many images.
        max_per_class: sample at most this many images per class (seeded); None keeps all.
        multi_sep: separator of multi-valued cells (e.g. ``";"``); None: one value per cell.
        test_fraction, seed, max_side, max_pixels: as in :func:`t2v_ray.data.builders.folder.build_folder`.
        dataset: dataset name; default: the CSV file name without extension.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    dataset = dataset or posixpath.basename(str(csv_uri).rstrip("/")).rsplit(".", 1)[0] or "attributes"
    path_column, all_columns, rows = read_table(csv_uri, path_column)
    unknown = set(columns or []) - set(all_columns)
    if unknown:
        raise ValueError(f"{csv_uri}: unknown attribute columns {sorted(unknown)}; columns are {all_columns}")
    check_image_limits(max_side, max_pixels)
    plans = plan_attribute_tasks(rows, path_column, columns or all_columns, min_images, multi_sep)
    reader = ImageReader(max_side=max_side, max_pixels=max_pixels)
    writer = LibraryWriter(out_uri, shard_bytes=shard_bytes)
    skipped: list[str] = []
    for col, value, classes, paths in tqdm(plans, desc="attribute tasks", disable=not progress):
        taxonomy = [dataset, col] if value is None else [dataset, col, value]
        task_id = "/".join(taxonomy)
        task_rows, dupes = read_task_rows(
            images_root, task_id, paths, reader, max_per_class, test_fraction, seed
        )
        skipped.extend(dupes)
        if len({r["label"] for r in task_rows}) < 2:
            skipped.append(f"{task_id}: fewer than 2 classes with readable images; task left out")
            continue
        spec = {
            "task_id": task_id,
            "dataset": dataset,
            "kind": "attribute",
            "taxonomy": taxonomy,
            "classes": classes,
        }
        writer.add_task(spec, task_rows)
    skipped = reader.skipped(images_root) + skipped
    params = {"builder": "attributes", "csv": str(csv_uri), "images_root": str(images_root),
              "path_column": path_column, "columns": columns, "min_images": min_images,
              "max_per_class": max_per_class, "multi_sep": multi_sep, "test_fraction": test_fraction,
              "seed": seed, "dataset": dataset, "max_side": max_side, "max_pixels": max_pixels}  # fmt: skip
    return finish_build(writer, dataset, started, skipped, validate, contact_sheet, config=params)
