"""``t2v select``: evaluate the expert selectors on stored results, or rank the experts for one new task.

    t2v select evaluate --results URI [--protocol taxonomy|mixed] [--out DIR] [key=value ...]
        Table 1 on the stored embeddings and grid: printed, and written with the figures (see ``t2v report``).
    t2v select rank --task URI [--task-id ID] --library-results URI [--top N] [--by d_asym|model2vec]
        Embeds one task with the probe/config in ``<results>/embed_config.yaml`` and ranks the stored experts by
        d_asym and MODEL2VEC; reads the grid, never writes it. ``--task`` is a library (with ``--task-id`` unless
        it holds one task) or a folder ``root/<class>/<images>``.

Heavy libraries are imported inside the commands so ``t2v --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from t2v_ray.cli import report as common
from t2v_ray.cli.common import bad_parameter_on, flag_overrides, resolve_stage_config

app = typer.Typer(
    help="Expert selection: Table 1 on stored results, or ranking experts for a new task.",
    no_args_is_help=True,
)


@app.command()
def evaluate(
    overrides: list[str] = common.OVERRIDES,
    results: str = common.RESULTS,
    protocol: str = common.PROTOCOL,
    out: str = common.OUT,
    library: str = common.LIBRARY,
    embeddings: str = common.EMBEDDINGS,
    grid: str = common.GRID,
    experts: str = common.EXPERTS,
    alpha: float = common.ALPHA,
    tracking_uri: str = common.TRACKING_URI,
    track: bool = common.TRACK,
    config: Path = common.CONFIG,
) -> None:
    """Run every selector on the stored embeddings and grid; print Table 1 and write the report."""
    # First statement, so locals() holds exactly the command's parameters.
    summary = common.run_from_cli(**locals())
    from rich.console import Console

    Console().print(summary.table())
    common.print_written(summary.written)


def render_ranking(result: Any, top: int | None) -> Any:
    """The ranking of :func:`t2v_ray.stages.rank.rank_new_task` as a rich table."""
    import math

    from rich.table import Table

    df = result.table if top is None else result.table.head(top)
    secs = result.seconds
    title = f"Experts for {result.task_name}  (embed {secs['embed']:.1f} s, total {secs['total']:.1f} s)"
    out = Table(title=title, show_header=True)
    cols = [
        c
        for c in ("rank", "expert_id", "d_asym", "d_sym", "model2vec", "model2vec_rank", "source_tasks")
        if c in df
    ]
    for c in cols:
        out.add_column(c, justify="left" if c in ("expert_id", "source_tasks") else "right")
    for r in df.to_dict("records"):
        cells = []
        for c in cols:
            v = r[c]
            cells.append(
                "–"
                if isinstance(v, float) and math.isnan(v)
                else f"{v:.4f}"
                if isinstance(v, float)
                else str(v)
            )
        out.add_row(*cells)
    return out


@app.command()
def rank(
    overrides: list[str] = common.OVERRIDES,
    task: str = typer.Option(
        None, "--task", help="New task: a library URI (+ --task-id) or a folder root/<class>/*.png."
    ),
    library_results: str = typer.Option(
        None, "--library-results", help="Results root of the expert library."
    ),
    task_id: str = typer.Option(None, "--task-id", help="Task id inside the --task library."),
    top: int = typer.Option(None, "--top", help="Show the N best experts only."),
    by: str = typer.Option(None, "--by", help="Order by d_asym (default) | d_sym | model2vec."),
    alpha: float = typer.Option(None, "--alpha", help="alpha of the asymmetric distance (default 0.15)."),
    model2vec: bool = typer.Option(
        None, "--model2vec/--no-model2vec", help="Also fit and score MODEL2VEC (default on)."
    ),
    csv: str = typer.Option(None, "--csv", help="Also write the full ranking as CSV here."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available)."),
    config: Path = common.CONFIG,
) -> None:
    """Embed ONE new task with the stored probe/config and rank the stored experts for it."""
    from rich.console import Console

    from t2v_ray.data import storage
    from t2v_ray.results.layout import ResultsPaths
    from t2v_ray.stages.rank import RankConfig, rank_new_task

    flags = dict(
        task=task,
        library_results=library_results,
        task_id=task_id,
        top=top,
        by=by,
        alpha=alpha,
        model2vec=model2vec,
        csv=csv,
        device=device,
    )
    with bad_parameter_on((ValueError, FileNotFoundError)):
        cfg = resolve_stage_config(RankConfig, config, flag_overrides(flags), overrides)
        if not cfg.task or not cfg.library_results:
            raise ValueError("both --task and --library-results are required")
        paths = ResultsPaths.from_root(cfg.library_results)
        result = rank_new_task(paths, cfg.task, cfg.task_id, cfg.alpha, cfg.model2vec, cfg.by, cfg.device)
    Console().print(render_ranking(result, cfg.top))
    if cfg.csv:
        storage.write_bytes_atomic(cfg.csv, result.table.to_csv(index=False, float_format="%.6g").encode())
