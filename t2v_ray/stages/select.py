"""The select stage end to end: evaluate every selector on a results root, write the report, log to MLflow.

Used by ``t2v select evaluate``, ``t2v report``, ``jobs/select_experts.py`` and the pipeline. Input locations default
to the layout of :mod:`t2v_ray.results.layout`; outputs go to ``<results>/select/<protocol>`` unless ``out`` is set,
together with the resolved config (``config.yaml``). The pipeline reuses a report whose inputs are unchanged
(:func:`input_key`, stored as ``inputs.sha256`` beside it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from t2v_ray.config import Uri
from t2v_ray.data import storage
from t2v_ray.results.layout import (
    EXPERTS_FILE,
    SELECT_CONFIG_FILE,
    SELECT_DIR,
    SELECT_KEY_FILE,
    ResultsPaths,
)
from t2v_ray.track import run_tags, stage_tracker
from t2v_ray.track.settings import TrackingSettings

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
        model2vec: run out-of-fold MODEL2VEC.
        model2vec_folds: 0: leave-one-out (one fit per task, the paper); K: K-fold cross-fitting (K fits; the
            default preset's 137 tasks x 21,008 filters made leave-one-out take ~40 min per protocol on 2 cores).
        probe, method: which embedding run to use when the file holds several.
        track, tracking_uri: log to MLflow (``None``: ``MLFLOW_TRACKING_URI`` or ``./t2v-data/mlflow.db``).
    """

    results: Uri = "t2v-data/results"
    embeddings: Uri | None = None
    grid: Uri | None = None
    experts: Uri | None = None
    library: Uri | None = None
    out: Uri | None = None
    protocol: Literal["taxonomy", "mixed"] = "taxonomy"
    alpha: float = 0.15
    n_boot: int = 1000
    seed: int = 0
    model2vec: bool = True
    model2vec_folds: int = 0
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
    return load_config(SelectConfig, path, given + list(overrides or []))


def output_uri(cfg: SelectConfig) -> str:
    """Where the report of ``cfg`` goes."""
    return cfg.out or storage.join(cfg.results, SELECT_DIR, cfg.protocol)


@dataclass
class SelectSummary:
    """One evaluation: Table 1, the per-task details, the files written (name -> URI), and whether it was reused.

    ``details`` is None for a report reused from the cache (only its Table 1 is read back).
    """

    protocol: str
    table1: Any
    details: Any = None
    written: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def table(self) -> Any:
        """Table 1 as a rich table (the same strings as the Markdown file)."""
        from rich.table import Table

        from t2v_ray.report.tables import HEADERS, format_rows

        title = f"Table 1 — protocol {self.protocol}"
        if self.details is not None:
            title += f": {len(self.details.task_ids)} tasks × {len(self.details.expert_ids)} experts"
        out = Table(title=title, show_header=True)
        for i, h in enumerate(HEADERS):
            out.add_column(h, justify="left" if i == 0 else "right", style="bold" if i == 0 else None)
        for row in format_rows(self.table1):
            out.add_row(*row)
        return out


def run_select(cfg: SelectConfig) -> SelectSummary:
    """Evaluate, write the report (and the resolved config) and log everything to one MLflow run."""
    import yaml

    from t2v_ray.config import to_dict
    from t2v_ray.report.evaluate import evaluate_selection
    from t2v_ray.report.writer import table_metrics, write_report

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
        model2vec_folds=cfg.model2vec_folds,
        probe=cfg.probe,
        method=cfg.method,
    )
    out = output_uri(cfg)
    resolved = {**to_dict(cfg), "resolved_paths": to_dict(paths), "out": out}
    config_text = yaml.safe_dump(resolved, sort_keys=False)
    settings = TrackingSettings(uri=cfg.tracking_uri, enabled=cfg.track)
    tracker = stage_tracker(settings, paths.library or cfg.results, "select")
    with tracker.parent_run(
        f"select:{cfg.protocol}", params=resolved, tags=run_tags("select", protocol=cfg.protocol)
    ) as run_id:
        written = write_report(table, details, out, tracker, run_id)
        config_uri = storage.join(out, SELECT_CONFIG_FILE)
        storage.write_bytes_atomic(config_uri, config_text.encode())
        written[SELECT_CONFIG_FILE] = config_uri
        tracker.log_artifact_bytes(run_id, SELECT_CONFIG_FILE, config_text)
        tracker.log_metrics(
            run_id,
            {**table_metrics(table), "n_tasks": len(details.task_ids), "n_experts": len(details.expert_ids)},
        )
    return SelectSummary(cfg.protocol, table, details, written)


def input_key(cfg: SelectConfig) -> str:
    """Hash of the select config and of its inputs' content: equal key, equal Table 1.

    The embeddings count by their stored rows, part files of an interrupted embed included
    (:func:`~t2v_ray.results.embeddings.embeddings_fingerprint`); the grid and experts index by their bytes.
    """
    import hashlib
    import json

    from t2v_ray.config import to_dict
    from t2v_ray.results.embeddings import embeddings_fingerprint

    paths = ResultsPaths.from_root(cfg.results, cfg.embeddings, cfg.grid, cfg.experts, cfg.library)
    h = hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode())
    h.update(embeddings_fingerprint(paths.embeddings).encode())
    for uri in (paths.grid, paths.experts or storage.join(cfg.results, EXPERTS_FILE)):
        h.update(storage.read_bytes(uri) if storage.exists(uri) else b"-")
    return h.hexdigest()


def cached_select(cfg: SelectConfig, key: str) -> SelectSummary | None:
    """The report of a previous evaluation with the same :func:`input_key`, else None."""
    import io

    import pandas as pd

    out = output_uri(cfg)
    key_uri, table_uri = storage.join(out, SELECT_KEY_FILE), storage.join(out, "table1.csv")
    if (
        not (storage.exists(key_uri) and storage.exists(table_uri))
        or storage.read_bytes(key_uri).decode() != key
    ):
        return None
    table = pd.read_csv(io.BytesIO(storage.read_bytes(table_uri)))
    written = {"table1.csv": table_uri, "table1.md": storage.join(out, "table1.md")}
    return SelectSummary(cfg.protocol, table, None, written, cached=True)


def store_key(cfg: SelectConfig, key: str) -> None:
    """Record ``key`` next to the report of ``cfg`` (read by :func:`cached_select`)."""
    storage.write_bytes_atomic(storage.join(output_uri(cfg), SELECT_KEY_FILE), key.encode())
