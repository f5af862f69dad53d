"""The whole method as one resumable job: library → experts → embeddings → grid → selection (Table 1).

Every stage caches on content hashes and skips finished work, so re-running a config only computes what
changed. The same code runs on a laptop (local Ray, ``./t2v-data``, MLflow on sqlite) and on a cluster
(``ray job submit … -- python jobs/pipeline.py --config …`` with ``s3://`` storage and an MLflow server).

Storage layout under ``storage`` (a folder or an ``s3://`` prefix):
    library/                 the task library (built here unless ``library.uri`` points to one)
    results/embeddings.parquet, results/embed_config.yaml
    results/experts/…, results/experts.parquet
    results/features/…, results/grid.parquet
    results/select/<protocol>/table1.md|csv, fig*.png
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from t2v_ray.config import Uri
from t2v_ray.distributed.embed import EmbedJobConfig
from t2v_ray.distributed.experts import ExpertsConfig
from t2v_ray.distributed.grid import GridConfig, TrackingSettings


@dataclass(frozen=True)
class LibrarySettings:
    """Where the task library comes from.

    Attributes:
        source: ``glyphs`` or ``fashion-mnist`` (built offline into ``<storage>/library``) or ``uri``.
        preset: builder preset (glyphs: ``small`` or ``default``).
        uri: an existing library (``source: uri``), e.g. one imported with ``t2v library import-folder``.
        seed: builder seed.
    """

    source: str = "glyphs"
    preset: str = "small"
    uri: Uri | None = None
    seed: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    """One experiment. Sections mirror the stage commands (``t2v embed``, ``t2v experts train``, ...).

    Attributes:
        storage: root folder or ``s3://`` prefix for the library and all results.
        tracking_uri: MLflow URI for every stage (None: ``MLFLOW_TRACKING_URI`` or ``<storage>/mlflow.db``).
        library: the task library.
        n_experts: when ``experts.tasks`` is empty, train experts on this many taxonomy tasks (largest first).
        experts: expert training (probe architecture, recipe).
        embed: the embedding job (probe, estimator, actors). ``library``/``out`` are filled in.
        grid: the expert × task classifier grid.
        protocols: selection protocols to evaluate (``taxonomy``, ``mixed``).
        n_boot: bootstrap resamples for the Table 1 intervals.
        stages: which stages to run, in order.
        allow_partial: exit 0 although some experts, tasks or pairs failed (a stage that produced nothing
            usable always stops the pipeline).
    """

    storage: Uri = "t2v-data"
    tracking_uri: Uri | None = None
    library: LibrarySettings = field(default_factory=LibrarySettings)
    n_experts: int = 4
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    embed: EmbedJobConfig = field(default_factory=EmbedJobConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    protocols: tuple[str, ...] = ("taxonomy", "mixed")
    n_boot: int = 1000
    stages: tuple[str, ...] = ("library", "experts", "embed", "grid", "select")
    allow_partial: bool = False


STAGES = ("library", "experts", "embed", "grid", "select")


def _join(root: str, *parts: str) -> str:
    from t2v_ray.data.storage import join

    return join(root, *parts)


def _tracking(cfg: PipelineConfig) -> str:
    import os

    from t2v_ray.data.storage import is_local

    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if is_local(cfg.storage):
        from t2v_ray.track import default_tracking_uri

        return default_tracking_uri(cfg.storage.removeprefix("file://"))
    raise ValueError("storage is remote: set tracking_uri (or MLFLOW_TRACKING_URI) to your MLflow server")


def library_uri(cfg: PipelineConfig) -> str:
    if cfg.library.source == "uri":
        if not cfg.library.uri:
            raise ValueError("library.source is 'uri' but library.uri is empty")
        return cfg.library.uri
    return _join(cfg.storage, "library")


def results_uri(cfg: PipelineConfig) -> str:
    return _join(cfg.storage, "results")


def build_library(cfg: PipelineConfig, log: Callable[[str], None]) -> str:
    """Build (or re-validate; identical content is a no-op) the offline library."""
    uri = library_uri(cfg)
    if cfg.library.source == "glyphs":
        from t2v_ray.data.builders.glyphs import build_glyphs

        summary = build_glyphs(uri, preset=cfg.library.preset, seed=cfg.library.seed)
    elif cfg.library.source == "fashion-mnist":
        from t2v_ray.data.builders.fashion_mnist import build_fashion_mnist

        summary = build_fashion_mnist(uri, seed=cfg.library.seed)
    else:
        return uri
    log(summary.table())
    if summary.validation is not None and summary.validation.issues:
        log(summary.validation.table())
    return uri


def pick_expert_tasks(cfg: PipelineConfig, lib_uri: str) -> tuple[str, ...]:
    """``experts.tasks`` if given, else the ``n_experts`` largest taxonomy tasks (ties by id)."""
    if cfg.experts.tasks or cfg.experts.groups:
        return cfg.experts.tasks
    from t2v_ray.data.library import TaskLibrary

    tasks = [t for t in TaskLibrary.open(lib_uri).tasks if t.kind == "taxonomy"]
    tasks.sort(key=lambda t: (-t.n_train, t.task_id))
    return tuple(t.task_id for t in tasks[: cfg.n_experts])


@dataclass(frozen=True)
class StageFailures:
    """Items of one stage that failed: ``failed`` of ``total`` (expert, task or expert × task ids with messages).

    Attributes:
        stage: pipeline stage name.
        total: items the stage attempted or reused.
        failed: ``(item, error message)`` per failed item.
        where: where the stage's error rows are stored.
    """

    stage: str
    total: int
    failed: tuple[tuple[str, str], ...]
    where: str

    @property
    def usable(self) -> bool:
        return self.total > len(self.failed)

    def line(self) -> str:
        """One line: stage, counts, the first error and where the rest are."""
        item, msg = self.failed[0]
        first = " ".join(msg.split())[:300]
        return (
            f"{self.stage}: {len(self.failed)} of {self.total} failed; first: {item}: {first} "
            f"(all errors: {self.where})"
        )


class StageError(RuntimeError):
    """A stage produced nothing usable; the pipeline stopped there."""

    def __init__(self, failures: StageFailures) -> None:
        super().__init__(f"stage {failures.line()}")
        self.failures = failures


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict:
    """Run the configured stages.

    Returns:
        ``{"seconds": {stage: s}, "tables": {protocol: Table 1}, "files": {...}, "failures": [StageFailures]}``;
        ``failures`` lists the stages where some items failed (see :func:`exit_code`).

    Raises:
        StageError: a stage produced nothing usable (e.g. every fine-tuned expert failed).
    """
    from t2v_ray.config import resolve_paths

    cfg = resolve_paths(cfg)  # configs built in code, not by load_config, get absolute paths here too
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; known: {STAGES}")
    lib, res, tracking = library_uri(cfg), results_uri(cfg), _tracking(cfg)
    track = TrackingSettings(uri=tracking, enabled=cfg.grid.tracking.enabled)
    out: dict = {"seconds": {}, "tables": {}, "files": {}, "failures": []}

    def stage(name: str, fn: Callable[[], StageFailures | None]) -> None:
        if name not in cfg.stages:
            return
        log(f"\n=== {name} ===")
        t0 = time.perf_counter()
        failures = fn()
        out["seconds"][name] = time.perf_counter() - t0
        if failures is not None and failures.failed:
            if not failures.usable:
                raise StageError(failures)
            out["failures"].append(failures)
            log(f"[yellow]=== {name} done in {out['seconds'][name]:.1f}s, partial: {failures.line()}[/]")
            return
        log(f"=== {name} done in {out['seconds'][name]:.1f}s ===")

    stage("library", lambda: build_library(cfg, log) and None)

    def experts() -> StageFailures:
        from t2v_ray.distributed.experts import GENERIC_ID, train_experts

        ecfg = replace(cfg.experts, tasks=pick_expert_tasks(cfg, lib), tracking=track)
        from t2v_ray.distributed.experts_cli import print_index

        index, failed = train_experts(ecfg, lib, res)
        print_index(index, f"experts ({res})")
        for eid, msg in failed:
            log(f"[red]expert {eid} failed:[/] {msg}")
        # Usable means at least one fine-tuned expert: with the generic one alone there is nothing to select.
        fine_tuned = len(ecfg.tasks) + len(ecfg.groups)
        bad = tuple((e, m) for e, m in failed if e != GENERIC_ID) if fine_tuned else tuple(failed)
        return StageFailures("experts", fine_tuned or len(failed), bad, _join(res, "experts"))

    stage("experts", experts)

    def embed() -> StageFailures:
        from t2v_ray.distributed.embed import run_embed

        mlflow = (
            replace(cfg.embed.mlflow, tracking_uri=tracking)
            if cfg.embed.mlflow.tracking_uri is None
            else cfg.embed.mlflow
        )
        from t2v_ray.distributed.embed_cli import render_summary

        summary = run_embed(replace(cfg.embed, library=lib, out=res, mlflow=mlflow))
        log(render_summary(summary))
        where = _join(res, "embeddings.parquet") + " (status=error rows)"
        return StageFailures("embed", summary.total, tuple(summary.errors), where)

    stage("embed", embed)

    def grid() -> StageFailures:
        from t2v_ray.distributed.grid import run_grid
        from t2v_ray.distributed.grid_cli import print_summary, summarize

        t0 = time.perf_counter()
        table = run_grid(replace(cfg.grid, tracking=track), lib, res, res)
        summary = summarize(table, time.perf_counter() - t0)
        print_summary(summary, res)
        bad = tuple((f"{e} × {t}", f"{status}: {msg}") for e, t, status, msg in summary["bad"])
        return StageFailures("grid", summary["pairs"], bad, _join(res, "grid.parquet") + " (status column)")

    stage("grid", grid)

    def select() -> None:
        from t2v_ray.report.stage import SelectConfig, output_uri, run_select

        for protocol in cfg.protocols:
            scfg = SelectConfig(
                results=res,
                library=lib,
                protocol=protocol,
                n_boot=cfg.n_boot,
                tracking_uri=tracking,
                probe=cfg.embed.probe,
            )
            key = _select_key(scfg, res)
            cached = _cached_select(output_uri(scfg), key)
            if cached is not None:
                log(f"select ({protocol}): inputs unchanged since the last evaluation, reusing its report")
                out["tables"][protocol], out["files"][protocol] = cached
                continue
            table, _, written = run_select(scfg)
            _store_select_key(output_uri(scfg), key)
            out["tables"][protocol] = table
            out["files"][protocol] = written

    stage("select", select)
    return out


def exit_code(cfg: PipelineConfig, result: dict) -> int:
    """0 when every item of every stage succeeded (or ``allow_partial``), else 2 (partial failures)."""
    return 2 if result["failures"] and not cfg.allow_partial else 0


_SELECT_KEY = "inputs.sha256"


def _select_key(scfg, res: str) -> str:
    """Hash of the select config and the bytes of its three inputs: equal key, equal Table 1."""
    import hashlib
    import json

    from t2v_ray.config import to_dict
    from t2v_ray.data.storage import exists, read_bytes

    h = hashlib.sha256(json.dumps(to_dict(scfg), sort_keys=True).encode())
    for name in ("embeddings.parquet", "grid.parquet", "experts.parquet"):
        uri = _join(res, name)
        h.update(read_bytes(uri) if exists(uri) else b"-")
    return h.hexdigest()


def _cached_select(out_uri: str, key: str):
    """(table, files) of a previous evaluation with the same inputs, else None."""
    import io

    import pandas as pd

    from t2v_ray.data.storage import exists, read_bytes

    key_uri, table_uri = _join(out_uri, _SELECT_KEY), _join(out_uri, "table1.csv")
    if not (exists(key_uri) and exists(table_uri)) or read_bytes(key_uri).decode() != key:
        return None
    table = pd.read_csv(io.BytesIO(read_bytes(table_uri)))
    return table, {"table1.csv": table_uri, "table1.md": _join(out_uri, "table1.md")}


def _store_select_key(out_uri: str, key: str) -> None:
    from t2v_ray.data.storage import write_bytes_atomic

    write_bytes_atomic(_join(out_uri, _SELECT_KEY), key.encode())
