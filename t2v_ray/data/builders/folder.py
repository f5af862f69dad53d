"""Import an image folder tree (``root/a/b/c/*.jpg``) as taxonomy tasks, e.g. iNaturalist or CUB dumps.

Every internal folder whose sub-folders hold at least ``min_images`` images each (counted recursively) becomes
one task that classifies those sub-folders; sub-folders with fewer images are left out of that task. The
taxonomy column is the folder path, prefixed with the dataset name: ``[dataset, "a", "b"]``.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field

from t2v_ray.data import storage
from t2v_ray.data.builders.common import BuildSummary, finish_build
from t2v_ray.data.builders.importing import ImageReader, is_image_name, read_task_rows
from t2v_ray.data.library import DEFAULT_SHARD_BYTES, LibraryWriter


@dataclass
class FolderNode:
    """A folder: images directly inside it and sub-folders by name."""

    path: tuple[str, ...]
    images: list[str] = field(default_factory=list)
    children: dict[str, FolderNode] = field(default_factory=dict)

    def all_images(self) -> list[str]:
        out = list(self.images)
        for name in sorted(self.children):
            out.extend(self.children[name].all_images())
        return out

    def walk(self):
        yield self
        for name in sorted(self.children):
            yield from self.children[name].walk()


def scan_tree(root_uri: str) -> FolderNode:
    """The folder tree under ``root_uri`` with image files (by extension); hidden entries are skipped."""
    root = FolderNode(())
    for rel, _size in storage.list_files(root_uri):
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts) or not is_image_name(parts[-1]):
            continue
        node = root
        for name in parts[:-1]:
            node = node.children.setdefault(name, FolderNode((*node.path, name)))
        node.images.append(rel)
    return root


@dataclass(frozen=True)
class FolderTask:
    """One planned task: the folder node and, per class (sub-folder), its image paths."""

    path: tuple[str, ...]
    classes: tuple[str, ...]
    images: tuple[tuple[str, ...], ...]


def plan_folder_tasks(root: FolderNode, min_images: int) -> list[FolderTask]:
    """Tasks in depth-first order: internal nodes with >= 2 sub-folders of >= ``min_images`` images."""
    tasks = []
    for node in root.walk():
        kept = [(name, node.children[name].all_images()) for name in sorted(node.children)]
        kept = [(name, imgs) for name, imgs in kept if len(imgs) >= min_images]
        if len(kept) >= 2:
            tasks.append(FolderTask(node.path, tuple(n for n, _ in kept), tuple(tuple(i) for _, i in kept)))
    return tasks


def build_folder(
    root_uri: str,
    out_uri: str,
    min_images: int = 10,
    max_per_class: int | None = 1000,
    test_fraction: float = 0.2,
    seed: int = 0,
    dataset: str | None = None,
    max_side: int | None = None,
    contact_sheet: bool = True,
    validate: bool = True,
    progress: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> BuildSummary:
    """Import the folder tree at ``root_uri`` into a library at ``out_uri``.

    Args:
        root_uri: local folder or S3 prefix holding class folders.
        out_uri: library folder or S3 prefix.
        min_images: a sub-folder needs this many images (recursively) to be a class.
        max_per_class: sample at most this many images per class (seeded); None keeps all. High-level tasks
            would otherwise hold every image of the dataset.
        test_fraction: per-class share of test images (stratified, seeded).
        seed: drives sampling and splits.
        dataset: dataset name and taxonomy root; default: the root folder's name.
        max_side: downscale larger images to this longer side.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    dataset = dataset or posixpath.basename(str(root_uri).rstrip("/")) or "folder"
    tasks = plan_folder_tasks(scan_tree(root_uri), min_images)
    reader = ImageReader(max_side=max_side)
    writer = LibraryWriter(out_uri, shard_bytes=shard_bytes)
    skipped: list[str] = []
    for t in tqdm(tasks, desc="folder tasks", disable=not progress):
        taxonomy = [dataset, *t.path]
        task_id = "/".join(taxonomy)
        rows = read_task_rows(root_uri, task_id, t.images, reader, max_per_class, test_fraction, seed)
        if len({r["label"] for r in rows}) < 2:
            skipped.append(f"{task_id}: fewer than 2 classes with readable images; task left out")
            continue
        spec = {"task_id": task_id, "dataset": dataset, "kind": "taxonomy", "taxonomy": taxonomy}
        writer.add_task({**spec, "classes": list(t.classes)}, rows)
    skipped = sorted(reader.bad.values()) + skipped
    params = {"builder": "folder", "root": str(root_uri), "min_images": min_images, "max_per_class": max_per_class,
              "test_fraction": test_fraction, "seed": seed, "dataset": dataset, "max_side": max_side}  # fmt: skip
    return finish_build(writer, dataset, started, skipped, validate, contact_sheet, config=params)
