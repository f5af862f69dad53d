"""``t2v demo``: the whole method on the embedded default, end to end, on a laptop.

The sizes are documented in the command's help (``t2v demo --help``) and set in ``t2v_ray/configs/demo.yaml``
(identical to ``jobs/configs/demo.yaml``; a test keeps them equal). A second run reuses every cached result
(content hashes) and only re-prints the report.
"""

from __future__ import annotations

from pathlib import Path

import typer


def demo_config(storage: str = "t2v-data"):
    """The demo's PipelineConfig (jobs/configs/demo.yaml holds the same values)."""
    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    return load_config(PipelineConfig, path, [f"storage={storage}"])


def preset_config(preset: str) -> Path:
    """The demo config of a preset: ``configs/demo-<preset>.yaml`` when shipped, else ``configs/demo.yaml`` (the
    small demo) with ``library.preset`` set to it."""
    folder = Path(__file__).resolve().parents[1] / "configs"
    own = folder / f"demo-{preset}.yaml"
    return own if own.is_file() else folder / "demo.yaml"


def demo(
    storage: str | None = typer.Option(
        None,
        help="folder (or s3:// prefix) for the library, results and MLflow (default: the preset's, "
        "t2v-data or t2v-data-default)",
    ),
    preset: str = typer.Option(
        "small",
        help="small: 12 tasks, 4 experts (configs/demo.yaml); default: 137 tasks, 12 experts spread over the "
        "families, 32 px (configs/demo-default.yaml, <= 30 min on 2 cores)",
    ),
    experts: int | None = typer.Option(
        None, help="experts fine-tuned besides the generic one (default: the preset's, 4 or 12)"
    ),
    config: Path | None = typer.Option(None, "--config", help="a PipelineConfig YAML instead of the demo's"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. embed.actors=1 n_boot=200"),
) -> None:
    """Run the whole method on the embedded default (local Ray, ./t2v-data, MLflow on sqlite) and print Table 1.

    \b
    Sizes (scaled down from the paper; 2-4 min on 2 CPU cores, a cached rerun ~10 s):
      library  offline glyph library, preset small: 12 tasks, 30-250 training and >= 200 test images each, 32 px
      probe    EfficientNet-Lite0 with its packaged ImageNet weights, 64 px inputs
      experts  generic + 4 fine-tuned on the largest taxonomy tasks (10 head + 3 SGD epochs of 512 draws)
      embed    exact Fisher over each image's 3 most probable classes, <= 256 images a task, 2 Ray actors
      grid     5 experts x 12 tasks linear classifiers (16 epochs of 1,000 balanced draws) + LogME/LEEP/NCE/H-score
      select   Table 1 for the taxonomy and mixed protocols, Fig. 1-3 style PNGs, everything in MLflow
    Every value is in t2v_ray/configs/demo.yaml (= jobs/configs/demo.yaml) and can be overridden, e.g.
    `t2v demo embed.actors=1 n_boot=200`.

    \b
    --preset default (t2v_ray/configs/demo-default.yaml, ./t2v-data-default; <= 30 min on 2 cores):
      137 tasks (>= 200 test images each), 32 px probe inputs, generic + 12 experts spread over the families
      (8 SGD epochs of 1,024 draws), every training image embedded, 13 x 137 grid in trials of 32 tasks.
    """
    import os
    import sys

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    # The demo always starts its own local Ray; Ray 2.60's token auth only matters on shared clusters.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rich.console import Console

    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig, StageError, exit_code, run_pipeline

    # Table 1 needs ~110 columns; rich would wrap it into an unreadable tower in a narrow pipe/CI log.
    console = Console(width=None if sys.stdout.isatty() else 130)
    base = config or preset_config(preset)
    ovr = [f"library.preset={preset}", *(overrides or [])]
    ovr += [f"storage={storage}"] if storage is not None else []
    ovr += [f"n_experts={experts}"] if experts is not None else []
    cfg = load_config(PipelineConfig, base, ovr)
    try:
        result = run_pipeline(cfg, log=console.print)
    except StageError as err:
        console.print(f"[bold red]t2v demo stopped:[/] {err}", soft_wrap=True)
        raise typer.Exit(1) from None
    _print_result(console, cfg, result)
    raise typer.Exit(exit_code(cfg, result))


def _print_result(console, cfg, result: dict) -> None:

    from t2v_ray.pipeline import tracking_uri

    for protocol, table in result["tables"].items():
        console.print(render_table1(table, protocol))
        files = result["files"].get(protocol, {})
        if files:
            folder = str(next(iter(files.values()))).rsplit("/", 1)[0]
            console.print(
                f"[bold]{protocol}[/]: Table 1 (md/csv), picks and plots (fig1-fig3 PNG) in {folder}/"
            )
    margins = next(
        (f["expert_margins.csv"] for f in result["files"].values() if "expert_margins.csv" in f), None
    )
    if margins is not None:
        console.print(render_margins(margins))
    secs = result["seconds"]
    console.print(
        "stage times: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in secs.items())
        + f" (total {sum(secs.values()):.0f}s)"
    )
    console.print(f"Browse everything in MLflow:  mlflow ui --backend-store-uri {tracking_uri(cfg)}")
    print_failures(console, cfg, result)


def render_margins(uri: str):
    """The expert-margin table (``expert_margins.csv`` of the report) as a rich table with its mean."""
    import io

    import pandas as pd
    from rich.table import Table

    from t2v_ray.data import storage

    m = pd.read_csv(io.BytesIO(storage.read_bytes(uri)))
    t = Table(title="Experts vs the generic probe on their own source task (linear-probe test error)")
    for col, just in [
        ("expert", "left"),
        ("expert", "right"),
        ("generic", "right"),
        ("margin (pp)", "right"),
    ]:
        t.add_column(col, justify=just, no_wrap=True)
    for r in m.itertuples():
        t.add_row(
            str(r.source_task),
            f"{100 * r.expert_error:.1f}%",
            f"{100 * r.generic_error:.1f}%",
            f"{100 * r.margin:+.1f}",
        )
    t.caption = (
        f"mean margin {100 * m.margin.mean():+.1f} pp; {int((m.margin > 0).sum())}/{len(m)} experts win"
    )
    return t


def print_failures(console, cfg, result: dict) -> None:
    """The stages where some items failed, one line each, and what that does to the exit code."""
    failures = result.get("failures") or []
    if not failures:
        return
    console.print("[bold yellow]partial failures (Table 1 covers only what succeeded):[/]")
    for f in failures:
        console.print(f"  [yellow]{f.line()}[/]", soft_wrap=True)
    if cfg.allow_partial:
        console.print("  allow_partial: true, so the exit code stays 0")
    else:
        console.print("  exit code 2 (set allow_partial=true to accept partial results)")


def render_table1(table, protocol: str):
    """Table 1 as the paper prints it: mean error of the optimal expert, relative increase for the rest."""
    import math

    from rich.table import Table

    t = Table(title=f"Table 1 — expert selection, {protocol} protocol")
    for col, just in [
        ("selector", "left"),
        ("mean error", "right"),
        ("vs optimal [95% CI]", "right"),
        ("vs Generic, pp [95% CI]", "right"),
        ("regret (pp)", "right"),
        ("top-3", "right"),
        ("Kendall τ", "right"),
    ]:
        t.add_column(col, justify=just, no_wrap=True)

    def pct(v: float) -> str:
        return f"{100 * v:+.1f}%"

    for _, r in table.iterrows():
        rel = (
            "–"
            if r["selector"] == "Optimal"
            else f"{pct(r['rel_increase'])} [{pct(r['rel_increase_lo'])}, {pct(r['rel_increase_hi'])}]"
        )
        tau = r.get("kendall_tau", float("nan"))
        gen = r.get("vs_generic", float("nan"))
        vs_gen = (
            "–"
            if r["selector"] == "Generic" or gen is None or not math.isfinite(gen)
            else f"{100 * gen:+.1f} [{100 * r['vs_generic_lo']:+.1f}, {100 * r['vs_generic_hi']:+.1f}]"
        )
        t.add_row(
            str(r["selector"]),
            f"{100 * r['mean_error']:.1f}%",
            rel,
            vs_gen,
            f"{100 * r['regret']:.1f}",
            f"{100 * r['top3']:.0f}%",
            "–" if tau is None or (isinstance(tau, float) and math.isnan(tau)) else f"{tau:+.2f}",
        )
    return t
