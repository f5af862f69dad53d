"""The select stage end to end: evaluate every selector on a results root, write the report, log to MLflow.

Used by ``t2v select evaluate``, ``t2v report`` and ``jobs/select_experts.py``. Input locations default to the results
layout of :mod:`t2v_ray.report.results`; outputs go to ``<results>/select/<protocol>`` unless ``out`` is set,
together with the resolved config (``config.yaml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from t2v_ray.config import Uri
from t2v_ray.data import storage
from t2v_ray.report.evaluate import SelectionDetails, evaluate_selection
from t2v_ray.report.results import SELECT_DIR, ResultsPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectConfig:
    """Resolved settings of one evaluation (saved with its outputs and logged as MLflow params).

    Attributes:
        results: results root (folder or ``s3://`` prefix).
        embeddings, grid, experts, library: override the default locations under ``results``.
        out: output folder or prefix (default ``<results>/select/<protocol>``).
        protocol: ``taxonomy`` (never the expert trained on the task's own data) or ``mixed``.
        alpha: alpha of the asymmetric distance.
        n_boot, seed: bootstrap resamples over tasks for the 95% intervals, and their seed.
        model2vec: run leave-one-out MODEL2VEC (one fit per task).
        probe, method: which embedding run to use when the file holds several.
        track, tracking_uri: log to MLflow (``None``: ``MLFLOW_TRACKING_URI`` or ``./t2v-data/mlflow.db``).
    """

    results: Uri = "t2v-data/results"
    embeddings: Uri | None = None
    grid: Uri | None = None
    experts: Uri | None = None
    library: Uri | None = None
    out: Uri | None = None
    protocol: str = "taxonomy"
    alpha: float = 0.15
    n_boot: int = 1000
    seed: int = 0
    model2vec: bool = True
    probe: str | None = None
    method: str | None = None
    track: bool = True
    tracking_uri: Uri | None = None


def resolve_config(
    path: str | None, flags: dict[str, Any], overrides: list[str] | None = None
) -> SelectConfig:
    """Defaults < YAML file < flags that were given (not None) < trailing dotted ``key=value`` overrides."""
    import json

    from t2v_ray.config import load_config

    given = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]  # JSON keeps URIs as strings
    cfg = load_config(SelectConfig, path, given + list(overrides or []))
    if cfg.protocol not in ("taxonomy", "mixed"):
        raise ValueError(f"protocol must be 'taxonomy' or 'mixed', got {cfg.protocol!r}")
    return cfg


def output_uri(cfg: SelectConfig) -> str:
    """Where the report of ``cfg`` goes."""
    return cfg.out or storage.join(cfg.results, SELECT_DIR, cfg.protocol)


def _tracker(cfg: SelectConfig, paths: ResultsPaths) -> Any:
    from t2v_ray.track import Tracker, experiment_name

    return Tracker.create(
        cfg.tracking_uri, experiment_name(paths.library or cfg.results, "select"), enabled=cfg.track
    )


def run_select(cfg: SelectConfig) -> tuple[pd.DataFrame, SelectionDetails, dict[str, str]]:
    """Evaluate, write the report (and the resolved config) and log everything to one MLflow run.

    Returns:
        ``(table, details, written)``: Table 1, the per-task details and name -> URI of the files written.
    """
    import yaml

    from t2v_ray.config import to_dict
    from t2v_ray.report.writer import table_metrics, write_report
    from t2v_ray.track import run_tags

    paths = ResultsPaths.from_root(cfg.results, cfg.embeddings, cfg.grid, cfg.experts, cfg.library)
    table, details = evaluate_selection(
        paths.embeddings,
        paths.grid,
        paths.experts,
        paths.library,
        protocol=cfg.protocol,
        alpha=cfg.alpha,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        model2vec=cfg.model2vec,
        probe=cfg.probe,
        method=cfg.method,
    )
    out = output_uri(cfg)
    resolved = {**to_dict(cfg), "resolved_paths": to_dict(paths), "out": out}
    config_text = yaml.safe_dump(resolved, sort_keys=False)
    tracker = _tracker(cfg, paths)
    with tracker.parent_run(
        f"select:{cfg.protocol}", params=resolved, tags=run_tags("select", protocol=cfg.protocol)
    ) as run_id:
        written = write_report(table, details, out, tracker, run_id)
        storage.write_bytes_atomic(storage.join(out, "config.yaml"), config_text.encode())
        written["config.yaml"] = storage.join(out, "config.yaml")
        tracker.log_artifact_bytes(run_id, "config.yaml", config_text)
        tracker.log_metrics(
            run_id,
            {**table_metrics(table), "n_tasks": len(details.task_ids), "n_experts": len(details.expert_ids)},
        )
    return table, details, written
