"""Write the select-stage report (tables and figures) to a folder or S3 prefix, and log it to MLflow.

Files written under ``out`` (the names are also the MLflow artifact paths):
    table1.csv, table1.md           Table 1 (see :mod:`t2v_ray.report.tables`)
    picks.csv                       per task and selector: the chosen expert, its error, the optimal error
    alpha_sweep.csv                 rel. error increase of d_asym picks per alpha (diagnostic)
    expert_margins.csv, .md         each fine-tuned expert vs the generic one on its own source task
    fig1_tsne.png                   task vs domain embedding t-SNE
    fig2_distance_matrix.png        d_sym matrix + dendrogram + taxonomy colour bar
    fig2_taxonomy_curve.png         taxonomic distance vs neighbourhood size (needs the library's taxonomy)
    fig2_norm_vs_error.png          L1 norm vs best-expert error
    fig3_violins.png                per-task error violins with each selector's pick
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from t2v_ray.data import storage
from t2v_ray.report.evaluate import SelectionDetails
from t2v_ray.report.tables import table_csv, table_markdown
from t2v_ray.report.tasks import task_group

log = logging.getLogger(__name__)

Renderer = Callable[[], Any]


def _groups(details: SelectionDetails, task_ids: list[str]) -> list[str]:
    return [task_group(details.specs.get(t), t) for t in task_ids]


def _figures(details: SelectionDetails) -> dict[str, Renderer]:
    """Figure name -> a function drawing it (lazy, so one failing figure does not stop the others)."""
    from t2v_ray.core.distance import pairwise_symmetric
    from t2v_ray.report import figures as F
    from t2v_ray.report.violins import fig_violins

    emb = details.embeddings
    dist = pairwise_symmetric(emb.vectors)
    dom = F.cosine_matrix(emb.domain) if emb.domain is not None else None
    groups = _groups(details, emb.task_ids)
    out: dict[str, Renderer] = {
        "fig1_tsne.png": lambda: F.fig_tsne(dist, dom, groups),
        "fig2_distance_matrix.png": lambda: F.fig_distance_matrix(dist, groups, emb.task_ids),
        "fig2_norm_vs_error.png": lambda: F.fig_norm_vs_error(
            np.abs(details.task_vectors).sum(axis=1),
            details.optimal_errors,
            _groups(details, details.task_ids),
        ),
        "fig3_violins.png": lambda: fig_violins(details),
    }
    known = [i for i, t in enumerate(emb.task_ids) if t in details.specs]
    if len(known) >= 3:
        from t2v_ray.data.taxonomy import taxonomy_matrix

        tax = taxonomy_matrix([details.specs[emb.task_ids[i]] for i in known])
        sub = np.ix_(known, known)
        out["fig2_taxonomy_curve.png"] = lambda: F.fig_taxonomy_curve(
            dist[sub], tax, None if dom is None else dom[sub]
        )
    else:
        log.warning("no library taxonomy for the embedded tasks: skipping the taxonomy curve")
    return out


def _note(details: SelectionDetails) -> str:
    return (
        f"Protocol **{details.protocol}**: {len(details.task_ids)} tasks, {len(details.expert_ids)} experts, "
        f"α = {details.alpha}. Relative increase = mean(e_sel) / mean(e_opt) − 1 with a bootstrap 95% "
        "interval (tasks resampled, and each grid cell's test set: Binomial(n_test, e) / n_test); ± after a "
        "mean error is its bootstrap standard error; mean of ratios = mean over tasks of (e_sel − e_opt) / e_opt."
    )


def margins_markdown(margins: pd.DataFrame) -> str:
    """The expert-margin table: linear-probe test error on each expert's own source task, expert vs generic."""
    lines = [
        "## Experts vs the generic probe on their own source tasks",
        "",
        "| expert | expert error | generic error | margin (pp) |",
        "|---|---:|---:|---:|",
    ]
    for r in margins.to_dict("records"):
        lines.append(
            f"| {r['expert_id']} | {100 * r['expert_error']:.1f}% | {100 * r['generic_error']:.1f}% "
            f"| {100 * r['margin']:+.1f} |"
        )
    m = margins["margin"]
    lines += [
        "",
        f"Mean margin {100 * m.mean():+.1f} pp; {int((m > 0).sum())} of {len(m)} experts beat the probe.",
    ]
    return "\n".join(lines) + "\n"


def report_files(table: pd.DataFrame, details: SelectionDetails) -> dict[str, bytes | Renderer]:
    """Every report output: name -> bytes, or a renderer returning a figure."""
    files: dict[str, bytes | Renderer] = {
        "table1.csv": table_csv(table).encode(),
        "table1.md": table_markdown(
            table, f"Table 1 — model selection ({details.protocol})", _note(details)
        ).encode(),
        "picks.csv": details.per_task().to_csv(index=False, float_format="%.6g").encode(),
    }
    margins = details.expert_margins()
    if not margins.empty:
        files["expert_margins.csv"] = margins.to_csv(index=False, float_format="%.6g").encode()
        files["expert_margins.md"] = margins_markdown(margins).encode()
    if not details.alpha_curve.empty:
        files["alpha_sweep.csv"] = details.alpha_curve.to_csv(index=False, float_format="%.6g").encode()
    files.update(_figures(details))
    return files


def write_report(
    table: pd.DataFrame,
    details: SelectionDetails,
    out: str,
    tracker: Any | None = None,
    run_id: str | None = None,
) -> dict[str, str]:
    """Write Table 1, the picks and the figures under ``out``; also log them to ``run_id`` when tracking.

    Returns:
        name -> URI of every file written (a figure that fails to draw is logged and left out).
    """
    from t2v_ray.report.plotting import png_bytes

    written = {}
    for name, item in report_files(table, details).items():
        try:
            data = item if isinstance(item, bytes) else png_bytes(item())
        except Exception:
            log.exception("could not draw %s", name)
            continue
        uri = storage.join(out, name)
        storage.write_bytes_atomic(uri, data)
        written[name] = uri
        if tracker is not None and run_id is not None:
            tracker.log_artifact_bytes(run_id, name, data)
    return written


def metric_key(selector: str) -> str:
    """An MLflow-safe metric prefix for a selector name (``Asym. Task2Vec (α sweep)`` -> ``asym_task2vec_a_sweep``)."""
    key = re.sub(r"[^a-z0-9]+", "_", selector.lower().replace("α", "a")).strip("_")
    return key or "selector"


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Flat metrics for MLflow: ``<selector>.<metric>`` for every finite number of Table 1."""
    out = {}
    for r in table.to_dict("records"):
        for k, v in r.items():
            if k != "selector" and isinstance(v, int | float) and np.isfinite(v):
                out[f"{metric_key(r['selector'])}.{k}"] = float(v)
    return out
