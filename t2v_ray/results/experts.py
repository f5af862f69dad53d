"""Experts and ``experts.parquet``: each expert's record and weights, and the index of every expert.

Layout under a storage root (folder or S3 prefix)::

    experts/<expert_id>/weights.pt    full-classifier state_dict (feature extractor + its source head), loadable
                                      with ``get_probe(probe, weights=<uri>)``
    experts/<expert_id>/expert.json   ExpertRecord: architecture, source task(s), resolved config, metrics, curves
    experts.parquet                   index of every expert and its source tasks

The generic expert (``expert_id="generic"``, paper's "ImageNet" row) is the pre-trained probe itself, stored the
same way with no source tasks. An expert trained on task T lists T in ``source_tasks``: the leave-one-out
protocol never selects it for T (:func:`excluded_experts`). Weights are written before ``expert.json``, so a record
present means the expert is complete.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd
import pyarrow as pa

from t2v_ray.data import storage
from t2v_ray.results.layout import EXPERT_RECORD_FILE, EXPERT_WEIGHTS_FILE, EXPERTS_DIR, EXPERTS_FILE

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
        return storage.join(self.root, EXPERTS_DIR, expert_id, EXPERT_WEIGHTS_FILE)

    def record_uri(self, expert_id: str) -> str:
        return storage.join(self.root, EXPERTS_DIR, expert_id, EXPERT_RECORD_FILE)

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
            raise ExpertError(f"expert {expert_id!r}: no {EXPERT_RECORD_FILE} at {uri}")
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
        storage.write_parquet_atomic(table, storage.join(self.root, EXPERTS_FILE))
        return table

    def read_index(self) -> pa.Table:
        uri = storage.join(self.root, EXPERTS_FILE)
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


def load_experts(uri: str | None, grid: pd.DataFrame) -> pd.DataFrame:
    """Experts in grid order of appearance in ``experts.parquet``; experts only in the grid get unknown sources.

    Returns:
        Columns ``expert_id``, ``source_tasks`` (list of task ids, empty when unknown) and ``is_generic``.
    """
    in_grid = sorted(grid["expert_id"].unique())
    known = pd.DataFrame({"expert_id": [], "source_tasks": [], "is_generic": []})
    if uri is not None:
        known = storage.read_parquet(uri).to_pandas()
        known = known.assign(expert_id=known["expert_id"].astype(str))
    rows: list[dict[str, Any]] = []
    for _, r in known.iterrows():
        if r["expert_id"] in in_grid:
            src = r.get("source_tasks")
            sources = [] if src is None else [str(s) for s in src]
            generic = bool(r.get("is_generic", False)) if "is_generic" in known.columns else not sources
            rows.append({"expert_id": r["expert_id"], "source_tasks": sources, "is_generic": generic})
    seen = {r["expert_id"] for r in rows}
    rows += [{"expert_id": e, "source_tasks": [], "is_generic": False} for e in in_grid if e not in seen]
    return pd.DataFrame(rows, columns=["expert_id", "source_tasks", "is_generic"])
