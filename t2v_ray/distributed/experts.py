"""Experts: probe networks fine-tuned on a task or a group of tasks, stored for the classifier grid.

Layout under a storage root (folder or S3 prefix)::

    experts/<expert_id>/weights.pt    full-classifier state_dict (feature extractor + its source head), loadable
                                      with ``get_probe(probe, weights=<uri>)``
    experts/<expert_id>/expert.json   ExpertRecord: architecture, source task(s), resolved config, metrics, curves
    experts.parquet                   index of every expert and its source tasks

The generic expert (``expert_id="generic"``, paper's "ImageNet" row) is the pre-trained probe itself, stored the
same way with no source tasks. An expert trained on task T lists T in ``source_tasks``: the leave-one-out
protocol never selects it for T (:func:`excluded_experts`). Weights are written before ``expert.json``, so a record
present means the expert is complete. Training runs as a Tune grid, one trial per expert (:func:`train_experts`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from t2v_ray.config import Weights, absolute_uri, to_dict
from t2v_ray.data import storage
from t2v_ray.distributed.tune_utils import (
    TrackingSettings,
    TuneSettings,
    apply_trial_env,
    default_state_root,
    forwarded_env,
    run_trials,
    state_key,
    trial_errors,
)
from t2v_ray.train.experts import ExpertTrainConfig

EXPERTS_DIR = "experts"
INDEX_FILE = "experts.parquet"
RECORD_FILE = "expert.json"
WEIGHTS_FILE = "weights.pt"
GENERIC_ID = "generic"


class ExpertError(Exception):
    """An expert cannot be used: no record, no weights file, or weights that do not load."""


@dataclass
class ExpertRecord:
    """``expert.json``: what an expert is and how it was made."""

    expert_id: str
    probe: str
    base_weights: str | None
    source_tasks: list[str]
    source_task_hashes: list[str]
    classes: list[str]
    input_size: int
    feature_dim: int
    has_source_head: bool
    state_hash: str
    config: dict
    config_hash: str
    metrics: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)
    mlflow_run_id: str | None = None
    created_at: str = ""

    @classmethod
    def from_json(cls, text: str) -> ExpertRecord:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=_nan_safe)


def _nan_safe(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else str(v)


def expert_id_for(name: str) -> str:
    """A folder-safe expert id for a task id or group name (``a/b c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "expert"


class ExpertStore:
    """Experts under one storage root (plain path, ``file://`` or ``s3://``)."""

    def __init__(self, root: str):
        self.root = str(root)

    def weights_uri(self, expert_id: str) -> str:
        return storage.join(self.root, EXPERTS_DIR, expert_id, WEIGHTS_FILE)

    def record_uri(self, expert_id: str) -> str:
        return storage.join(self.root, EXPERTS_DIR, expert_id, RECORD_FILE)

    def save(self, record: ExpertRecord, state_dict: dict) -> None:
        """Write weights, then the record (its presence marks the expert complete)."""
        import torch

        buf = io.BytesIO()
        torch.save(state_dict, buf)
        storage.write_bytes_atomic(self.weights_uri(record.expert_id), buf.getvalue())
        storage.write_bytes_atomic(self.record_uri(record.expert_id), record.to_json().encode())

    def load_record(self, expert_id: str) -> ExpertRecord:
        uri = self.record_uri(expert_id)
        if not storage.exists(uri):
            raise ExpertError(f"expert {expert_id!r}: no {RECORD_FILE} at {uri}")
        return ExpertRecord.from_json(storage.read_bytes(uri).decode())

    def expert_ids(self) -> list[str]:
        """Ids of complete experts (those with a record), sorted."""
        names = storage.list_dir(storage.join(self.root, EXPERTS_DIR))
        return [n for n in names if storage.exists(self.record_uri(n))]

    def records(self) -> list[ExpertRecord]:
        return [self.load_record(e) for e in self.expert_ids()]

    def load_probe(self, expert_id: str) -> tuple[ExpertRecord, Any]:
        """The expert's record and network as a ``Probe`` (source head = the head it was trained with)."""
        from t2v_ray.probes import get_probe

        record = self.load_record(expert_id)
        weights = self.weights_uri(expert_id)
        if not storage.exists(weights):
            raise ExpertError(f"expert {expert_id!r}: weights file missing at {weights}")
        try:
            probe = get_probe(record.probe, weights=weights, input_size=record.input_size)
        except (ValueError, OSError) as e:
            raise ExpertError(f"expert {expert_id!r}: weights at {weights} do not load ({e})") from e
        return record, probe

    def write_index(self) -> pa.Table:
        """Rebuild ``experts.parquet`` from the records (trials never write it, so it cannot race)."""
        table = index_table(self.records(), self)
        storage.write_parquet_atomic(table, storage.join(self.root, INDEX_FILE))
        return table

    def read_index(self) -> pa.Table:
        uri = storage.join(self.root, INDEX_FILE)
        return storage.read_parquet(uri) if storage.exists(uri) else index_table(self.records(), self)


INDEX_SCHEMA = pa.schema(
    [
        ("expert_id", pa.string()), ("probe", pa.string()), ("base_weights", pa.string()),
        ("source_tasks", pa.list_(pa.string())), ("n_classes", pa.int64()), ("feature_dim", pa.int64()),
        ("input_size", pa.int64()), ("has_source_head", pa.bool_()), ("state_hash", pa.string()),
        ("config_hash", pa.string()), ("test_error", pa.float64()), ("weights_uri", pa.string()),
        ("mlflow_run_id", pa.string()), ("created_at", pa.string()),
    ]
)  # fmt: skip


def index_table(records: list[ExpertRecord], store: ExpertStore) -> pa.Table:
    """One row per expert: id, architecture, source tasks (for leave-one-out), metrics, locations."""
    rows = [
        {
            **{k: getattr(r, k) for k in ("expert_id", "probe", "base_weights", "feature_dim", "input_size")},
            **{k: getattr(r, k) for k in ("has_source_head", "state_hash", "config_hash", "mlflow_run_id")},
            "source_tasks": list(r.source_tasks),
            "n_classes": len(r.classes),
            "test_error": r.metrics.get("test_error"),
            "weights_uri": store.weights_uri(r.expert_id),
            "created_at": r.created_at,
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def excluded_experts(index: pa.Table, task_id: str) -> set[str]:
    """Experts the leave-one-out protocol must not select for ``task_id`` (those trained on it)."""
    ids, sources = index.column("expert_id").to_pylist(), index.column("source_tasks").to_pylist()
    return {e for e, s in zip(ids, sources, strict=True) if task_id in (s or [])}


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
    """

    probe: str = "resnet34"
    weights: Weights | None = "default"
    input_size: int | None = None
    tasks: tuple[str, ...] = ()
    groups: dict[str, list[str]] = field(default_factory=dict)
    generic: bool = True
    device: str = "auto"
    train: ExpertTrainConfig = field(default_factory=ExpertTrainConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)


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
    from t2v_ray.train.experts import full_state_dict, merged_split, train_expert
    from t2v_ray.train.features import resolve_device

    store, chash = ExpertStore(out_uri), expert_config_hash(cfg, tasks)
    if storage.exists(store.record_uri(expert_id)) and storage.exists(store.weights_uri(expert_id)):
        old = store.load_record(expert_id)
        if old.config_hash == chash:
            return old, True
    lib = TaskLibrary.open(library_uri)
    probe = get_probe(cfg.probe, weights=cfg.weights, input_size=cfg.input_size)
    head, classes, metrics, curves = probe.source_head, [], {}, {}
    if tasks:
        train, classes = merged_split(
            [lib.read_task(t, split="train") for t in tasks],
            [lib.task(t) for t in tasks],
            "train",
            probe.transform,
        )
        test, _ = merged_split(
            [lib.read_task(t, split="test") for t in tasks],
            [lib.task(t) for t in tasks],
            "test",
            probe.transform,
        )
        res = train_expert(
            probe.features,
            probe.feature_dim,
            len(classes),
            train,
            cfg.train,
            test,
            resolve_device(cfg.device),
        )
        head, metrics, curves = res.head, res.metrics, res.curves
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
        config={**to_dict(cfg), "tune": None, "tracking": None},
        config_hash=chash,
        metrics=metrics,
        curves=curves,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    state = full_state_dict(probe, head)
    record.mlflow_run_id = _log_expert(tracker, parent_run_id, record, state)
    store.save(record, state)
    return record, False


def _log_expert(tracker: Any, parent_run_id: str | None, record: ExpertRecord, state: dict) -> str | None:
    """One MLflow run per expert: ids and config as params, final metrics, curves as step metrics, weights."""
    if tracker is None or parent_run_id is None or not tracker.enabled:
        return None
    import torch

    from t2v_ray.track import run_name, run_tags

    with tempfile.TemporaryDirectory(prefix="t2v-expert-") as tmp:
        weights = Path(tmp) / WEIGHTS_FILE
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
            artifacts={WEIGHTS_FILE: weights, RECORD_FILE: record.to_json()},
            step_metrics={k: v for k, v in record.curves.items() if v},
        )


@dataclass
class _Context:
    """What every expert trial needs; built on the driver, shipped once through the object store."""

    cfg: ExpertsConfig
    library_uri: str
    out_uri: str
    tracker: Any
    parent_run_id: str | None
    env: dict


def expert_trial(config: dict, ctx: _Context) -> None:
    """Tune trainable: build the expert named by ``config["item"]`` and report its test error."""
    from ray import tune

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


def train_experts(
    cfg: ExpertsConfig, library_uri: str, out_uri: str, resume: bool = False
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Build every expert of ``cfg`` on Ray Tune (one trial each), then rewrite ``experts.parquet``.

    Experts already stored with the same config are not retrained. Returns the index and
    ``(expert_id, error message)`` for experts that failed after their retries.
    """
    from ray import tune

    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.distributed.ray_utils import init_ray
    from t2v_ray.track import Tracker, experiment_name, run_tags

    # Tune runs each trial in its own working directory: no relative path may reach a trial.
    library_uri, out_uri = absolute_uri(str(library_uri)), absolute_uri(str(out_uri))
    lib = TaskLibrary.open(library_uri)
    items = expert_plan(cfg, {t.task_id for t in lib.tasks})
    store = ExpertStore(out_uri)
    if all(_is_stored(store, cfg, it) for it in items):  # nothing to train: no Ray, no Tune, no MLflow run
        return store.write_index(), []
    init_ray(cfg.tune.ray_address)
    tracker = Tracker.create(
        cfg.tracking.uri,
        experiment_name(library_uri, "experts"),
        cfg.tracking.artifact_root,
        cfg.tracking.enabled,
    )
    with tracker.parent_run(
        "experts", params=to_dict(cfg), tags=run_tags("experts", probe=cfg.probe)
    ) as parent:
        ctx = _Context(cfg, str(library_uri), str(out_uri), tracker, parent, forwarded_env())
        results = run_trials(
            tune.with_parameters(expert_trial, ctx=ctx),
            items,
            cfg.tune,
            default_state_root(out_uri, cfg.tune),
            f"experts-{state_key(str(library_uri), str(out_uri))}-",
            resume,
        )
    errors = [(item.get("expert_id", "?"), msg) for item, msg in trial_errors(results)]
    return ExpertStore(out_uri).write_index(), errors
