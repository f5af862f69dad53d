"""The experts stage (``t2v experts train``): fine-tune probe networks on a task or a group of tasks on Ray Tune.

One Tune trial per expert (:func:`run_experts`); each stores its weights and record through
:class:`~t2v_ray.results.experts.ExpertStore`, and the driver rewrites ``experts.parquet`` at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from t2v_ray.config import Uri, Weights, to_dict
from t2v_ray.data import storage
from t2v_ray.distributed.tune_utils import TuneSettings
from t2v_ray.results.experts import GENERIC_ID, ExpertRecord, ExpertStore, expert_id_for
from t2v_ray.results.layout import EXPERT_RECORD_FILE, EXPERT_WEIGHTS_FILE
from t2v_ray.track.settings import TrackingSettings
from t2v_ray.train.settings import ExpertTrainConfig


@dataclass(frozen=True)
class ExpertsConfig:
    """``t2v experts train``.

    Attributes:
        probe: architecture (``get_probe`` name); paper: resnet34.
        weights: pre-trained weights to start from (``default``: the probe's ImageNet weights; None: random init).
        input_size: image side in pixels (None: the probe's default).
        tasks: one expert per listed task (expert id = the task id made folder-safe).
        groups: expert id -> tasks merged into one training task (labels kept apart per task).
        generic: also store the un-tuned probe as expert ``generic``.
        device: ``auto`` (CUDA when the trial has a GPU), ``cpu`` or ``cuda``.
        train: the fine-tuning recipe (paper values by default).
        tune: scheduling and retries; tracking: MLflow.
        library: the task library (the pipeline fills it in).
        out: storage root; experts go to ``<out>/experts/<expert_id>/`` and the index to ``<out>/experts.parquet``.
        resume: restore the interrupted Tune run first.
    """

    probe: str = "resnet34"
    weights: Weights | None = "default"
    input_size: int | None = None
    tasks: tuple[str, ...] = ()
    groups: dict[str, list[str]] = field(default_factory=dict)
    generic: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    train: ExpertTrainConfig = field(default_factory=ExpertTrainConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    library: Uri = ""
    out: Uri = ""
    resume: bool = False


@dataclass
class ExpertsSummary:
    """What a run of the experts stage did.

    Attributes:
        out: storage root of the experts.
        index: ``experts.parquet`` as rewritten at the end of the run.
        errors: ``(expert_id, message)`` of experts that failed after their retries.
        fine_tuned: experts the config asked to fine-tune (not counting the generic one).
        seconds: wall time of the run.
    """

    out: str
    index: Any
    errors: list[tuple[str, str]] = field(default_factory=list)
    fine_tuned: int = 0
    seconds: float = 0.0

    def table(self, title: str | None = None) -> Any:
        """A rich table of ``experts.parquet`` (id, architecture, source tasks, test error)."""
        from rich.table import Table

        table = Table(title=title or f"experts -> {self.out} ({self.seconds:.0f} s)")
        for col in ("expert_id", "probe", "source tasks", "test error"):
            table.add_column(col)
        for r in self.index.to_pylist():
            err = r["test_error"]
            table.add_row(
                r["expert_id"],
                r["probe"],
                ",".join(r["source_tasks"]) or "-",
                "-" if err is None else f"{err:.3f}",
            )
        return table

    def failures(self) -> tuple[tuple[str, str], ...]:
        """Failed experts that matter: with fine-tuned experts planned, the generic one alone is no result."""
        if self.fine_tuned:
            return tuple((e, m) for e, m in self.errors if e != GENERIC_ID)
        return tuple(self.errors)


def largest_taxonomy_tasks(library_uri: str, n: int) -> tuple[str, ...]:
    """The ``n`` taxonomy tasks of the library with the most training images (ties by id): default expert tasks."""
    from t2v_ray.data.library import TaskLibrary

    tasks = [t for t in TaskLibrary.open(library_uri).tasks if t.kind == "taxonomy"]
    tasks.sort(key=lambda t: (-t.n_train, t.task_id))
    return tuple(t.task_id for t in tasks[:n])


def spread_expert_tasks(library_uri: str, n: int) -> tuple[str, ...]:
    """``n`` expert tasks spread over the library's families, the largest task of each family first.

    A family is the first two levels of a task's taxonomy (``glyphs/European``, ``glyphs-attr/Latin``): script
    families, font-attribute groups, and so on. Families take turns, the one whose next task is largest first,
    so ``n`` >= the number of families gives every family an expert before any family gets a second. Taxonomy
    and attribute tasks qualify; ties break by id.
    """
    from t2v_ray.data.library import TaskLibrary

    families: dict[tuple[str, ...], list] = {}
    for t in TaskLibrary.open(library_uri).tasks:
        if t.kind in ("taxonomy", "attribute"):
            families.setdefault(tuple(t.taxonomy[:2]), []).append(t)
    queues = [sorted(ts, key=lambda t: (-t.n_train, t.task_id)) for ts in families.values()]
    picked: list[str] = []
    while len(picked) < n and any(queues):
        round_ = sorted((q.pop(0) for q in queues if q), key=lambda t: (-t.n_train, t.task_id))
        picked += [t.task_id for t in round_[: n - len(picked)]]
    return tuple(picked)


def expert_plan(cfg: ExpertsConfig, known_tasks: set[str]) -> list[dict]:
    """One ``{"expert_id", "tasks"}`` item per expert to build (generic first); unknown task ids raise."""
    items = [{"expert_id": GENERIC_ID, "tasks": []}] if cfg.generic else []
    items += [{"expert_id": expert_id_for(t), "tasks": [t]} for t in cfg.tasks]
    items += [{"expert_id": expert_id_for(g), "tasks": list(ts)} for g, ts in cfg.groups.items()]
    unknown = sorted({t for it in items for t in it["tasks"]} - known_tasks)
    if unknown:
        raise ValueError(f"unknown task id(s) {unknown}")
    ids = [it["expert_id"] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate expert ids in {ids}")
    return items


def _is_stored(store: ExpertStore, cfg: ExpertsConfig, item: dict) -> bool:
    """The expert exists with the config hash this plan would give it (``build_expert`` would skip it)."""
    eid = item["expert_id"]
    if not (storage.exists(store.record_uri(eid)) and storage.exists(store.weights_uri(eid))):
        return False
    return store.load_record(eid).config_hash == expert_config_hash(cfg, item["tasks"])


def expert_config_hash(cfg: ExpertsConfig, tasks: list[str]) -> str:
    """What makes an expert: architecture, start weights, input size, source tasks and (if trained) the recipe."""
    keep = {
        "probe": cfg.probe,
        "weights": cfg.weights,
        "input_size": cfg.input_size,
        "tasks": list(tasks),
        "train": to_dict(cfg.train) if tasks else None,
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def build_expert(
    expert_id: str,
    tasks: list[str],
    cfg: ExpertsConfig,
    library_uri: str,
    out_uri: str,
    tracker: Any = None,
    parent_run_id: str | None = None,
) -> tuple[ExpertRecord, bool]:
    """Train (or, with no tasks, just store) one expert; skip it if an identical one is already stored.

    Returns:
        ``(record, skipped)``.
    """
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.probes import get_probe
    from t2v_ray.train.finetune import full_state_dict

    store, chash = ExpertStore(out_uri), expert_config_hash(cfg, tasks)
    if storage.exists(store.record_uri(expert_id)) and storage.exists(store.weights_uri(expert_id)):
        old = store.load_record(expert_id)
        if old.config_hash == chash:
            return old, True
    lib = TaskLibrary.open(library_uri)
    probe = get_probe(cfg.probe, weights=cfg.weights, input_size=cfg.input_size)
    head, classes, metrics, curves = probe.source_head, [], {}, {}
    if tasks:
        head, classes, metrics, curves = _fine_tune(probe, lib, tasks, cfg)
    probe.to("cpu")
    record = ExpertRecord(
        expert_id=expert_id,
        probe=cfg.probe,
        base_weights=probe.weights,
        source_tasks=list(tasks),
        source_task_hashes=[lib.task(t).content_hash for t in tasks],
        classes=classes or list(probe.meta.get("source_class_names") or []),
        input_size=probe.input_size,
        feature_dim=probe.feature_dim,
        has_source_head=head is not None,
        state_hash=probe.state_hash(),
        config=_recipe(cfg),
        config_hash=chash,
        metrics=metrics,
        curves=curves,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    state = full_state_dict(probe, head)
    record.mlflow_run_id = _log_expert(tracker, parent_run_id, record, state)
    store.save(record, state)
    return record, False


def _fine_tune(
    probe: Any, lib: Any, tasks: list[str], cfg: ExpertsConfig
) -> tuple[Any, list[str], dict, dict]:
    """Fine-tune ``probe`` (in place) on the merged ``tasks``: ``(head, merged classes, metrics, curves)``."""
    from t2v_ray.train.extract import resolve_device
    from t2v_ray.train.finetune import merged_split, train_expert

    specs = [lib.task(t) for t in tasks]
    splits = {
        split: merged_split([lib.read_task(t, split=split) for t in tasks], specs, split, probe.transform)
        for split in ("train", "test")
    }
    (train, classes), (test, _) = splits["train"], splits["test"]
    device = resolve_device(cfg.device)
    res = train_expert(probe.features, probe.feature_dim, len(classes), train, cfg.train, test, device)
    return res.head, classes, res.metrics, res.curves


def _recipe(cfg: ExpertsConfig) -> dict:
    """The config stored in ``expert.json``: how the expert was made (not where or how it was scheduled)."""
    where = ("library", "out", "resume")
    return {**{k: v for k, v in to_dict(cfg).items() if k not in where}, "tune": None, "tracking": None}


def _log_expert(tracker: Any, parent_run_id: str | None, record: ExpertRecord, state: dict) -> str | None:
    """One MLflow run per expert: ids and config as params, final metrics, curves as step metrics, weights."""
    if tracker is None or parent_run_id is None or not tracker.enabled:
        return None
    import torch

    from t2v_ray.track import run_name, run_tags

    with tempfile.TemporaryDirectory(prefix="t2v-expert-") as tmp:
        weights = Path(tmp) / EXPERT_WEIGHTS_FILE
        torch.save(state, weights)
        return tracker.log_child(
            parent_run_id,
            run_name("experts", expert_id=record.expert_id, probe=record.probe),
            params={
                "expert_id": record.expert_id,
                "source_tasks": ",".join(record.source_tasks),
                "config": record.config,
            },
            # A value that also has a curve is logged once, as the curve (its last step is the final value).
            metrics={
                k: v
                for k, v in record.metrics.items()
                if isinstance(v, float) and math.isfinite(v) and not record.curves.get(k)
            },
            tags=run_tags(
                "experts",
                expert_id=record.expert_id,
                probe=record.probe,
                source_tasks=",".join(record.source_tasks),
            ),
            artifacts={EXPERT_WEIGHTS_FILE: weights, EXPERT_RECORD_FILE: record.to_json()},
            step_metrics={k: v for k, v in record.curves.items() if v},
        )


@dataclass
class TrialContext:
    """What every expert trial needs; built on the driver, shipped once through the object store."""

    cfg: ExpertsConfig
    library_uri: str
    out_uri: str
    tracker: Any
    parent_run_id: str | None
    env: dict


def expert_trial(config: dict, ctx: TrialContext) -> None:
    """Tune trainable: build the expert named by ``config["item"]`` and report its test error."""
    from ray import tune

    from t2v_ray.distributed.tune_utils import apply_trial_env

    apply_trial_env(ctx.env, ctx.cfg.tune.cpus_per_trial)
    item = config["item"]
    record, skipped = build_expert(
        item["expert_id"],
        item["tasks"],
        ctx.cfg,
        ctx.library_uri,
        ctx.out_uri,
        ctx.tracker,
        ctx.parent_run_id,
    )
    tune.report({"test_error": float(record.metrics.get("test_error") or math.nan), "skipped": skipped})


def run_experts(cfg: ExpertsConfig) -> ExpertsSummary:
    """Build every expert of ``cfg`` on Ray Tune (one trial each), then rewrite ``experts.parquet``.

    Experts already stored with the same config are not retrained (and then neither Ray nor MLflow starts).
    """
    from ray import tune

    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.distributed.ray_utils import init_ray, worker_env
    from t2v_ray.distributed.tune_utils import default_state_root, run_trials, state_key, trial_errors
    from t2v_ray.track import run_tags, stage_tracker

    if not cfg.library or not cfg.out:
        raise ValueError("both library and out must be set (e.g. --library URI --out URI)")
    start, lib = time.perf_counter(), TaskLibrary.open(cfg.library)
    items = expert_plan(cfg, {t.task_id for t in lib.tasks})
    summary = ExpertsSummary(cfg.out, None, fine_tuned=len(cfg.tasks) + len(cfg.groups))
    store = ExpertStore(cfg.out)
    if not all(_is_stored(store, cfg, it) for it in items):  # else: no Ray, no Tune, no MLflow run
        init_ray(cfg.tune.ray_address)
        tracker = stage_tracker(cfg.tracking, cfg.library, "experts")
        with tracker.parent_run(
            "experts", params=to_dict(cfg), tags=run_tags("experts", probe=cfg.probe)
        ) as parent:
            ctx = TrialContext(cfg, cfg.library, cfg.out, tracker, parent, worker_env())
            results = run_trials(
                tune.with_parameters(expert_trial, ctx=ctx),
                items,
                cfg.tune,
                default_state_root(cfg.out, cfg.tune),
                f"experts-{state_key(cfg.library, cfg.out)}-",
                cfg.resume,
            )
        summary.errors = [(item.get("expert_id", "?"), msg) for item, msg in trial_errors(results)]
    summary.index = store.write_index()
    summary.seconds = time.perf_counter() - start
    return summary
