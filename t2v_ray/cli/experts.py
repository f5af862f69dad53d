"""``t2v experts``: fine-tune expert feature extractors on Ray Tune (library code in :mod:`t2v_ray.stages.experts`).

Config precedence: defaults in code (the paper's recipe) < ``--config FILE`` (YAML of
:class:`~t2v_ray.stages.experts.ExpertsConfig`) < flags < trailing ``key.sub=value`` overrides. Example::

    t2v experts train --library s3://b/glyphs --probe resnet34 --weights default --out s3://b/run \\
        --tasks scripts/Latin,scripts/Greek train.finetune_epochs=20 tune.gpus_per_trial=0.5

Exit status: 0 when every expert was built, 2 when some failed (listed), 1 when the run itself failed.
Heavy libraries are imported inside the commands so ``t2v --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from t2v_ray.cli.common import exit_on_bad_settings, flag_overrides, resolve_stage_config

app = typer.Typer(help="Train and list expert feature extractors.", no_args_is_help=True)

_FLAG_KEYS = {
    "library": "library",
    "out": "out",
    "resume": "resume",
    "probe": "probe",
    "weights": "weights",
    "input_size": "input_size",
    "tasks": "tasks",
    "cpus_per_trial": "tune.cpus_per_trial",
    "gpus_per_trial": "tune.gpus_per_trial",
    "address": "tune.ray_address",
    "tracking_uri": "tracking.uri",
}


def load_experts_config(config: Path | str | None, overrides: list[str]) -> Any:
    """Resolve an :class:`~t2v_ray.stages.experts.ExpertsConfig` from YAML and dotted overrides."""
    from t2v_ray.stages.experts import ExpertsConfig

    return resolve_stage_config(ExpertsConfig, config, overrides)


@app.command("train")
def train(
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.finetune_epochs=20."),
    library: str = typer.Option(..., "--library", help="Library URI (folder, file:// or s3://)."),
    out: str = typer.Option(..., "--out", help="Storage root; experts go to <out>/experts/<expert_id>/."),
    probe: str = typer.Option(None, "--probe", help="Architecture, e.g. resnet34, small_cnn."),
    weights: str = typer.Option(None, "--weights", help="default | none | torchvision name | path/URI."),
    input_size: int = typer.Option(None, "--input-size", help="Image side in pixels (default: probe's)."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated task ids: one expert per task."),
    cpus_per_trial: float = typer.Option(None, "--cpus-per-trial", help="Ray CPUs per expert."),
    gpus_per_trial: float = typer.Option(None, "--gpus-per-trial", help="Ray GPUs per expert."),
    address: str = typer.Option(None, "--address", help="Ray address (default: RAY_ADDRESS or local)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    config: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file."),
    resume: bool = typer.Option(False, "--resume", help="Restore the interrupted Tune run first."),
) -> None:
    """Fine-tune one expert per task (or per group in the config), plus the generic expert."""
    from t2v_ray.stages.experts import run_experts

    flags = dict(
        library=library,
        out=out,
        probe=probe,
        weights=weights,
        input_size=input_size,
        tasks=tasks,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        address=address,
        tracking_uri=tracking_uri,
        resume=resume or None,
    )
    with exit_on_bad_settings("t2v experts train"):
        cfg = load_experts_config(config, flag_overrides(flags, _FLAG_KEYS) + list(overrides or []))
        summary = run_experts(cfg)
    Console().print(summary.table())
    for expert_id, message in summary.errors:
        typer.secho(f"error {expert_id}: {message[:300]}", fg="red", err=True)
    raise typer.Exit(2 if summary.errors else 0)


@app.command("list")
def list_experts(out: str = typer.Option(..., "--out", help="Storage root holding experts/.")) -> None:
    """Print the experts index (id, architecture, source tasks, test error)."""
    from t2v_ray.results.experts import ExpertStore
    from t2v_ray.stages.experts import ExpertsSummary

    Console().print(ExpertsSummary(out, ExpertStore(out).read_index()).table(f"experts in {out}"))
