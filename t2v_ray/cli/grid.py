"""``t2v grid``: the expert×task classifier grid on Ray Tune (library code in :mod:`t2v_ray.stages.grid`).

Config precedence: defaults in code (the paper's classifier recipe) < ``--config FILE`` (YAML of
:class:`~t2v_ray.stages.grid.GridConfig`) < flags < trailing ``key.sub=value`` overrides. Example::

    t2v grid run --library s3://b/glyphs --experts s3://b/run --out s3://b/run --gpus-per-trial 0.25 \\
        classifier.epochs=8

After an interruption, the same command (``--resume`` to restore Tune's own state too) computes only the missing
pairs. Exit status: 0 when the grid finished (error rows are listed), 2 with ``--strict`` when any pair is not
``ok``, 1 when the run itself failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from t2v_ray.cli.common import exit_on_bad_settings, flag_overrides, resolve_stage_config

app = typer.Typer(
    help="Ground-truth grid: a linear classifier per (expert, task) pair.", no_args_is_help=True
)

_FLAG_KEYS = {
    "library": "library",
    "experts": "expert_store",
    "out": "out",
    "resume": "resume",
    "tasks": "tasks",
    "expert_ids": "experts",
    "cpus_per_trial": "tune.cpus_per_trial",
    "gpus_per_trial": "tune.gpus_per_trial",
    "address": "tune.ray_address",
    "tracking_uri": "tracking.uri",
}


def load_grid_config(config: Path | str | None, overrides: list[str]) -> Any:
    """Resolve a :class:`~t2v_ray.stages.grid.GridConfig` from YAML and dotted overrides."""
    from t2v_ray.stages.grid import GridConfig

    return resolve_stage_config(GridConfig, config, overrides)


@app.command("run")
def run(
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. classifier.epochs=8."),
    library: str = typer.Option(..., "--library", help="Library URI (folder, file:// or s3://)."),
    experts: str = typer.Option(
        ..., "--experts", help="Storage root holding experts/ (t2v experts train --out)."
    ),
    out: str = typer.Option(..., "--out", help="Storage root for features, pair records and grid.parquet."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated task ids (default: all)."),
    expert_ids: str = typer.Option(None, "--expert-ids", help="Comma-separated expert ids (default: all)."),
    cpus_per_trial: float = typer.Option(None, "--cpus-per-trial", help="Ray CPUs per pair."),
    gpus_per_trial: float = typer.Option(
        None, "--gpus-per-trial", help="Ray GPUs per pair (fractions pack)."
    ),
    address: str = typer.Option(None, "--address", help="Ray address (default: RAY_ADDRESS or local)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    config: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file."),
    resume: bool = typer.Option(False, "--resume", help="Restore the interrupted Tune experiment first."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 when any pair is not ok."),
) -> None:
    """Train a linear classifier on every (expert, task) pair; write grid.parquet and one MLflow run per pair."""
    from rich.console import Console

    from t2v_ray.stages.grid import run_grid

    flags = dict(
        library=library,
        experts=experts,
        out=out,
        resume=resume or None,
        tasks=tasks,
        expert_ids=expert_ids,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        address=address,
        tracking_uri=tracking_uri,
    )
    with exit_on_bad_settings("t2v grid run"):
        cfg = load_grid_config(config, flag_overrides(flags, _FLAG_KEYS) + list(overrides or []))
        summary = run_grid(cfg)
    Console().print(summary.table())
    raise typer.Exit(2 if strict and summary.bad else 0)
