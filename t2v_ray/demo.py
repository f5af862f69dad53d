"""``t2v demo``: the whole method on the embedded default, end to end, on a laptop.

Sizes (all scaled down from the paper so the demo fits in ~15 minutes on 2 CPU cores):
  library   offline glyph library, preset "small": 12 tasks (6 scripts, 2 script families, the family and
            root tasks, 2 CUB-like held-out-font tasks, 2 font-attribute tasks), 30-250 training images each
  probe     EfficientNet-Lite0 with its real ImageNet weights (packaged), 64 px inputs
  experts   generic (the ImageNet probe itself) + 4 experts fine-tuned on the largest taxonomy tasks
            (1 head epoch + 2 fine-tuning epochs of 512 balanced draws; paper: 10 + 60 epochs of 10,000)
  embed     Monte-Carlo Fisher, 1 label draw per image from the model, ≤ 256 images per task, 2 Ray actors
  grid      5 experts × 12 tasks linear classifiers on cached features (16 epochs of 1,000 balanced draws)
  select    Table 1 (taxonomy and mixed protocols) + Fig. 1-3 style plots, everything logged to MLflow
A second run reuses every cached result (content hashes) and only re-prints the report.
"""

from __future__ import annotations

from pathlib import Path

import typer


def demo_config(storage: str = "t2v-data"):
    """The demo's PipelineConfig (jobs/configs/demo.yaml holds the same values)."""
    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig

    path = Path(__file__).resolve().parent / "configs" / "demo.yaml"
    return load_config(PipelineConfig, path, [f"storage={storage}"])


def demo(
    storage: str = typer.Option(
        "t2v-data", help="folder (or s3:// prefix) for the library, results and MLflow"
    ),
    preset: str = typer.Option(
        "small", help="glyph library preset: small (12 tasks) or default (≥100 tasks)"
    ),
    experts: int = typer.Option(
        4, help="experts fine-tuned on the largest taxonomy tasks (plus the generic one)"
    ),
    config: Path | None = typer.Option(None, "--config", help="a PipelineConfig YAML instead of the demo's"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. embed.actors=1 n_boot=200"),
) -> None:
    """Run the whole method on the embedded default (local Ray, ./t2v-data, MLflow on sqlite) and print Table 1."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    from rich.console import Console

    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig, run_pipeline

    console = Console()
    base = config or Path(__file__).resolve().parent / "configs" / "demo.yaml"
    ovr = [f"storage={storage}", f"library.preset={preset}", f"n_experts={experts}", *(overrides or [])]
    cfg = load_config(PipelineConfig, base, ovr)
    result = run_pipeline(cfg, log=console.print)
    _print_result(console, cfg, result)


def _print_result(console, cfg, result: dict) -> None:
    from rich.table import Table

    from t2v_ray.pipeline import _tracking

    for protocol, table in result["tables"].items():
        t = Table(
            title=f"Table 1 — model selection, {protocol} protocol (relative error increase over optimal)"
        )
        cols = [
            c
            for c in (
                "selector",
                "mean_error",
                "rel_increase",
                "rel_increase_lo",
                "rel_increase_hi",
                "regret",
                "top3",
            )
            if c in table.columns
        ]
        for c in cols:
            t.add_column(c)
        for _, row in table.iterrows():
            t.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
        console.print(t)
        files = result["files"].get(protocol, {})
        if files:
            console.print(
                f"[bold]{protocol}[/]: report files: "
                + ", ".join(sorted(str(v) for v in files.values())[:3])
                + " …"
            )
    secs = result["seconds"]
    console.print(
        "stage times: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in secs.items())
        + f" (total {sum(secs.values()):.0f}s)"
    )
    console.print(f"Browse everything in MLflow:  mlflow ui --backend-store-uri {_tracking(cfg)}")
