"""``t2v library ...``: build, import and validate task libraries (local folder or S3 prefix).

Heavy modules (pyarrow, PIL, fontTools) are imported inside the commands so ``t2v --help`` stays fast.
Config resolution for every command: the builder's defaults (or preset), then ``--config FILE`` (YAML), then
``--set key=value`` overrides, then the command's explicit options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Task libraries: build the offline glyph / Fashion-MNIST libraries, import your own images, validate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
build_app = typer.Typer(
    help="Build an offline library from data installed on this machine (fonts, Debian datasets).",
    no_args_is_help=True,
)
app.add_typer(build_app, name="build")

ConfigOpt = typer.Option(
    None, "--config", help="YAML file of config fields (applied before --set and options)."
)
SetOpt = typer.Option(
    None, "--set", "-s", help="Config override key=value (repeatable), e.g. -s max_classes=20."
)
SeedOpt = typer.Option(
    None, "--seed", help="Seed of every random choice (sizes, sampling, splits). (default: 0)"
)
ContactOpt = typer.Option(
    True, "--contact-sheet/--no-contact-sheet", help="Write contact_sheet.png into the library."
)
# Shared by the importers (import-folder, import-attributes).
ImportOutOpt = typer.Option(..., "--out", "-o", help="Library folder or s3:// URI.")
MaxPerClassOpt = typer.Option(None, help="Sample at most this many per class. (default: 1000)")
MaxSideOpt = typer.Option(
    None, help="Downscale images whose longer side is larger (-s max_side=null keeps sizes). (default: 1024)"
)
MaxPixelsOpt = typer.Option(
    None,
    min=1,
    help="Leave out images with more pixels, checked from the header before decoding. (default: 80000000)",
)


def _resolve(cls: type, base: Any, config: Path | None, sets: list[str] | None, explicit: dict[str, Any]):
    """``base`` (a ``cls`` instance) updated by the YAML file, the overrides, then non-None explicit options."""
    import yaml

    from t2v_ray.config import apply_overrides, from_dict, to_dict

    data = to_dict(base)
    if config is not None:
        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{config}: top level must be a mapping", param_hint="--config")
        data.update(loaded)
    data.update(apply_overrides({}, sets or []))
    data.update({k: v for k, v in explicit.items() if v is not None})
    return from_dict(cls, data)


def _report(summary, strict: bool = False) -> None:
    """Print the summary table, skipped inputs and validation issues; exit 1 when validation found errors."""
    from rich.console import Console

    console = Console()
    console.print(summary.table())
    if summary.skipped:
        console.print(f"[yellow]{len(summary.skipped)} input(s) skipped:[/yellow]")
        for line in summary.skipped[:20]:
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        if len(summary.skipped) > 20:
            console.print(f"  ... and {len(summary.skipped) - 20} more")
        console.print(f"  (all listed in {summary.uri}/skipped.json)", markup=False, highlight=False)
    report = summary.validation
    if report is not None and report.issues:
        console.print(report.table())
    if report is not None and not report.ok:
        raise typer.Exit(report.exit_code)


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


@build_app.command("glyphs")
def build_glyphs_cmd(
    out: str = typer.Option("./t2v-data/glyphs", "--out", "-o", help="Library folder, file:// or s3:// URI."),
    small: bool = typer.Option(
        False, "--small", help="Tiny preset for tests: ~12 tasks, ~1.5k images, seconds."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    processes: int = typer.Option(2, "--processes", "-j", help="Rendering processes."),
    scripts: str | None = typer.Option(
        None, help="Comma-separated scripts to keep (default: all the fonts cover)."
    ),
    max_classes: int | None = typer.Option(None, help="Letters per script task (cap). (default: 30)"),
    image_size: int | None = typer.Option(None, help="Image side in pixels. (default: 32)"),
    tail_alpha: float | None = typer.Option(None, help="Pareto shape of task sizes; smaller = heavier tail."),
    taxonomy_per_class: tuple[int, int] | None = typer.Option(
        None, help="LO HI images per class, script tasks."
    ),
    cub_per_class: tuple[int, int] | None = typer.Option(
        None, help="LO HI images per class, CUB-like tasks."
    ),
    attribute_per_class: tuple[int, int] | None = typer.Option(
        None, help="LO HI images per class, attributes."
    ),
    shard_mb: int = typer.Option(128, help="Target image megabytes per shard."),
    contact_sheet: bool = ContactOpt,
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Render the offline glyph library: script taxonomy tasks, CUB-like held-out-font tasks, font attributes.

    The default preset gives ~137 tasks / ~53k images in ~1.5 min on 2 cores; --small gives 12 tasks.
    Rebuilding identical content rewrites nothing. Exit code 1 if validation finds errors.
    """
    from t2v_ray.data.builders.glyphs import PRESETS, GlyphConfig, build_glyphs

    explicit = {
        "scripts": _split(scripts),
        "max_classes": max_classes,
        "image_size": image_size,
        "tail_alpha": tail_alpha,
        "taxonomy_per_class": taxonomy_per_class,
        "cub_per_class": cub_per_class,
        "attribute_per_class": attribute_per_class,
    }
    cfg = _resolve(GlyphConfig, PRESETS["small" if small else "default"], config, set_, explicit)
    summary = build_glyphs(
        out, seed=seed, processes=processes, config=cfg, contact_sheet=contact_sheet, progress=True,
        shard_bytes=shard_mb * 2**20,
    )  # fmt: skip
    _report(summary)


@build_app.command("fashion-mnist")
def build_fashion_cmd(
    out: str = typer.Option("./t2v-data/fashion-mnist", "--out", "-o", help="Library folder or s3:// URI."),
    small: bool = typer.Option(False, "--small", help="4 tasks, <= 60 train images per class."),
    seed: int | None = SeedOpt,
    root: str | None = typer.Option(
        None, help="Folder of the idx files. (default: /usr/share/datasets/fashion-mnist)"
    ),
    max_per_class: int | None = typer.Option(None, help="Size cap: train images per class. (default: 600)"),
    min_per_class: int | None = typer.Option(
        None, help="Smallest task's train images per class. (default: 60)"
    ),
    tasks: str | None = typer.Option(None, help="Comma-separated task names (e.g. category,is-bag)."),
    contact_sheet: bool = ContactOpt,
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Fashion-MNIST attribute tasks (categories, one-vs-rest, groupings such as upper-body and footwear).

    Needs the Debian package dataset-fashion-mnist (or --root with its four idx files).
    """
    from dataclasses import asdict, replace

    from t2v_ray.data.builders.fashion_mnist import build_fashion_mnist
    from t2v_ray.data.configs import FASHION_SMALL, FashionMnistConfig

    base = replace(FashionMnistConfig(), **FASHION_SMALL) if small else FashionMnistConfig()
    explicit = {"seed": seed, "root": root, "max_per_class": max_per_class, "min_per_class": min_per_class}
    cfg = _resolve(FashionMnistConfig, base, config, set_, {**explicit, "tasks": _split(tasks)})
    params = asdict(cfg)
    params["tasks"] = list(cfg.tasks) if cfg.tasks else None
    _report(build_fashion_mnist(out, contact_sheet=contact_sheet, progress=True, **params))


@app.command("import-folder")
def import_folder_cmd(
    root: str = typer.Argument(..., help="Folder tree root (local path or s3:// prefix): root/a/b/c/*.jpg."),
    out: str = ImportOutOpt,
    min_images: int | None = typer.Option(
        None, help="Images a sub-folder needs to be a class. (default: 10)"
    ),
    max_per_class: int | None = MaxPerClassOpt,
    dataset: str | None = typer.Option(None, help="Dataset name / taxonomy root. (default: ROOT's name)"),
    max_side: int | None = MaxSideOpt,
    max_pixels: int | None = MaxPixelsOpt,
    follow_symlinks: bool | None = typer.Option(
        None,
        "--follow-symlinks/--no-follow-symlinks",
        help="Follow directory links (never back into an ancestor). (default: not followed)",
    ),
    seed: int | None = SeedOpt,
    contact_sheet: bool = ContactOpt,
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Import an image folder tree: each folder whose sub-folders have >= --min-images images becomes a task
    classifying those sub-folders; the taxonomy column holds the folder path (iNaturalist, CUB).
    Files left out (undecodable, too large, not images, dangling links, duplicate content) are listed."""
    from dataclasses import asdict

    from t2v_ray.data.builders.folder import build_folder
    from t2v_ray.data.configs import FolderImportConfig

    explicit = {
        "min_images": min_images,
        "max_per_class": max_per_class,
        "dataset": dataset,
        "max_side": max_side,
        "max_pixels": max_pixels,
        "follow_symlinks": follow_symlinks,
    }
    cfg = _resolve(FolderImportConfig, FolderImportConfig(), config, set_, {**explicit, "seed": seed})
    _report(build_folder(root, out, contact_sheet=contact_sheet, progress=True, **asdict(cfg)))


@app.command("import-attributes")
def import_attributes_cmd(
    csv: str = typer.Argument(..., help="CSV with a header: image path column + attribute columns."),
    images: str = typer.Option(
        ..., "--images", help="Folder or s3:// prefix the image paths are relative to."
    ),
    out: str = ImportOutOpt,
    path_column: str | None = typer.Option(None, help="Column of image paths. (default: first column)"),
    columns: str | None = typer.Option(None, help="Comma-separated attribute columns. (default: all others)"),
    min_images: int | None = typer.Option(None, help="Images a class needs. (default: 10)"),
    max_per_class: int | None = MaxPerClassOpt,
    multi_sep: str | None = typer.Option(None, help="Separator of multi-valued cells, e.g. ';'."),
    dataset: str | None = typer.Option(None, help="Dataset name. (default: CSV file name)"),
    max_side: int | None = MaxSideOpt,
    max_pixels: int | None = MaxPixelsOpt,
    seed: int | None = SeedOpt,
    contact_sheet: bool = ContactOpt,
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Import an attribute table (iMaterialist / DeepFashion style): one binary task per attribute value, plus a
    multi-class task per column with 3-20 values. Empty cells mean unknown."""
    from dataclasses import asdict

    from t2v_ray.data.builders.attributes import build_attributes
    from t2v_ray.data.configs import AttributeImportConfig

    explicit = {
        "path_column": path_column,
        "columns": _split(columns),
        "min_images": min_images,
        "max_per_class": max_per_class,
        "multi_sep": multi_sep,
        "dataset": dataset,
        "max_side": max_side,
        "max_pixels": max_pixels,
        "seed": seed,
    }
    cfg = _resolve(AttributeImportConfig, AttributeImportConfig(), config, set_, explicit)
    params = asdict(cfg)
    params["columns"] = list(cfg.columns) if cfg.columns else None
    _report(build_attributes(csv, images, out, contact_sheet=contact_sheet, progress=True, **params))


@app.command("validate")
def validate_cmd(
    uri: str = typer.Argument(..., help="Library folder or s3:// URI."),
    decode: bool = typer.Option(
        True, "--decode/--no-decode", help="Decode every image (catches corrupt bytes)."
    ),
    check_hash: bool = typer.Option(False, "--check-hash", help="Recompute each task's content hash."),
    max_rows: int = typer.Option(40, help="Issues shown in the table."),
) -> None:
    """Check a library: schema, missing shards, undecodable images, empty or single-class tasks, labels out of
    range, duplicate image ids. Exit code 0: all good; 1: some tasks unusable; 2: the library is unusable or
    cannot be read (e.g. its S3 endpoint cannot be reached)."""
    from rich.console import Console

    from t2v_ray.data.validate import validate_library

    report = validate_library(uri, decode=decode, check_hash=check_hash)
    console = Console()
    if report.issues:
        console.print(report.table(max_rows=max_rows))
    console.print(report.summary(), markup=False, highlight=False)
    raise typer.Exit(report.exit_code)


@app.command("info")
def info_cmd(uri: str = typer.Argument(..., help="Library folder or s3:// URI.")) -> None:
    """List a library's tasks: id, kind, taxonomy, classes, train/test sizes."""
    from rich.console import Console
    from rich.table import Table

    from t2v_ray.data.library import LibraryError, TaskLibrary
    from t2v_ray.data.retry import StorageUnavailableError

    try:
        lib = TaskLibrary.open(uri)
    except (LibraryError, StorageUnavailableError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    table = Table(title=f"{uri}: {len(lib)} tasks")
    for col in ("task_id", "kind", "taxonomy", "classes", "train", "test"):
        table.add_column(col, overflow="fold")
    for t in lib.tasks:
        table.add_row(
            t.task_id, t.kind, "/".join(t.taxonomy), str(t.num_classes), str(t.n_train), str(t.n_test)
        )
    Console().print(table)
