"""Import an image folder tree (``root/a/b/c/*.jpg``) as taxonomy tasks, e.g. iNaturalist or CUB dumps.

Every internal folder whose sub-folders hold at least ``min_images`` images each (counted recursively) becomes
one task that classifies those sub-folders; sub-folders with fewer images are left out of that task. The
taxonomy column is the folder path, prefixed with the dataset name: ``[dataset, "a", "b"]``.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field

from t2v_ray.data.builders.common import BuildSummary, finish_build
from t2v_ray.data.builders.importing import (
    ImageReader,
    check_image_limits,
    is_image_name,
    read_task_rows,
)
from t2v_ray.data.builders.listing import list_tree
from t2v_ray.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
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


def scan_tree(root_uri: str, follow_symlinks: bool = False) -> tuple[FolderNode, list[str]]:
    """The folder tree under ``root_uri`` with its image files (by extension), and the entries left out (hidden
    entries silently; non-images, dangling links, directory links not followed: as ``"path: reason"`` lines)."""
    listing = list_tree(root_uri, follow_symlinks)
    skipped = list(listing.skipped)
    root = FolderNode(())
    for rel in listing.files:
        parts = rel.split("/")
        if not is_image_name(parts[-1]):
            skipped.append(f"{rel}: not an image (by its extension)")
            continue
        node = root
        for name in parts[:-1]:
            node = node.children.setdefault(name, FolderNode((*node.path, name)))
        node.images.append(rel)
    return root, skipped


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
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    follow_symlinks: bool = False,
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
        max_side: downscale larger images to this longer side (decoded at reduced scale); None keeps sizes.
        max_pixels: leave out images whose header declares more pixels, before decoding them; None: only
            Pillow's own decompression-bomb limit (~179 megapixels) applies.
        follow_symlinks: follow directory links (never into an ancestor: that would loop). Off by default: links
            put one image in several classes. Links to files are always followed.

    Every file left out (undecodable, too large, not an image, dangling link, duplicate content) is listed in
    the summary's ``skipped`` and in the library's skip report.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    dataset = dataset or posixpath.basename(str(root_uri).rstrip("/")) or "folder"
    check_image_limits(max_side, max_pixels)
    tree, listed = scan_tree(root_uri, follow_symlinks)
    tasks = plan_folder_tasks(tree, min_images)
    reader = ImageReader(max_side=max_side, max_pixels=max_pixels)
    writer = LibraryWriter(out_uri, shard_bytes=shard_bytes)
    skipped: list[str] = []
    for t in tqdm(tasks, desc="folder tasks", disable=not progress):
        taxonomy = [dataset, *t.path]
        task_id = "/".join(taxonomy)
        rows, dupes = read_task_rows(root_uri, task_id, t.images, reader, max_per_class, test_fraction, seed)
        skipped.extend(dupes)
        if len({r["label"] for r in rows}) < 2:
            skipped.append(f"{task_id}: fewer than 2 classes with readable images; task left out")
            continue
        spec = {"task_id": task_id, "dataset": dataset, "kind": "taxonomy", "taxonomy": taxonomy}
        writer.add_task({**spec, "classes": list(t.classes)}, rows)
    skipped = listed + reader.skipped(root_uri) + skipped
    params = {"builder": "folder", "root": str(root_uri), "min_images": min_images, "max_per_class": max_per_class,
              "test_fraction": test_fraction, "seed": seed, "dataset": dataset, "max_side": max_side,
              "max_pixels": max_pixels, "follow_symlinks": follow_symlinks}  # fmt: skip
    return finish_build(writer, dataset, started, skipped, validate, contact_sheet, config=params)
