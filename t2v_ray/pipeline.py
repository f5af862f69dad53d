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
from typing import Literal

from t2v_ray.config import Uri
from t2v_ray.stages.embed import EmbedJobConfig
from t2v_ray.stages.experts import ExpertsConfig
from t2v_ray.stages.grid import GridConfig
from t2v_ray.stages.library import LibraryConfig

Stage = Literal["library", "experts", "embed", "grid", "select"]
STAGES: tuple[Stage, ...] = ("library", "experts", "embed", "grid", "select")


@dataclass(frozen=True)
class PipelineConfig:
    """One experiment. Sections mirror the stage commands (``t2v embed``, ``t2v experts train``, ...).

    Attributes:
        storage: root folder or ``s3://`` prefix for the library and all results.
        tracking_uri: MLflow URI for every stage (None: ``MLFLOW_TRACKING_URI`` or ``<storage>/mlflow.db``).
        library: the task library.
        n_experts: when ``experts.tasks`` is empty, train experts on this many tasks, picked by ``expert_pick``.
        expert_pick: ``largest``: the largest taxonomy tasks; ``spread``: the largest task of each family
            (taxonomy prefix, e.g. a script family or a font-attribute group) in turn, so experts cover the
            library (:func:`~t2v_ray.stages.experts.spread_expert_tasks`).
        experts: expert training (probe architecture, recipe).
        embed: the embedding job (probe, estimator, actors). ``library``/``out`` are filled in.
        grid: the expert × task classifier grid.
        protocols: selection protocols to evaluate (``taxonomy``, ``mixed``).
        n_boot: bootstrap resamples for the Table 1 intervals.
        model2vec_folds: MODEL2VEC's out-of-fold fits: 0 = leave-one-out (the paper), K = K-fold cross-fitting.
        stages: which stages to run, in order.
        allow_partial: exit 0 although some experts, tasks or pairs failed (a stage that produced nothing
            usable always stops the pipeline).
    """

    storage: Uri = "t2v-data"
    tracking_uri: Uri | None = None
    library: LibraryConfig = field(default_factory=LibraryConfig)
    n_experts: int = 4
    expert_pick: Literal["largest", "spread"] = "largest"
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    embed: EmbedJobConfig = field(default_factory=EmbedJobConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    protocols: tuple[Literal["taxonomy", "mixed"], ...] = ("taxonomy", "mixed")
    n_boot: int = 1000
    model2vec_folds: int = 0
    stages: tuple[Stage, ...] = STAGES
    allow_partial: bool = False


def _join(root: str, *parts: str) -> str:
    from t2v_ray.data.storage import join

    return join(root, *parts)


def tracking_uri(cfg: PipelineConfig) -> str:
    """The MLflow URI of every stage: ``tracking_uri``, ``MLFLOW_TRACKING_URI`` or ``<storage>/mlflow.db``."""
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


def library_config(cfg: PipelineConfig) -> LibraryConfig:
    """The library section with its build target under ``storage``."""
    from t2v_ray.results.layout import LIBRARY_DIR

    return replace(cfg.library, out=cfg.library.out or _join(cfg.storage, LIBRARY_DIR))


def library_uri(cfg: PipelineConfig) -> str:
    return library_config(cfg).location()


def results_uri(cfg: PipelineConfig) -> str:
    from t2v_ray.results.layout import RESULTS_DIR

    return _join(cfg.storage, RESULTS_DIR)


def pick_expert_tasks(cfg: PipelineConfig, lib_uri: str) -> tuple[str, ...]:
    """``experts.tasks`` if given, else ``n_experts`` tasks picked by ``expert_pick`` (ties by id)."""
    if cfg.experts.tasks or cfg.experts.groups:
        return cfg.experts.tasks
    from t2v_ray.stages.experts import largest_taxonomy_tasks, spread_expert_tasks

    pick = spread_expert_tasks if cfg.expert_pick == "spread" else largest_taxonomy_tasks
    return pick(lib_uri, cfg.n_experts)


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


def stage_configs(cfg: PipelineConfig) -> dict[str, object]:
    """Each stage's config as the pipeline runs it: locations under ``storage``, one tracking URI.

    The select configs (one per protocol) are under ``"select"``; the experts' tasks are picked when the
    experts stage runs (they may depend on the library built just before).
    """
    from t2v_ray.stages.select import SelectConfig

    lib, res, uri = library_uri(cfg), results_uri(cfg), tracking_uri(cfg)

    def tracked(settings):
        return settings if settings.uri else replace(settings, uri=uri)

    selects = [
        SelectConfig(
            results=res,
            library=lib,
            protocol=p,
            n_boot=cfg.n_boot,
            tracking_uri=uri,
            probe=cfg.embed.probe,
            model2vec_folds=cfg.model2vec_folds,
        )
        for p in cfg.protocols
    ]
    return {
        "library": library_config(cfg),
        "experts": replace(cfg.experts, library=lib, out=res, tracking=tracked(cfg.experts.tracking)),
        "embed": replace(cfg.embed, library=lib, out=res, tracking=tracked(cfg.embed.tracking)),
        "grid": replace(
            cfg.grid, library=lib, expert_store=res, out=res, tracking=tracked(cfg.grid.tracking)
        ),
        "select": selects,
    }


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` returns (also readable as a dict: ``result["tables"]``)."""

    seconds: dict[str, float] = field(default_factory=dict)
    tables: dict[str, object] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[StageFailures] = field(default_factory=list)

    def __getitem__(self, key: str):
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)


def run_pipeline(cfg: PipelineConfig, log: Callable[[object], None] | None = None) -> PipelineResult:
    """Run the configured stages; ``log`` receives status lines and each stage's summary table (rich
    renderables; default: a rich console on stdout).

    Returns:
        Stage seconds, Table 1 per protocol, the report files per protocol, and the stages where some items
        failed (see :func:`exit_code`).

    Raises:
        StageError: a stage produced nothing usable (e.g. every fine-tuned expert failed).
    """
    from t2v_ray.config import resolve_paths

    if log is None:
        from rich.console import Console

        log = Console().print
    cfg = resolve_paths(cfg)  # configs built in code, not by load_config, get absolute paths here too
    unknown = set(cfg.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; known: {STAGES}")
    configs = stage_configs(cfg)
    out = PipelineResult()
    record = _run_record(cfg)
    runners = {
        "library": lambda: _library(configs["library"], log),
        "experts": lambda: _experts(cfg, configs["experts"], log),
        "embed": lambda: _embed(configs["embed"], log),
        "grid": lambda: _grid(configs["grid"], log),
        "select": lambda: _select(configs["select"], out, log),
    }
    for name in STAGES:
        if name not in cfg.stages:
            continue
        log(f"\n=== {name} ===")
        t0 = time.perf_counter()
        failures = runners[name]()
        out.seconds[name] = time.perf_counter() - t0
        record(out.seconds)
        if failures is not None and failures.failed:
            if not failures.usable:
                raise StageError(failures)
            out.failures.append(failures)
            log(f"[yellow]=== {name} done in {out.seconds[name]:.1f}s, partial: {failures.line()}[/]")
            continue
        log(f"=== {name} done in {out.seconds[name]:.1f}s ===")
    return out


RUNS_DIR = "pipeline_runs"


def _run_record(cfg: PipelineConfig) -> Callable[[dict[str, float]], None]:
    """A writer of ``<results>/pipeline_runs/<UTC start>.json``: this run's stage seconds, rewritten after each
    stage (``tests/benchmarks/bench_pipeline.py`` reads it; a cached rerun gets its own file)."""
    import json
    import os
    import socket
    from datetime import UTC, datetime

    from t2v_ray.config import to_dict
    from t2v_ray.data.storage import join, write_bytes_atomic

    started = datetime.now(UTC)
    uri = join(results_uri(cfg), RUNS_DIR, started.strftime("%Y%m%dT%H%M%S.%fZ") + ".json")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {"started_at": started.isoformat(), "host": socket.gethostname(), "cpus": os.cpu_count()}

    def write(seconds: dict[str, float]) -> None:
        doc = {**meta, "load_at_start": load, "seconds": seconds, "config": to_dict(cfg)}
        try:
            write_bytes_atomic(uri, json.dumps(doc, indent=1).encode())
        except OSError as err:  # bookkeeping only: never fail a finished stage over it
            import logging

            logging.getLogger(__name__).warning("cannot write the run record %s: %s", uri, err)

    return write


def _library(lcfg: LibraryConfig, log: Callable[[object], None]) -> None:
    from t2v_ray.stages.library import run_library

    summary = run_library(lcfg)
    if summary.build is not None:
        log(summary.table())


def _experts(cfg: PipelineConfig, ecfg: ExpertsConfig, log: Callable[[object], None]) -> StageFailures:
    from t2v_ray.stages.experts import run_experts

    summary = run_experts(replace(ecfg, tasks=pick_expert_tasks(cfg, ecfg.library)))
    log(summary.table(f"experts ({ecfg.out})"))
    for eid, msg in summary.errors:
        log(f"[red]expert {eid} failed:[/] {msg}")
    # Usable means at least one fine-tuned expert: with the generic one alone there is nothing to select.
    bad = summary.failures()
    return StageFailures(
        "experts", summary.fine_tuned or len(summary.errors), bad, _join(ecfg.out, "experts")
    )


def _embed(ecfg: EmbedJobConfig, log: Callable[[object], None]) -> StageFailures:
    from t2v_ray.results.layout import EMBEDDINGS_FILE
    from t2v_ray.stages.embed import run_embed

    summary = run_embed(ecfg)
    log(summary.table())
    where = _join(ecfg.out, EMBEDDINGS_FILE) + " (status=error rows)"
    return StageFailures("embed", summary.total, tuple(summary.errors), where)


def _grid(gcfg: GridConfig, log: Callable[[object], None]) -> StageFailures:
    from t2v_ray.results.layout import GRID_FILE
    from t2v_ray.stages.grid import run_grid

    summary = run_grid(gcfg)
    log(summary.table())
    bad = tuple((f"{e} × {t}", f"{status}: {msg}") for e, t, status, msg in summary.bad)
    return StageFailures("grid", summary.pairs, bad, _join(gcfg.out, GRID_FILE) + " (status column)")


def _select(configs: list, out: PipelineResult, log: Callable[[object], None]) -> None:
    from t2v_ray.stages.select import cached_select, input_key, run_select, store_key

    for scfg in configs:
        key = input_key(scfg)
        summary = cached_select(scfg, key)
        if summary is not None:
            log(f"select ({scfg.protocol}): inputs unchanged since the last evaluation, reusing its report")
        else:
            summary = run_select(scfg)
            store_key(scfg, key)
        out.tables[scfg.protocol], out.files[scfg.protocol] = summary.table1, summary.written


def exit_code(cfg: PipelineConfig, result: PipelineResult) -> int:
    """0 when every item of every stage succeeded (or ``allow_partial``), else 2 (partial failures)."""
    return 2 if result["failures"] and not cfg.allow_partial else 0
