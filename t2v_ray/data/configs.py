"""Typed configs of the library builders and importers (the glyph one lives with its builder: ``GlyphConfig``).

Each mirrors its builder's keyword arguments, so ``build_x(out_uri, **asdict(cfg))`` runs it. The CLI resolves
them as everywhere in the project: defaults here, then ``--config FILE``, then ``--set key=value``, then the
command's own options.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2v_ray.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE


@dataclass(frozen=True)
class FashionMnistConfig:
    """See :func:`t2v_ray.data.builders.fashion_mnist.build_fashion_mnist`."""

    root: str = "/usr/share/datasets/fashion-mnist"
    seed: int = 0
    max_per_class: int = 600
    min_per_class: int = 60
    tail_alpha: float = 1.0
    test_fraction: float = 0.2
    tasks: tuple[str, ...] | None = None


FASHION_SMALL = {
    "max_per_class": 60,
    "min_per_class": 30,
    "tasks": ("category", "footwear-type", "is-bag", "group-upper-body"),
}


@dataclass(frozen=True)
class FolderImportConfig:
    """See :func:`t2v_ray.data.builders.folder.build_folder`."""

    min_images: int = 10
    max_per_class: int | None = 1000
    test_fraction: float = 0.2
    seed: int = 0
    dataset: str | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False


@dataclass(frozen=True)
class AttributeImportConfig:
    """See :func:`t2v_ray.data.builders.attributes.build_attributes`."""

    path_column: str | None = None
    columns: tuple[str, ...] | None = None
    min_images: int = 10
    max_per_class: int | None = 1000
    multi_sep: str | None = None
    test_fraction: float = 0.2
    seed: int = 0
    dataset: str | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    max_pixels: int | None = DEFAULT_MAX_PIXELS
