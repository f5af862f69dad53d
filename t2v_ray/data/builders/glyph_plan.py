"""Plan the glyph library: which scripts the installed fonts support, which fonts feed which task, how big each
task is. Pure bookkeeping in the parent process; rendering happens in ``glyph_render``."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from t2v_ray.data.builders.common import n_test_rows, task_rng
from t2v_ray.data.builders.fonts import FontInfo
from t2v_ray.data.builders.glyph_render import Source, TaskPlan
from t2v_ray.data.builders.scripts import SCRIPTS, Script

if TYPE_CHECKING:
    from t2v_ray.data.builders.glyphs import GlyphConfig

MIN_FONT_COVERAGE = 0.8  # a font joins a script's pool if it draws this fraction of the script's letters
MAX_FAMILY_CLASSES = 10


@dataclass(frozen=True)
class ScriptPool:
    """A script that the fonts support: its chosen letters, fonts for the main tasks and held-out fonts."""

    script: Script
    letters: tuple[str, ...]
    main: tuple[FontInfo, ...]
    held_out: tuple[FontInfo, ...]

    @property
    def fonts(self) -> tuple[FontInfo, ...]:
        return self.main + self.held_out


def class_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {ch}"


def _pool(script: Script, fonts: list[FontInfo], cfg: GlyphConfig, seed: int) -> ScriptPool | str:
    """The script's pool, or the reason it is skipped."""
    letters = script.letters()
    ok = [f for f in fonts if sum(f.covers(c) for c in letters) >= MIN_FONT_COVERAGE * len(letters)]
    if len(ok) < cfg.min_fonts:
        return f"script {script.name}: {len(ok)} font(s) cover it (need {cfg.min_fonts})"
    cover = {c: sum(f.covers(c) for f in ok) for c in letters}
    chosen = sorted((c for c in letters if cover[c] >= cfg.min_fonts), key=lambda c: (-cover[c], ord(c)))
    chosen = sorted(chosen[: cfg.max_classes], key=ord)
    need = min(cfg.min_letters, cfg.max_classes)
    if len(chosen) < need:
        return f"script {script.name}: {len(chosen)} letters drawn by >= {cfg.min_fonts} fonts (need {need})"
    main, held = _hold_out(ok, cfg.held_out_fraction, task_rng(seed, "held-out", script.name))
    return ScriptPool(script, tuple(chosen), main, held)


def _hold_out(fonts: list[FontInfo], frac: float, rng: np.random.Generator):
    """Split fonts into (main, held-out) by family; by file when the script has a single family."""
    by_family: dict[str, list[FontInfo]] = defaultdict(list)
    for f in fonts:
        by_family[f.family].append(f)
    units = [by_family[k] for k in sorted(by_family)] if len(by_family) > 1 else [[f] for f in fonts]
    n_held = min(max(1, round(len(units) * frac)), len(units) - 1)
    held_idx = set(rng.permutation(len(units))[:n_held].tolist())
    main = tuple(f for i, u in enumerate(units) if i not in held_idx for f in u)
    held = tuple(f for i, u in enumerate(units) if i in held_idx for f in u)
    return main, held


def heavy_tailed_counts(n_classes: int, bounds: tuple[int, int], cfg: GlyphConfig, rng: np.random.Generator):
    """Images per class: a Pareto(alpha) task size clipped to ``bounds``, times a per-class imbalance factor."""
    lo, hi = bounds
    size = min(hi, lo * (1.0 + rng.pareto(cfg.tail_alpha)))
    factors = rng.uniform(1.0 - cfg.class_imbalance, 1.0, n_classes)
    return tuple(max(2, round(size * f)) for f in factors)


def split_counts(
    counts: tuple[int, ...], test_fraction: float, min_test: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train, test) images per class from the per-class totals ``counts``.

    Train is what a plain ``test_fraction`` split of ``counts`` leaves (the heavy-tailed sizes); test is that
    split's share, topped up in proportion to each class's count so that the task has at least ``min_test``
    test images: test_c = max(share_c, ceil(min_test * n_c / sum(n))), whose sum is >= min_test. Test images
    are cheap to render and they set the resolution of the ground truth (one image of 200 is 0.5 pp).
    """
    total = sum(counts)
    share = [n_test_rows(n, test_fraction) for n in counts]
    test = tuple(max(s, math.ceil(min_test * n / total)) for s, n in zip(share, counts, strict=True))
    return tuple(n - s for n, s in zip(counts, share, strict=True)), test


def _src(font: FontInfo, chars, group: str | None = None) -> Source:
    return Source(
        font.key, font.path, font.index, group or font.family, "".join(c for c in chars if font.covers(c))
    )


def _plan(cfg, seed, task_id, dataset, kind, taxonomy, classes, sources, bounds, profile, split) -> TaskPlan:
    counts = heavy_tailed_counts(len(classes), bounds, cfg, task_rng(seed, "size", task_id))
    train, test = split_counts(counts, cfg.test_fraction, cfg.min_test)
    return TaskPlan(
        task_id=task_id,
        dataset=dataset,
        kind=kind,
        taxonomy=tuple(taxonomy),
        classes=tuple(classes),
        sources=tuple(tuple(s for s in per_class if s.chars) for per_class in sources),
        train_counts=train,
        test_counts=test,
        profile=profile,
        image_size=cfg.image_size,
        test_fraction=cfg.test_fraction,
        split=split,
        seed=seed,
    )


def _taxonomy_plans(pools: list[ScriptPool], cfg, seed) -> list[TaskPlan]:
    plans = []
    for p in pools:
        fam, name = p.script.family, p.script.name
        sources = [[_src(f, c) for f in p.main if f.covers(c)] for c in p.letters]
        classes = [class_name(c) for c in p.letters]
        plans.append(
            _plan(cfg, seed, f"glyphs/{fam}/{name}", "glyphs", "taxonomy", ["glyphs", fam, name], classes, sources,
                  cfg.taxonomy_per_class, "taxonomy", "stratified")
        )  # fmt: skip
    if not cfg.family_tasks:
        return plans
    by_family: dict[str, list[ScriptPool]] = defaultdict(list)
    for p in pools:
        by_family[p.script.family].append(p)
    for fam, members in by_family.items():
        if len(members) >= 2:
            sources = [[_src(f, p.letters) for f in p.main] for p in members]
            plans.append(
                _plan(cfg, seed, f"glyphs/{fam}", "glyphs", "taxonomy", ["glyphs", fam],
                      [p.script.name for p in members], sources, cfg.family_per_class, "taxonomy", "stratified")
            )  # fmt: skip
    if len(by_family) >= 2:
        sources = [[_src(f, p.letters) for p in members for f in p.main] for members in by_family.values()]
        plans.append(
            _plan(cfg, seed, "glyphs", "glyphs", "taxonomy", ["glyphs"], list(by_family), sources,
                  cfg.family_per_class, "taxonomy", "stratified")
        )  # fmt: skip
    return plans


def _cub_plans(pools: list[ScriptPool], cfg, seed) -> list[TaskPlan]:
    plans = []
    for p in pools[: cfg.max_cub_tasks]:
        fam, name = p.script.family, p.script.name
        sources = [[_src(f, c) for f in p.held_out if f.covers(c)] for c in p.letters]
        plans.append(
            _plan(cfg, seed, f"glyphs-cub/{fam}/{name}", "glyphs-cub", "taxonomy", ["glyphs", fam, name],
                  [class_name(c) for c in p.letters], sources, cfg.cub_per_class, "cub", "stratified")
        )  # fmt: skip
    return plans


def _weight_bin(w: int) -> str:
    for limit, name in ((350, "light"), (450, "regular"), (550, "medium"), (750, "bold")):
        if w <= limit:
            return name
    return "black"


def attribute_labels(attribute: str, fonts: tuple[FontInfo, ...]) -> tuple[list[str], dict[str, str]]:
    """Class names of an attribute task and each font's class (fonts without a usable value are left out)."""
    if attribute == "bold":
        lab = {
            f.key: "bold" if f.weight >= 600 else "regular"
            for f in fonts
            if f.weight >= 600 or 350 <= f.weight <= 500
        }
        return ["regular", "bold"], lab
    if attribute == "italic":
        return ["upright", "italic"], {f.key: "italic" if f.italic else "upright" for f in fonts}
    if attribute == "style":
        return ["serif", "sans", "mono"], {f.key: f.style for f in fonts if f.style}
    if attribute == "width":
        return ["condensed", "normal", "expanded"], {f.key: f.width for f in fonts}
    if attribute == "weight":
        return ["light", "regular", "medium", "bold", "black"], {f.key: _weight_bin(f.weight) for f in fonts}
    if attribute == "family":
        counts: dict[str, int] = defaultdict(int)
        for f in fonts:
            counts[f.family] += 1
        top = sorted((k for k, n in counts.items() if n >= 2), key=lambda k: (-counts[k], k))[
            :MAX_FAMILY_CLASSES
        ]
        return sorted(top), {f.key: f.family for f in fonts if f.family in top}
    raise ValueError(f"unknown attribute {attribute!r}")


def _attribute_plans(pools: list[ScriptPool], cfg, seed) -> tuple[list[TaskPlan], list[str]]:
    plans, skipped = [], []
    for p in (q for q in pools if q.script.name in cfg.attribute_scripts):
        for attr in cfg.attributes:
            classes, lab = attribute_labels(attr, p.fonts)
            # The family task must split by file: its classes are families, so a family-grouped split is empty.
            group = (lambda f: f.key) if attr == "family" else (lambda f: f.family)
            sources = [
                [_src(f, p.letters, group(f)) for f in p.fonts if lab.get(f.key) == c] for c in classes
            ]
            keep = [i for i, s in enumerate(sources) if len(s) >= 2]
            if len(keep) < 2:
                skipped.append(f"glyphs-attr/{p.script.name}/{attr}: fewer than 2 classes with >= 2 fonts")
                continue
            plans.append(
                _plan(cfg, seed, f"glyphs-attr/{p.script.name}/{attr}", "glyphs-attr", "attribute",
                      ["glyphs-attr", p.script.name, attr], [classes[i] for i in keep], [sources[i] for i in keep],
                      cfg.attribute_per_class, "attribute", "grouped")
            )  # fmt: skip
    return plans, skipped


def plan_tasks(fonts: list[FontInfo], cfg: GlyphConfig, seed: int) -> tuple[list[TaskPlan], list[str]]:
    """All task plans in library order (taxonomy, CUB-like, attribute) and the reasons for skipped parts."""
    wanted = set(cfg.scripts) if cfg.scripts is not None else None
    pools, skipped = [], []
    for script in SCRIPTS:
        if wanted is not None and script.name not in wanted:
            continue
        pool = _pool(script, fonts, cfg, seed)
        (skipped if isinstance(pool, str) else pools).append(pool)
    attr_plans, attr_skipped = _attribute_plans(pools, cfg, seed)
    plans = _taxonomy_plans(pools, cfg, seed) + _cub_plans(pools, cfg, seed) + attr_plans
    return plans, skipped + attr_skipped
