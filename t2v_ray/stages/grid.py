"""The grid stage (``t2v grid run``): the expert×task classifier grid on Ray Tune (paper §4, supplement §4.1).

The Tune plumbing it shares with expert training lives in :mod:`t2v_ray.distributed.tune_utils`; the pair records
and ``grid.parquet`` in :mod:`t2v_ray.results.grid`, the feature cache in :mod:`t2v_ray.results.features`.

One Tune trial per expert and chunk of ``tasks_per_trial`` tasks (:func:`run_chunk`): the trial loads the expert
once and runs :func:`run_pair` for each of its tasks (one feature pass, one linear head each; the paper's
classifiers are linear probes on frozen features, so the feature pass dominates and Tune's per-trial overhead,
~1 s here, would otherwise rival it). :func:`run_grid` drives. The ground truth lands in ``<out>/grid.parquet``
(DESIGN.md, plus transferability columns) and in one MLflow run per
pair with ``expert_id`` and ``task_id`` as separate params and tags.

Fault tolerance and resumption. Every pair writes its own result record to ``<out>/grid/pairs/`` the moment it
finishes, so the storage URI, not Tune's state, is the source of truth: a rerun (with or without ``resume``)
never recomputes a pair already ``ok`` under the same classifier config, and a pair that was killed half-way
simply runs again. Tune's experiment state lives under ``tune.storage_path`` (default: ``<out>/tune`` when
``out`` is a local folder, else ``./t2v-data/tune``; an ``s3://`` path works too, through the same pyarrow
filesystem as the rest of the storage). ``resume=True`` restores the latest Tune experiment of this
(library, experts, out) triple with ``Tuner.restore``; without it a fresh Tune experiment covers the pairs still
missing. Errors a pair cannot recover from (broken task images, a missing expert file) become ``status="error"``
rows with a message; any other exception is retried by Tune (``tune.max_failures``) and then recorded the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from t2v_ray.config import Uri, check_ranges, ranged, to_dict
from t2v_ray.data import storage
from t2v_ray.distributed.tune_utils import TuneSettings, state_key
from t2v_ray.results.grid import collect_grid, read_pair, read_pairs, write_pair
from t2v_ray.results.layout import GRID_CONFIG_FILE, GRID_FILE
from t2v_ray.results.store import STATUS_ERROR, STATUS_OK
from t2v_ray.track.settings import TrackingSettings
from t2v_ray.train.settings import ClassifierConfig, FeatureSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridConfig:
    """The classifier grid (``t2v grid run``).

    Attributes:
        experts: expert ids to use (empty: every expert in the experts index).
        tasks: task ids to use (empty: every task of the library).
        classifier: linear-classifier recipe (paper defaults).
        features: the feature pass.
        transfer: also score LogME, LEEP, NCE and H-score per pair from the cached arrays.
        tune: scheduling, retries, Tune state.
        tracking: MLflow.
        library: the task library (the pipeline fills it in).
        expert_store: storage root holding ``experts/`` (``t2v experts train --out``; empty: ``out``).
        out: storage root for features, pair records, ``grid.parquet`` (and Tune state when local).
        resume: restore the latest Tune experiment of this grid first (pairs already ``ok`` never rerun anyway).
        tasks_per_trial: tasks one Tune trial runs for its expert (0: all of them). Smaller chunks spread one
            expert over more workers and lose less to a killed trial; larger ones pay Tune's overhead less often.
    """

    experts: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    transfer: bool = True
    tune: TuneSettings = field(default_factory=TuneSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    library: Uri = ""
    expert_store: Uri = ""
    out: Uri = ""
    resume: bool = False
    tasks_per_trial: int = ranged(32, 0)

    def result_hash(self) -> str:
        """Hash of what determines a pair's result; selection, scheduling and tracking settings do not."""
        keep = {
            "classifier": to_dict(self.classifier),
            "probs": self.features.source_probs,
            "transfer": self.transfer,
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- one pair (trial)

# Errors that no retry can fix: recorded as the pair's result at once instead of burning Tune retries.
_PERMANENT = ("LibraryError", "TaskDataError", "ImageDecodeError", "ExpertError")


@dataclass
class GridContext:
    """What every grid trial needs; built on the driver and shipped once through the object store."""

    cfg: GridConfig
    library_uri: str
    experts_uri: str
    out_uri: str
    tracker: Any
    parent_run_id: str | None
    env: dict

    @property
    def grid_key(self) -> str:
        """Identifies this grid (library, experts, out) in MLflow tags: reruns into another ``out`` are distinct."""
        return state_key(self.library_uri, self.experts_uri, self.out_uri)


_PROCESS_CACHE: dict[str, Any] = {}


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    """One library and one expert kept per trial process: reused actors run an expert's pairs back to back."""
    slot = key[0]
    hit = _PROCESS_CACHE.get(slot)
    if hit is None or hit[0] != key:
        _PROCESS_CACHE[slot] = (key, build())
    return _PROCESS_CACHE[slot][1]


def _compute_pair(expert_id: str, task_id: str, ctx: GridContext) -> dict:
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.results.experts import ExpertStore
    from t2v_ray.results.features import get_or_extract
    from t2v_ray.train.classifier import fit_classifier
    from t2v_ray.train.extract import extract_pair
    from t2v_ray.train.scores import transfer_scores

    lib = _cached(("library", ctx.library_uri), lambda: TaskLibrary.open(ctx.library_uri))
    spec = lib.task(task_id)
    record, probe = _cached(
        ("expert", ctx.experts_uri, expert_id), lambda: ExpertStore(ctx.experts_uri).load_probe(expert_id)
    )
    t0 = time.perf_counter()
    pf, cached, furi = get_or_extract(
        ctx.out_uri, expert_id, record.state_hash, spec.content_hash,
        lambda: extract_pair(lib, task_id, probe, ctx.cfg.features),
    )  # fmt: skip
    extract_seconds = time.perf_counter() - t0
    clf = fit_classifier(pf.train, pf.test, spec.num_classes, ctx.cfg.classifier)
    row = {
        "test_error": clf.test_error, "test_error_se": clf.test_error_se, "train_error": clf.train_error,
        "epochs": clf.epochs, "n_train": len(pf.train), "n_test": clf.n_test, "n_classes": spec.num_classes,
        "feature_dim": pf.train.dim, "features_cached": cached, "extract_seconds": extract_seconds,
        "head_seconds": clf.seconds, "features_uri": furi, "expert_hash": record.state_hash,
        "task_hash": spec.content_hash, "probe": record.probe, "is_source": task_id in record.source_tasks,
    }  # fmt: skip
    t0 = time.perf_counter()
    scores = transfer_scores(pf.train) if ctx.cfg.transfer else {}
    return {**row, **scores, "score_seconds": time.perf_counter() - t0}


def run_pair(expert_id: str, task_id: str, ctx: GridContext) -> dict:
    """Compute one pair (unless already ``ok`` under this config), log it to MLflow, record it; returns the row.

    Permanent errors (broken task data, missing expert) give a ``status="error"`` row; anything else raises so
    that Tune retries the trial.
    """
    import uuid

    rhash = ctx.cfg.result_hash()
    old = read_pair(ctx.out_uri, expert_id, task_id)
    if old is not None and old.get("status") == STATUS_OK and old.get("config_hash") == rhash:
        return {**old, "skipped": True}
    start = time.perf_counter()
    row: dict[str, Any] = {"expert_id": expert_id, "task_id": task_id, "config_hash": rhash}
    try:
        row.update(_compute_pair(expert_id, task_id, ctx), status=STATUS_OK)
    except Exception as err:
        if not any(c.__name__ in _PERMANENT for c in type(err).__mro__):
            raise
        row.update(status=STATUS_ERROR, error=f"{type(err).__name__}: {err}"[:2000])
    row.update(
        seconds=time.perf_counter() - start,
        attempt=uuid.uuid4().hex,
        finished_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    row["mlflow_run_id"] = _log_pair(ctx, row)
    write_pair(ctx.out_uri, row)
    return row


def _log_pair(ctx: GridContext, row: dict) -> str | None:
    """One MLflow run per pair; a FINISHED run of the same pair and config (a killed attempt's) is reused."""
    import math

    from t2v_ray.track import run_name, run_tags

    tracker = ctx.tracker
    if tracker is None or not tracker.enabled or ctx.parent_run_id is None:
        return None
    ids = {"expert_id": row["expert_id"], "task_id": row["task_id"]}
    tags = run_tags(
        "grid",
        **ids,
        probe=row.get("probe"),
        grid=ctx.grid_key,
        config_hash=row["config_hash"],
        status=row["status"],
    )
    name = run_name("grid", probe=row.get("probe"), **ids)
    params = {**ids, "classifier": to_dict(ctx.cfg.classifier)}
    if row["status"] != STATUS_OK:
        run_id = tracker.start_run(
            name, {**tags, "error": row.get("error", "")}, parent_run_id=ctx.parent_run_id
        )
        tracker.log_params_flat(run_id, params)
        tracker.end_run(run_id, "FAILED")
        return run_id
    query = "attributes.status = 'FINISHED' and " + " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    found = tracker.find_runs(query, max_results=1)
    if found:
        return found[0].info.run_id
    metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return tracker.log_child(
        ctx.parent_run_id, name, params, {k: v for k, v in metrics.items() if math.isfinite(v)}, tags
    )


def run_chunk(expert_id: str, task_ids: list[str], ctx: GridContext) -> list[dict]:
    """:func:`run_pair` for each task of the chunk, the expert loaded once (the process cache keeps it).

    A pair that raises a retryable error does not stop the others; the first such error is raised after the
    chunk so that Tune retries the trial, whose finished pairs then return at once from their records.
    """
    rows, first_error = [], None
    for task_id in task_ids:
        try:
            rows.append(run_pair(expert_id, task_id, ctx))
        except Exception as err:
            log.warning("grid pair %s x %s failed: %s", expert_id, task_id, err)
            first_error = first_error or err
    if first_error is not None:
        raise first_error
    return rows


def grid_trial(config: dict, ctx: GridContext) -> None:
    """Tune trainable: one expert and a chunk of tasks from ``config["item"]``."""
    from ray import tune

    from t2v_ray.distributed.tune_utils import apply_trial_env

    apply_trial_env(ctx.env, ctx.cfg.tune.cpus_per_trial)
    item = config["item"]
    rows = run_chunk(item["expert_id"], list(item["task_ids"]), ctx)
    errors = [r["test_error"] for r in rows if r.get("test_error") is not None]
    tune.report(
        {
            "pairs": len(rows),
            "ok": sum(r["status"] == STATUS_OK for r in rows),
            "skipped": sum(bool(r.get("skipped")) for r in rows),
            "mean_test_error": float(sum(errors) / len(errors)) if errors else float("nan"),
        }
    )


# ------------------------------------------------------------------------------------------------ the driver


def plan_pairs(cfg: GridConfig, lib: Any, experts_uri: str) -> list[tuple[str, str]]:
    """All (expert, task) pairs of the grid, expert-major (so a reused actor keeps its loaded expert).

    Unknown task ids raise (a config error); unknown or broken experts become error rows when their pairs run.
    """
    from t2v_ray.results.experts import ExpertStore

    experts = list(cfg.experts) or ExpertStore(experts_uri).expert_ids()
    if not experts:
        raise ValueError(f"no experts found under {experts_uri} (run `t2v experts train` first)")
    tasks = list(cfg.tasks) or [t.task_id for t in lib.tasks]
    for t in tasks:
        lib.task(t)
    return [(e, t) for e in experts for t in tasks]


def chunk_items(pairs: list[tuple[str, str]], tasks_per_trial: int) -> list[dict]:
    """Trial items ``{"expert_id", "task_ids"}``: each expert's pairs in order, ``tasks_per_trial`` at a time."""
    by_expert: dict[str, list[str]] = {}
    for e, t in pairs:
        by_expert.setdefault(e, []).append(t)
    items = []
    for e, tasks in by_expert.items():
        size = tasks_per_trial if tasks_per_trial > 0 else len(tasks)
        items += [{"expert_id": e, "task_ids": tasks[i : i + size]} for i in range(0, len(tasks), size)]
    return items


def record_failures(ctx: GridContext, failures: list[tuple[dict, str]]) -> None:
    """Trials that failed past their retries still get a row per pair saying why (unless it got done meanwhile)."""
    for item, message in failures:
        e = item.get("expert_id")
        tasks = item.get("task_ids") or ([item["task_id"]] if item.get("task_id") else [])
        for t in tasks if e else []:
            old = read_pair(ctx.out_uri, e, t)
            if old is None or old.get("status") != STATUS_OK:
                row = {"expert_id": e, "task_id": t, "status": STATUS_ERROR, "error": message}
                write_pair(ctx.out_uri, {**row, "config_hash": ctx.cfg.result_hash()})


@dataclass
class GridSummary:
    """What a run of the grid stage did: ``grid.parquet`` as written, counts per status, the non-ok pairs.

    Attributes:
        out: storage root of the grid.
        grid: the ``grid.parquet`` table.
        seconds: wall time of the run.
    """

    out: str
    grid: Any
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Pairs per status."""
        counts: dict[str, int] = {}
        for status in self.grid.column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
        return counts

    @property
    def pairs(self) -> int:
        return self.grid.num_rows

    @property
    def pairs_per_minute(self) -> float:
        return 60 * self.pairs / self.seconds if self.seconds > 0 else float("nan")

    @property
    def bad(self) -> list[tuple[str, str, str, str]]:
        """``(expert_id, task_id, status, error)`` of every pair that is not ``ok``."""
        rows = self.grid.select(["expert_id", "task_id", "status", "error"]).to_pylist()
        return [
            (r["expert_id"], r["task_id"], r["status"], r["error"] or "")
            for r in rows
            if r["status"] != STATUS_OK
        ]

    def table(self) -> Any:
        """A rich table: counts per status, time, pairs per minute and the first 50 non-ok pairs."""
        from rich.table import Table

        table = Table(title=f"t2v grid -> {self.out}")
        table.add_column("", style="bold")
        table.add_column("value", justify="right")
        for status, n in sorted(self.counts.items()):
            table.add_row(status, str(n))
        table.add_row("pairs", str(self.pairs))
        table.add_row("wall time", f"{self.seconds:.1f} s")
        table.add_row("pairs / minute", f"{self.pairs_per_minute:.1f}")
        for e, t, status, message in self.bad[:50]:
            table.add_row(f"[red]{status}[/red] {e} × {t}", message[:200])
        return table


def _run_trials(ctx: GridContext, todo: list[tuple[str, str]], pairs: list[tuple[str, str]]) -> None:
    """The pairs of ``todo`` as Tune trials (expert x task chunks); a resumed experiment's unplanned pairs in a
    fresh one."""
    from ray import tune

    from t2v_ray.distributed.ray_utils import init_ray
    from t2v_ray.distributed.tune_utils import default_state_root, run_trials, trial_errors

    cfg, out_uri = ctx.cfg, ctx.out_uri
    init_ray(cfg.tune.ray_address)
    trainable = tune.with_parameters(grid_trial, ctx=ctx)
    root, prefix = default_state_root(out_uri, cfg.tune), f"grid-{ctx.grid_key}-"
    items = chunk_items(todo, cfg.tasks_per_trial)
    record_failures(ctx, trial_errors(run_trials(trainable, items, cfg.tune, root, prefix, cfg.resume)))
    # A restored experiment only knows the pairs of its own run: newly planned ones need a fresh one.
    recorded = read_pairs(out_uri, pairs)
    left = [p for p in todo if p not in recorded]
    if cfg.resume and left:
        items = chunk_items(left, cfg.tasks_per_trial)
        record_failures(ctx, trial_errors(run_trials(trainable, items, cfg.tune, root, prefix)))


def run_grid(cfg: GridConfig) -> GridSummary:
    """Train and evaluate the linear classifier of every (expert, task) pair on Ray Tune; write ``grid.parquet``.

    Args:
        cfg: the grid config, with ``library``, ``out`` and (unless the experts live in ``out``) ``expert_store``.
    """
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.distributed.ray_utils import worker_env
    from t2v_ray.track import run_tags, stage_tracker

    if not cfg.library or not cfg.out:
        raise ValueError("both library and out must be set (e.g. --library URI --out URI)")
    check_ranges(cfg, "grid")
    start = time.perf_counter()
    library_uri, out_uri = cfg.library, cfg.out
    experts_uri = cfg.expert_store or out_uri
    pairs = plan_pairs(cfg, TaskLibrary.open(library_uri), experts_uri)
    rhash = cfg.result_hash()
    done = {
        p
        for p, r in read_pairs(out_uri, pairs).items()
        if r["status"] == STATUS_OK and r.get("config_hash") == rhash
    }
    todo = [p for p in pairs if p not in done]
    storage.write_bytes_atomic(
        storage.join(out_uri, GRID_CONFIG_FILE), json.dumps(to_dict(cfg), indent=1).encode()
    )
    tracker = stage_tracker(cfg.tracking, library_uri, "grid")
    with tracker.parent_run("grid", params=to_dict(cfg), tags=run_tags("grid", n_pairs=len(pairs))) as parent:
        if todo:
            ctx = GridContext(cfg, library_uri, experts_uri, out_uri, tracker, parent, worker_env())
            _run_trials(ctx, todo, pairs)
        table = collect_grid(out_uri, pairs)
        storage.write_parquet_atomic(table, storage.join(out_uri, GRID_FILE))
        tracker.log_artifact_bytes(parent, GRID_FILE, storage.parquet_bytes(table))
    return GridSummary(out_uri, table, time.perf_counter() - start)
