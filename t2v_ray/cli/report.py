"""``t2v report``: Table 1 and the Fig. 1-3 style figures for a results root (the stage: :mod:`t2v_ray.stages.select`).

Config precedence: defaults in code < ``--config FILE`` (YAML, keys of ``SelectConfig``) < flags < trailing
``key=value`` overrides. Example::

    t2v report --results s3://bucket/runs/r34 --out ./report --protocol taxonomy n_boot=2000

Inputs default to ``<results>/embeddings.parquet``, ``grid.parquet``, ``experts.parquet`` and the library named by
``<results>/library`` or ``<results>/embed_config.yaml``; outputs to ``<results>/select/<protocol>``.
Heavy libraries are imported inside the command so ``t2v --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from t2v_ray.cli.common import bad_parameter_on

OVERRIDES = typer.Argument(None, help="Dotted overrides, e.g. n_boot=2000 model2vec=false.")
RESULTS = typer.Option(None, "--results", help="Results root (folder or s3:// prefix).")
OUT = typer.Option(None, "--out", help="Output folder or s3:// prefix (default <results>/select/<protocol>).")
PROTOCOL = typer.Option(None, "--protocol", help="taxonomy (never the task's own expert) | mixed.")
LIBRARY = typer.Option(None, "--library", help="Library URI (default: from the results root).")
EMBEDDINGS = typer.Option(
    None, "--embeddings", help="embeddings.parquet (default <results>/embeddings.parquet)."
)
GRID = typer.Option(None, "--grid", help="grid.parquet (default <results>/grid.parquet).")
EXPERTS = typer.Option(None, "--experts", help="experts.parquet (default <results>/experts.parquet).")
ALPHA = typer.Option(None, "--alpha", help="alpha of the asymmetric distance (default 0.15).")
TRACKING_URI = typer.Option(
    None, "--tracking-uri", help="MLflow URI (default MLFLOW_TRACKING_URI or ./t2v-data)."
)
TRACK = typer.Option(None, "--track/--no-track", help="Log to MLflow (default on).")
CONFIG = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file.")


def run_from_cli(config: Path | None, overrides: list[str] | None, **flags: Any) -> Any:
    """Resolve the config from CLI inputs and run the select stage (a ``SelectSummary``); usage errors exit 2."""
    from t2v_ray.stages.select import resolve_config, run_select

    with bad_parameter_on():  # ConfigError is a ValueError: unknown key, wrong type, bad protocol
        cfg = resolve_config(str(config) if config else None, flags, overrides)
    return run_select(cfg)


def print_written(written: dict[str, str]) -> None:
    """List the files a run wrote."""
    from rich.console import Console

    console = Console()
    for name, uri in written.items():
        console.print(f"[green]wrote[/green] {name:<28} {uri}")


def report(
    overrides: list[str] = OVERRIDES,
    results: str = RESULTS,
    out: str = OUT,
    protocol: str = PROTOCOL,
    library: str = LIBRARY,
    embeddings: str = EMBEDDINGS,
    grid: str = GRID,
    experts: str = EXPERTS,
    alpha: float = ALPHA,
    tracking_uri: str = TRACKING_URI,
    track: bool = TRACK,
    config: Path = CONFIG,
) -> None:
    """Write Table 1 (Markdown + CSV), the picks and the Fig. 1-3 style figures for a results root."""
    # First statement, so locals() holds exactly the command's parameters.
    summary = run_from_cli(**locals())
    print_written(summary.written)
