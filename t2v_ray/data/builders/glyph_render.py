"""Render one glyph task in a worker process: fonts -> augmented 32x32 grayscale PNGs (dark ink on white).

A worker receives a :class:`TaskPlan` (which fonts and characters feed each class, how many images per class)
and derives every random choice from ``(seed, task_id)``, so the result does not depend on which process renders
the task or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from t2v_ray.data.builders.common import grouped_split, stratified_split, task_rng
from t2v_ray.data.images import encode_png

MASTER_PX = 48  # glyphs are drawn once at this size per (font, char) and then transformed down


@dataclass(frozen=True)
class Augment:
    """Per-image jitter. Attribute tasks keep shear and blur small: they would fake italics or weight."""

    rotate: float  # max |degrees|
    shear: float  # max |horizontal shear|
    scale: tuple[float, float]  # longer glyph side as a fraction of the image side
    blur: float  # max Gaussian radius (px at output size)
    noise: float  # std of additive pixel noise (0-255 scale)
    lowres: bool  # render at half resolution and upsample ("different source", CUB-like)


PROFILES = {
    "taxonomy": Augment(rotate=10, shear=0.15, scale=(0.55, 0.85), blur=0.5, noise=0, lowres=False),
    "cub": Augment(rotate=15, shear=0.2, scale=(0.45, 0.8), blur=0.8, noise=10, lowres=True),
    "attribute": Augment(rotate=3, shear=0.0, scale=(0.6, 0.85), blur=0.0, noise=0, lowres=False),
}


@dataclass(frozen=True)
class Source:
    """A font and the characters it may draw for one class."""

    font_key: str
    path: str
    index: int
    group: str  # unit of a grouped split (font family)
    chars: str


@dataclass(frozen=True)
class TaskPlan:
    """Everything a worker needs to render one task."""

    task_id: str
    dataset: str
    kind: str
    taxonomy: tuple[str, ...]
    classes: tuple[str, ...]
    sources: tuple[tuple[Source, ...], ...]  # per class
    counts: tuple[int, ...]  # images per class
    profile: str
    image_size: int
    test_fraction: float
    split: str  # "stratified" | "grouped"
    seed: int

    def spec_fields(self) -> dict:
        return {
            "task_id": self.task_id,
            "dataset": self.dataset,
            "kind": self.kind,
            "taxonomy": list(self.taxonomy),
            "classes": list(self.classes),
        }


@lru_cache(maxsize=32)
def _font(path: str, index: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, MASTER_PX, index=index)


@lru_cache(maxsize=4096)
def glyph_master(path: str, index: int, ch: str) -> Image.Image | None:
    """The character drawn white on black and cropped to its ink, or None when the font draws nothing."""
    try:
        font = _font(path, index)
    except OSError:
        return None
    canvas = Image.new("L", (MASTER_PX * 3, MASTER_PX * 3), 0)
    ImageDraw.Draw(canvas).text((MASTER_PX * 1.5, MASTER_PX * 1.5), ch, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return canvas.crop(box)


def augment(master: Image.Image, size: int, aug: Augment, rng: np.random.Generator) -> Image.Image:
    """Place a glyph master into a ``size``-pixel square with random rotation, shear, scale, offset, blur."""
    img = master
    s = float(rng.uniform(-aug.shear, aug.shear)) if aug.shear else 0.0
    if s:
        w, h = img.size
        # PIL AFFINE maps output (x, y) to input (x + s*y + c, y); widen the canvas by |s|*h to keep the ink.
        img = img.transform(
            (w + int(abs(s) * h) + 1, h), Image.AFFINE, (1, s, -s * h if s > 0 else 0, 0, 1, 0)
        )
    if aug.rotate:
        img = img.rotate(float(rng.uniform(-aug.rotate, aug.rotate)), resample=Image.BILINEAR, expand=True)
    img = img.crop(img.getbbox() or (0, 0, *img.size))
    work = size // 2 if aug.lowres else size
    side = rng.uniform(*aug.scale) * work
    w, h = img.size
    k = side / max(w, h)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    img = img.resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("L", (work, work), 0)
    x = int(rng.integers(0, max(1, work - nw + 1)))
    y = int(rng.integers(0, max(1, work - nh + 1)))
    canvas.paste(img, (x, y))
    if aug.lowres:
        canvas = canvas.resize((size, size), Image.BILINEAR)
    if aug.blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, aug.blur))))
    arr = 255 - np.asarray(canvas, dtype=np.float32)
    if aug.noise:
        arr = arr + rng.normal(0, aug.noise, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def _pick(sources: tuple[Source, ...], k: int, order: np.ndarray, rng: np.random.Generator):
    """The k-th image's (source, char, master), trying further sources when a font draws nothing."""
    for j in range(len(sources)):
        src = sources[order[(k + j) % len(sources)]]
        ch = src.chars[int(rng.integers(len(src.chars)))]
        master = glyph_master(src.path, src.index, ch)
        if master is not None:
            return src, ch, master
    return None


def render_task(plan: TaskPlan) -> tuple[dict, list[dict], list[str]]:
    """Render ``plan``; returns (spec fields, rows, problems). Problems are skipped images, never fatal."""
    rng = task_rng(plan.seed, "render", plan.task_id)
    aug = PROFILES[plan.profile]
    rows: list[dict] = []
    problems: list[str] = []
    for label, (sources, count) in enumerate(zip(plan.sources, plan.counts, strict=True)):
        if not sources:
            problems.append(f"{plan.task_id}: class {plan.classes[label]!r} has no font")
            continue
        order = rng.permutation(len(sources))
        for k in range(count):
            picked = _pick(sources, k, order, rng)
            if picked is None:
                problems.append(
                    f"{plan.task_id}: class {plan.classes[label]!r}: no font draws its characters"
                )
                break
            src, ch, master = picked
            img = augment(master, plan.image_size, aug, rng)
            rows.append(
                {
                    "label": label,
                    "image": encode_png(img),
                    "image_id": f"c{label}-{k:04d}|{src.font_key}|U+{ord(ch):04X}",
                    "attributes": {"font": src.font_key, "family": src.group, "char": f"U+{ord(ch):04X}"},
                    "_group": src.group,
                }
            )
    labels = [r["label"] for r in rows]
    split_rng = task_rng(plan.seed, "split", plan.task_id)
    if plan.split == "grouped":
        splits = grouped_split(labels, [r.pop("_group") for r in rows], plan.test_fraction, split_rng)
    else:
        splits = stratified_split(labels, plan.test_fraction, split_rng)
    for r, s in zip(rows, splits, strict=True):
        r.pop("_group", None)
        r["split"] = s
    return plan.spec_fields(), rows, problems
