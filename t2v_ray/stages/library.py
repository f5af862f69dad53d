"""The library stage: build an offline task library (glyphs, Fashion-MNIST), or use an existing one as it is.

``t2v library ...`` exposes every builder and importer with all their options; this stage is what the pipeline
runs, from the ``library:`` section of its config. Builders import lazily: this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from t2v_ray.config import Uri


@dataclass(frozen=True)
class LibraryConfig:
    """Where the task library comes from (the pipeline's ``library:`` section).

    Attributes:
        source: ``glyphs`` or ``fashion-mnist`` (built offline into ``out``) or ``uri`` (use ``uri`` as it is).
        preset: builder preset (glyphs: ``small`` or ``default``).
        uri: an existing library (``source: uri``), e.g. one imported with ``t2v library import-folder``.
        seed: builder seed.
        out: where a built library goes (the pipeline sets ``<storage>/library``).
    """

    source: Literal["glyphs", "fashion-mnist", "uri"] = "glyphs"
    preset: str = "small"
    uri: Uri | None = None
    seed: int = 0
    out: Uri | None = None

    def location(self) -> str:
        """The library's URI: ``uri`` for ``source: uri``, else ``out``."""
        where = self.uri if self.source == "uri" else self.out
        if not where:
            field_name = "library.uri" if self.source == "uri" else "library.out"
            raise ValueError(f"library.source is {self.source!r} but {field_name} is empty")
        return where


@dataclass
class LibrarySummary:
    """The library's URI and, when this run built it, the builder's summary (tasks, images, validation)."""

    uri: str
    build: Any = None

    def table(self) -> Any:
        """The builder's table (plus its validation issues), or one line for a library used as it is."""
        from rich.console import Group
        from rich.text import Text

        if self.build is None:
            return Text(f"library {self.uri} (used as it is)")
        parts = [self.build.table()]
        if self.build.validation is not None and self.build.validation.issues:
            parts.append(self.build.validation.table())
        return Group(*parts)


def run_library(cfg: LibraryConfig) -> LibrarySummary:
    """Build (or re-validate: identical content is a no-op) the offline library of ``cfg``."""
    uri = cfg.location()
    if cfg.source == "glyphs":
        from t2v_ray.data.builders.glyphs import build_glyphs

        return LibrarySummary(uri, build_glyphs(uri, preset=cfg.preset, seed=cfg.seed))
    if cfg.source == "fashion-mnist":
        from t2v_ray.data.builders.fashion_mnist import build_fashion_mnist

        return LibrarySummary(uri, build_fashion_mnist(uri, seed=cfg.seed))
    return LibrarySummary(uri)
