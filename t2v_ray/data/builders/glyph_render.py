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

from t2v_ray.data.builders.common import split_groups, task_rng
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
    train_counts: tuple[int, ...]  # train images per class
    test_counts: tuple[int, ...]  # test images per class
    profile: str
    image_size: int
    test_fraction: float  # share of a class's font groups held out for test ("grouped" split)
    split: str  # "stratified" (train and test drawn from the same fonts) | "grouped" (disjoint font groups)
    seed: int

    @property
    def n_images(self) -> int:
        return sum(self.train_counts) + sum(self.test_counts)

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


def _split_sources(
    sources: tuple[Source, ...], plan: TaskPlan, rng: np.random.Generator
) -> tuple[tuple[Source, ...], tuple[Source, ...]]:
    """(train, test) sources of one class: disjoint font groups for a "grouped" split with two or more groups,
    otherwise all sources on both sides (the images themselves are distinct draws).

    Attribute labels belong to a font, so sharing a font between train and test would let a model recognise the
    font instead of the attribute.
    """
    if plan.split == "grouped":
        test = split_groups([s.group for s in sources], plan.test_fraction, rng)
        if test:
            return tuple(s for s in sources if s.group not in test), tuple(
                s for s in sources if s.group in test
            )
    return sources, sources


def _render_split(
    plan: TaskPlan, label: int, sources: tuple[Source, ...], count: int, first: int, rng: np.random.Generator
) -> tuple[list[dict], str | None]:
    """``count`` images of class ``label`` (ids numbered from ``first``) and a problem when fonts ran dry."""
    aug, rows = PROFILES[plan.profile], []
    order = rng.permutation(len(sources))
    for k in range(count):
        picked = _pick(sources, k, order, rng)
        if picked is None:
            return rows, f"{plan.task_id}: class {plan.classes[label]!r}: no font draws its characters"
        src, ch, master = picked
        rows.append(
            {
                "label": label,
                "image": encode_png(augment(master, plan.image_size, aug, rng)),
                "image_id": f"c{label}-{first + k:04d}|{src.font_key}|U+{ord(ch):04X}",
                "attributes": {"font": src.font_key, "family": src.group, "char": f"U+{ord(ch):04X}"},
            }
        )
    return rows, None


def render_task(plan: TaskPlan) -> tuple[dict, list[dict], list[str]]:
    """Render ``plan``: per class ``train_counts`` train and ``test_counts`` test images.

    Returns:
        (spec fields, rows, problems); problems are skipped images, never fatal.
    """
    rng = task_rng(plan.seed, "render", plan.task_id)
    split_rng = task_rng(plan.seed, "split", plan.task_id)
    rows: list[dict] = []
    problems: list[str] = []
    for label, sources in enumerate(plan.sources):
        if not sources:
            problems.append(f"{plan.task_id}: class {plan.classes[label]!r} has no font")
            continue
        train_src, test_src = _split_sources(sources, plan, split_rng)
        first = 0
        for split, src, count in (
            ("train", train_src, plan.train_counts[label]),
            ("test", test_src, plan.test_counts[label]),
        ):
            new, problem = _render_split(plan, label, src, count, first, rng)
            rows.extend({**r, "split": split} for r in new)
            first += count
            if problem:
                problems.append(problem)
                break
    return plan.spec_fields(), rows, problems
