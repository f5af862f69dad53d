"""Shared by the importers of users' own images: read files in parallel, check they decode, normalise format,
sample and split a task's rows."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from t2v_ray.data import storage
from t2v_ray.data.builders.common import stratified_split, task_rng
from t2v_ray.data.images import ImageDecodeError, decode_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
STORED_FORMATS = ("PNG", "JPEG")  # DESIGN: shards hold PNG/JPEG bytes; anything else is re-encoded to PNG


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def normalise_image(data: bytes, max_side: int | None = None) -> bytes:
    """Return PNG/JPEG bytes for ``data``: unchanged when already PNG/JPEG and small enough.

    Raises:
        ImageDecodeError: the bytes do not decode.
    """
    img = decode_image(data)
    fmt = img.format
    too_big = max_side is not None and max(img.size) > max_side
    if fmt in STORED_FORMATS and not too_big:
        return data
    if too_big:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


class ImageReader:
    """Reads and checks images once, remembering failures so a bad file is reported once, not per task.

    Args:
        max_side: downscale images whose longer side exceeds this (None keeps sizes).
        threads: parallel reads (I/O-bound on S3; decoding releases the GIL in Pillow).
    """

    def __init__(self, max_side: int | None = None, threads: int = 8):
        self.max_side = max_side
        self.threads = threads
        self.bad: dict[str, str] = {}

    def _one(self, uri: str) -> bytes | None:
        if uri in self.bad:
            return None
        try:
            return normalise_image(storage.read_bytes(uri), self.max_side)
        except ImageDecodeError as e:
            self.bad[uri] = f"undecodable image {uri}: {e}"
        except OSError as e:
            self.bad[uri] = f"unreadable file {uri}: {e}"
        return None

    def read(self, uris: Iterable[str]) -> dict[str, bytes]:
        """``uri -> bytes`` for the files that read and decode; failures land in :attr:`bad`."""
        uris = list(uris)
        with ThreadPoolExecutor(self.threads) as pool:
            data = list(pool.map(self._one, uris))
        return {u: d for u, d in zip(uris, data, strict=True) if d is not None}


def read_task_rows(
    root_uri: str,
    task_id: str,
    paths_per_class: Sequence[Sequence[str]],
    reader: ImageReader,
    max_per_class: int | None,
    test_fraction: float,
    seed: int,
) -> list[dict]:
    """Rows of one imported task: per class (label = position), its distinct paths relative to ``root_uri``,
    sampled down to ``max_per_class`` (seeded by ``task_id``), read with ``reader`` (unreadable files are left
    out) and split train/test, stratified and seeded."""
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
        blob = data.get(storage.join(root_uri, rel))
        if blob is not None:
            rows.append({"label": label, "image": blob, "image_id": rel, "attributes": {"path": rel}})
    splits = stratified_split([r["label"] for r in rows], test_fraction, task_rng(seed, "split", task_id))
    for r, s in zip(rows, splits, strict=True):
        r["split"] = s
    return rows
