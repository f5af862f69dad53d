"""``t2v embed``: embed a library's tasks on Ray (the stage: :mod:`t2v_ray.stages.embed`).

Config precedence: defaults in code < ``--config FILE`` (YAML) < flags < trailing ``key.sub=value`` overrides
(values parsed as YAML scalars; unknown keys are errors). Example::

    t2v embed --library s3://bucket/glyphs --probe resnet34 --weights IMAGENET1K_V1 --method montecarlo \\
        --out s3://bucket/runs/r34 --actors 4 --gpus-per-actor 1 --tasks 'scripts/*' embed.max_samples=2000

Exit status: 0 when the run finished (error rows are listed), 2 with ``--strict`` when any task errored,
1 when the run itself failed. Heavy libraries are imported inside the command so ``t2v --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from t2v_ray.cli import common

# flag name -> dotted config key
_FLAG_KEYS = {
    "library": "library",
    "probe": "probe",
    "weights": "weights",
    "input_size": "input_size",
    "method": "embed.method",
    "out": "out",
    "actors": "actors",
    "cpus_per_actor": "cpus_per_actor",
    "gpus_per_actor": "gpus_per_actor",
    "tasks": "tasks",
    "address": "address",
    "tracking_uri": "tracking.uri",
}


def flag_overrides(flags: dict[str, Any]) -> list[str]:
    """Dotted overrides for the flags that were given (JSON-quoted, so ``*`` or ``1,2`` stay strings)."""
    return common.flag_overrides(flags, _FLAG_KEYS)


def load_embed_config(config: Path | str | None, overrides: list[str]) -> Any:
    """Resolve an :class:`~t2v_ray.stages.embed.EmbedJobConfig` from a YAML file and dotted overrides."""
    from t2v_ray.stages.embed import EmbedJobConfig

    return common.resolve_stage_config(EmbedJobConfig, config, overrides)


def print_summary(summary: Any) -> None:
    """Print the run's :meth:`~t2v_ray.stages.embed.EmbedSummary.table` to stdout."""
    from rich.console import Console

    Console().print(summary.table())


def embed(
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. embed.max_samples=2000."),
    library: str = typer.Option(None, "--library", help="Library URI (folder, file:// or s3://)."),
    probe: str = typer.Option(None, "--probe", help="Probe network name, e.g. resnet34, small_cnn."),
    weights: str = typer.Option(None, "--weights", help="default | none | torchvision name | path/URI."),
    input_size: int = typer.Option(None, "--input-size", help="Image side in pixels (default: probe's)."),
    method: str = typer.Option(None, "--method", help="montecarlo | variational."),
    out: str = typer.Option(None, "--out", help="Output folder or s3:// prefix."),
    actors: int = typer.Option(None, "--actors", help="Number of actors (one probe each)."),
    cpus_per_actor: float = typer.Option(None, "--cpus-per-actor", help="Ray CPUs (= torch threads)."),
    gpus_per_actor: float = typer.Option(None, "--gpus-per-actor", help="Ray GPUs per actor."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated globs on task_id."),
    address: str = typer.Option(None, "--address", help="Ray address (default: RAY_ADDRESS or local)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    config: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 when any task ends in error."),
) -> None:
    """Embed every (selected) task of a library with TASK2VEC on a pool of Ray actors."""
    from t2v_ray.stages.embed import exit_code, run_embed

    flags = dict(
        library=library,
        probe=probe,
        weights=weights,
        input_size=input_size,
        method=method,
        out=out,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        tasks=tasks,
        address=address,
        tracking_uri=tracking_uri,
    )
    with common.exit_on_bad_settings("t2v embed"):
        cfg = load_embed_config(config, flag_overrides(flags) + list(overrides or []))
        try:
            summary = run_embed(cfg)
        except KeyboardInterrupt:
            typer.secho(
                f"t2v embed: interrupted; finished rows are saved in {cfg.out}, a rerun computes only the rest",
                fg="yellow",
                err=True,
            )
            raise typer.Exit(130) from None
    print_summary(summary)
    if summary.aborted:
        typer.secho(f"t2v embed: stopped early: {summary.aborted}", fg="red", err=True)
    raise typer.Exit(exit_code(summary, strict))
