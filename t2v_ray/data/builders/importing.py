"""Shared by the importers of users' own images: read files in parallel, check they decode, normalise format and
size, drop duplicate content, sample and split a task's rows.

Nothing a user's file can hold stops an import: every file that cannot be used is left out and listed with its
reason (the build's skip report).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from t2v_ray.data import storage
from t2v_ray.data.builders.common import stratified_split, task_rng
from t2v_ray.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    ImageTooLargeError,
    load_image,
    open_image,
    working_mode,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
STORED_FORMATS = ("PNG", "JPEG")  # DESIGN: shards hold PNG/JPEG bytes; anything else is re-encoded to PNG
# Above this many pixels (~64 MB as RGBA, several times that while resampling) at most LARGE_DECODES images are
# decoded at once, whatever the reader's thread count: memory stays bounded on trees full of posters.
LARGE_PIXELS = 16_000_000
LARGE_DECODES = 2


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def normalise_image(
    data: bytes, max_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> bytes:
    """Return PNG/JPEG bytes for ``data``: unchanged when already PNG/JPEG and small enough, else downscaled to
    ``max_side`` (decoded at reduced scale) and re-encoded. Transparency is kept (readers composite it).

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels (nothing is decoded).
        ImageDecodeError: the bytes do not decode.
    """
    img = open_image(data, max_pixels=max_pixels)
    fmt, size = img.format, img.size
    img = load_image(img, max_side)
    if fmt in STORED_FORMATS and img.size == size:
        return data
    img = working_mode(img)
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


class ImageReader:
    """Reads and checks images, remembering failures so a bad file is reported once, not per task.

    Args:
        max_side: downscale images whose longer side exceeds this (None keeps sizes).
        max_pixels: leave out images whose header declares more pixels (None: only Pillow's bomb limit).
        threads: parallel reads (I/O-bound on S3; decoding releases the GIL in Pillow).
    """

    def __init__(
        self, max_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, threads: int = 8
    ):
        self.max_side = max_side
        self.max_pixels = max_pixels
        self.threads = threads
        self.bad: dict[str, str] = {}  # uri -> why it was left out
        self._large = threading.BoundedSemaphore(LARGE_DECODES)

    def _one(self, uri: str) -> tuple[bytes, str] | None:
        """``(stored bytes, sha256 of the file's bytes)``, or None with the reason in :attr:`bad`."""
        if uri in self.bad:
            return None
        try:
            raw = storage.read_bytes(uri)
        except OSError as e:
            self.bad[uri] = f"unreadable file ({e})"
            return None
        try:
            width, height = open_image(raw, max_pixels=self.max_pixels).size  # the header only
            with self._large if width * height > LARGE_PIXELS else contextlib.nullcontext():
                stored = normalise_image(raw, self.max_side, self.max_pixels)
            return stored, hashlib.sha256(raw).hexdigest()
        except ImageTooLargeError as e:
            self.bad[uri] = str(e)
        except ImageDecodeError as e:
            self.bad[uri] = f"undecodable image ({e})"
        except (
            Exception
        ) as e:  # re-encoding can fail on exotic modes; a user's file must never stop the import
            self.bad[uri] = f"cannot convert image ({type(e).__name__}: {e})"
        return None

    def skipped(self, root_uri: str) -> list[str]:
        """The files left out so far as sorted ``"path: reason"`` lines, paths relative to ``root_uri``."""
        prefix = storage.join(root_uri, "")
        return sorted(
            f"{u[len(prefix) :] if u.startswith(prefix) else u}: {why}" for u, why in self.bad.items()
        )

    def read(self, uris: Iterable[str]) -> dict[str, tuple[bytes, str]]:
        """``uri -> (bytes, content hash)`` for the files that read and decode; failures land in :attr:`bad`."""
        uris = list(uris)
        with ThreadPoolExecutor(self.threads) as pool:
            data = list(pool.map(self._one, uris))
        return {u: d for u, d in zip(uris, data, strict=True) if d is not None}


def drop_duplicates(task_id: str, rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Rows with distinct content (``row["sha"]``) and the skip lines for the others.

    Copies within one class keep the first path (sorted); content found in two or more classes is dropped from
    all of them (its label is ambiguous, and a copy could land in both train and test).
    """
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_hash[r["sha"]].append(i)
    drop: set[int] = set()
    skips = []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda i: rows[i]["image_id"])
        paths = [rows[i]["image_id"] for i in group]
        if len({rows[i]["label"] for i in group}) > 1:
            drop.update(group)
            skips.append(f"{task_id}: same image in several classes, dropped from all: {', '.join(paths)}")
        else:
            drop.update(group[1:])
            skips.extend(f"{task_id}: {p}: duplicate of {paths[0]}, left out" for p in paths[1:])
    return [r for i, r in enumerate(rows) if i not in drop], skips


def read_task_rows(
    root_uri: str,
    task_id: str,
    paths_per_class: Sequence[Sequence[str]],
    reader: ImageReader,
    max_per_class: int | None,
    test_fraction: float,
    seed: int,
) -> tuple[list[dict], list[str]]:
    """Rows of one imported task and the skip lines of its duplicates.

    Per class (label = position), its distinct paths relative to ``root_uri`` are sampled down to
    ``max_per_class`` (seeded by ``task_id``) and read with ``reader`` (unreadable files are left out, see
    ``reader.bad``); duplicate content is dropped (:func:`drop_duplicates`); the rest is split train/test,
    stratified and seeded.
    """
    rng = task_rng(seed, "sample", task_id)
    chosen: list[tuple[int, str]] = []
    for label, paths in enumerate(paths_per_class):
        picked = sorted(set(paths))
        if max_per_class is not None and len(picked) > max_per_class:
            picked = sorted(rng.choice(picked, size=max_per_class, replace=False).tolist())
        chosen.extend((label, rel) for rel in picked)
    data = reader.read(storage.join(root_uri, rel) for _, rel in chosen)
    rows = []
    for label, rel in chosen:
        got = data.get(storage.join(root_uri, rel))
        if got is not None:
            rows.append(
                {"label": label, "image": got[0], "sha": got[1], "image_id": rel, "attributes": {"path": rel}}
            )
    rows, skips = drop_duplicates(task_id, rows)
    splits = stratified_split([r["label"] for r in rows], test_fraction, task_rng(seed, "split", task_id))
    for r, s in zip(rows, splits, strict=True):
        del r["sha"]
        r["split"] = s
    return rows, skips


def check_image_limits(max_side: int | None, max_pixels: int | None) -> None:
    """Reject limits that would leave every image out, before any file is read.

    Raises:
        ValueError: ``max_side`` or ``max_pixels`` below 1.
    """
    for name, value in (("max_side", max_side), ("max_pixels", max_pixels)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be a positive number of pixels or None, got {value!r}")
