"""A tiny synthetic task library (32 px drawings, seconds to build) for expert and grid tests.

Six tasks with 3-4 classes each. ``quadrant`` (where a small square sits) is the one a random-init probe does
badly on: its globally pooled features barely see position, while a network fine-tuned on it learns to.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from t2v_ray.data.images import encode_png
from t2v_ray.data.library import LibraryWriter

SIZE = 32


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    noise = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
    img = Image.fromarray(noise, "RGB")
    return img, ImageDraw.Draw(img)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(120, 256, 3))


def _shapes(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    r = int(rng.integers(6, 11))
    cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if label == 0:
        d.ellipse(box, fill=_color(rng))
    elif label == 1:
        d.rectangle(box, fill=_color(rng))
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=_color(rng))
    return img


def _stripes(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    period, col = int(rng.integers(4, 7)), _color(rng)
    for k in range(-SIZE, 2 * SIZE, period):
        if label == 0:
            d.line([(0, k), (SIZE, k)], fill=col, width=2)
        elif label == 1:
            d.line([(k, 0), (k, SIZE)], fill=col, width=2)
        else:
            d.line([(k, 0), (k + SIZE, SIZE)], fill=col, width=2)
    return img


def _color_task(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    col = [int(v) for v in rng.integers(0, 80, 3)]
    col[label] = int(rng.integers(170, 256))
    r = int(rng.integers(6, 12))
    cx, cy = (int(v) for v in rng.integers(r, SIZE - r, 2))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(col))
    return img


def _count(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    col = _color(rng)
    for _ in range(label + 1):
        cx, cy = (int(v) for v in rng.integers(4, SIZE - 4, 2))
        d.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=col)
    return img


def _quadrant(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    h = SIZE // 2
    x0, y0 = (label % 2) * h, (label // 2) * h
    cx, cy = x0 + int(rng.integers(3, h - 8)), y0 + int(rng.integers(3, h - 8))
    d.rectangle((cx, cy, cx + 5, cy + 5), fill=_color(rng))
    return img


def _size(label: int, rng: np.random.Generator) -> Image.Image:
    img, d = _canvas(rng)
    r = int(rng.integers(3, 5)) if label == 0 else int(rng.integers(10, 14))
    cx, cy = (int(v) for v in rng.integers(r, SIZE - r, 2))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_color(rng))
    return img


TASKS = {
    "shapes": (_shapes, ["circle", "square", "triangle"]),
    "stripes": (_stripes, ["horizontal", "vertical", "diagonal"]),
    "color": (_color_task, ["red", "green", "blue"]),
    "count": (_count, ["one", "two", "three"]),
    "quadrant": (_quadrant, ["top_left", "top_right", "bottom_left", "bottom_right"]),
    "size": (_size, ["small", "large"]),
}


def build_tiny_library(
    uri: str, n_train: int = 16, n_test: int = 8, seed: int = 0, tasks=None, corrupt: str | None = None
) -> list[str]:
    """Write the library to ``uri`` (path or s3://); ``n_train``/``n_test`` images per class. Returns task ids.

    ``corrupt`` names a task whose 3rd train image is replaced by bytes no decoder accepts.
    """
    writer = LibraryWriter(uri)
    for t, name in enumerate(tasks or TASKS):
        draw, classes = TASKS[name]
        rng = np.random.default_rng([seed, t])
        rows = [
            {
                "split": split,
                "label": c,
                "image": encode_png(draw(c, rng)),
                "image_id": f"{name}-{split}-{c}-{i}",
            }
            for split, n in (("train", n_train), ("test", n_test))
            for c in range(len(classes))
            for i in range(n)
        ]
        if name == corrupt:
            rows[2]["image"] = b"\x89PNG-not-really"
        spec = {"task_id": name, "dataset": "tiny", "kind": "attribute", "taxonomy": ["tiny", name]}
        writer.add_task({**spec, "classes": classes}, rows)
    return [s.task_id for s in writer.finish()]
