"""The offline glyph library: an Omniglot-like taxonomy of scripts rendered from installed fonts.

Analogues of the paper's datasets (DATA.md):
- iNaturalist -> ``glyphs`` taxonomy tasks: one per script (classify its letters), one per script family
  (classify its scripts) and one at the root (classify families); taxonomy ``["glyphs", family, script]``.
- CUB -> ``glyphs-cub``: the same scripts drawn with held-out font families, few images per class, rougher
  rendering (a different "source").
- iMaterialist / DeepFashion -> ``glyphs-attr``: attribute tasks (bold, italic, serif/sans/mono, width, weight,
  font family) on the shared Latin / Greek / Cyrillic letter domain.
Task sizes are heavy-tailed (Pareto images per class), classes mildly imbalanced, all seeded.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from t2v_ray.data.builders.common import BuildSummary, finish_build
from t2v_ray.data.builders.fonts import DEFAULT_FONT_DIRS, discover_fonts
from t2v_ray.data.builders.glyph_plan import plan_tasks
from t2v_ray.data.builders.glyph_render import TaskPlan, render_task
from t2v_ray.data.library import DEFAULT_SHARD_BYTES, LibraryWriter


@dataclass(frozen=True)
class GlyphConfig:
    """Sizes and choices of a glyph build; :data:`PRESETS` holds the named ones.

    Per-class counts ``(lo, hi)`` are the bounds of a Pareto(``tail_alpha``) draw per task:
    ``P(n > x) = (lo / x) ** alpha``, clipped at ``hi`` -- most tasks small, a few large. ``test_fraction`` of
    them are test images; ``min_test`` tops every task's test split up to at least that many images (the train
    split keeps its heavy-tailed size), so that each error of the grid is measured to +-3.5 pp or better.
    """

    image_size: int = 32
    scripts: tuple[str, ...] | None = None  # None: every script the fonts cover
    max_classes: int = 30
    min_letters: int = 20
    min_fonts: int = 2
    test_fraction: float = 0.2
    min_test: int = 200
    held_out_fraction: float = 0.25
    taxonomy_per_class: tuple[int, int] = (10, 150)
    family_per_class: tuple[int, int] = (40, 200)
    cub_per_class: tuple[int, int] = (3, 10)
    attribute_per_class: tuple[int, int] = (60, 300)
    tail_alpha: float = 1.0
    class_imbalance: float = 0.5  # each class keeps a uniform(1 - this, 1) fraction of the task's count
    max_cub_tasks: int | None = None
    attribute_scripts: tuple[str, ...] = ("Latin", "Greek", "Cyrillic")
    attributes: tuple[str, ...] = ("bold", "italic", "style", "width", "weight", "family")
    family_tasks: bool = True
    font_dirs: tuple[str, ...] = DEFAULT_FONT_DIRS


PRESETS: dict[str, GlyphConfig] = {
    "default": GlyphConfig(),
    "small": GlyphConfig(
        scripts=("Latin", "Greek", "Cyrillic", "Armenian", "Georgian", "Hebrew"),
        max_classes=10,
        min_letters=10,
        taxonomy_per_class=(16, 40),
        family_per_class=(20, 40),
        cub_per_class=(4, 6),
        attribute_per_class=(50, 80),
        max_cub_tasks=2,
        attribute_scripts=("Latin",),
        attributes=("bold", "italic"),
    ),
}


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Rendering code and Pillow/FreeType versions: a change in any of them changes every image."""
    import hashlib

    import PIL
    from PIL import ImageFont

    from t2v_ray.data import images
    from t2v_ray.data.builders import common, glyph_render

    h = hashlib.sha256(f"{PIL.__version__}|{ImageFont.core.freetype2_version}".encode())
    for module in (glyph_render, common, images):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def plan_recipe(plan: TaskPlan) -> str:
    """Hash of everything a task's pixels derive from: the plan (seed included), the font files (size, mtime)
    and :func:`_code_fingerprint`. Equal recipes let a rebuild skip rendering."""
    import hashlib

    h = hashlib.sha256(repr(plan).encode())
    h.update(_code_fingerprint().encode())
    for path in sorted({src.path for per_class in plan.sources for src in per_class}):
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _run_plans(plans: list[TaskPlan], processes: int, progress: bool):
    """Yield ``render_task`` results in plan order, rendering in a pool when ``processes > 1``."""
    from tqdm import tqdm

    bar = tqdm(total=len(plans), desc="glyph tasks", unit="task", disable=not progress)
    if processes <= 1:
        for p in plans:
            yield render_task(p)
            bar.update()
    else:
        import multiprocessing as mp

        # spawn: the parent may hold torch/Ray threads that fork would copy in an undefined state
        with mp.get_context("spawn").Pool(processes) as pool:
            for result in pool.imap(render_task, plans, chunksize=1):
                yield result
                bar.update()
    bar.close()


def _check_config(cfg: GlyphConfig) -> None:
    """Reject split settings that cannot give every task both a train and a test split."""
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"glyph build: test_fraction must be in (0, 1), got {cfg.test_fraction}")
    if isinstance(cfg.min_test, bool) or not isinstance(cfg.min_test, int) or cfg.min_test < 0:
        raise ValueError(f"glyph build: min_test must be an integer >= 0, got {cfg.min_test!r}")


def build_glyphs(
    out_uri: str,
    preset: str = "default",
    seed: int = 0,
    small: bool = False,
    processes: int = 2,
    config: GlyphConfig | None = None,
    contact_sheet: bool = True,
    validate: bool = True,
    progress: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    **overrides,
) -> BuildSummary:
    """Build the glyph library at ``out_uri`` (plain path, ``file://`` or ``s3://``).

    Args:
        out_uri: library folder or S3 prefix.
        preset: a key of :data:`PRESETS`; ``small=True`` is shorthand for ``preset="small"``.
        seed: every random choice (sizes, fonts held out, augmentation, splits) derives from it.
        processes: rendering processes (the build is CPU-bound).
        config: a full :class:`GlyphConfig`, replacing the preset.
        contact_sheet: write ``contact_sheet.png`` into the library.
        validate: validate the finished library (the report is in the summary).
        progress: show a progress bar on stderr.
        shard_bytes: target image bytes per shard.
        **overrides: :class:`GlyphConfig` fields to change on top of the preset.
    """
    started = time.perf_counter()
    cfg = config or PRESETS["small" if small else preset]
    cfg = replace(cfg, **overrides) if overrides else cfg
    _check_config(cfg)
    fonts = discover_fonts(cfg.font_dirs)
    if not fonts:
        raise RuntimeError(
            f"no fonts found under {cfg.font_dirs}; install the font packages listed in DATA.md"
        )
    plans, skipped = plan_tasks(fonts, cfg, seed)
    order = [p.task_id for p in plans]
    writer = LibraryWriter(out_uri, shard_bytes=shard_bytes)
    recipes = {p.task_id: plan_recipe(p) for p in plans}
    todo = [p for p in plans if writer.reuse(p.task_id, recipes[p.task_id]) is None]
    # Big tasks first keeps both processes busy until the end; results are put back in plan order below.
    todo.sort(key=lambda p: -p.n_images)
    for spec_fields, rows, problems in _run_plans(todo, processes, progress):
        skipped.extend(problems)
        writer.add_task(spec_fields, rows, recipe=recipes[spec_fields["task_id"]])
    writer.specs.sort(key=lambda s: order.index(s.task_id))
    params = {"builder": "glyphs", "seed": seed, **asdict(cfg)}
    return finish_build(writer, "glyphs", started, skipped, validate, contact_sheet, config=params)
