"""Per-pair storage of the classifier grid: the feature cache and the pair result records.

Feature cache: one frozen pass of an expert over a task, stored once and reused by every head on the pair.

Layout: ``<root>/features/<expert_id>/<task content_hash>.npz`` (local folder or S3 prefix) holding, per split,
``<split>_features`` (N, D) float32, ``<split>_labels`` (N,) int64 and, when the expert has a source head,
``<split>_source_probs`` (N, K) float32, plus a JSON ``meta`` record. Those arrays are also all the
transferability baselines need (LogME and H-score: features + labels; LEEP and NCE: source probabilities), so
the selection stage can score any pair again without touching images.

Pair records: ``<root>/grid/pairs/<expert_id>/<task id>.json``, one per pair, written by the trial that computed it
(trials never share a file, so nothing races); ``grid.parquet`` is assembled from them by the driver.

The key is the task's content hash (a rebuilt task with new images gets a new file); the expert's weights hash
is stored inside and checked on load, so retraining an expert under the same id invalidates its old features.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from t2v_ray.data import storage
from t2v_ray.train.features import FeatureSet

FEATURES_DIR = "features"
SPLITS = ("train", "test")


@dataclass
class PairFeatures:
    """Both splits of one (expert, task) pair and what produced them.

    Attributes:
        train: features of the train split.
        test: features of the test split.
        meta: ``expert_id``, ``expert_hash``, ``task_id``, ``task_hash``, ``seconds`` (extraction time), ...
    """

    train: FeatureSet
    test: FeatureSet
    meta: dict = field(default_factory=dict)


def features_uri(root: str, expert_id: str, task_hash: str) -> str:
    """Where the pair's features live under the storage root."""
    return storage.join(root, FEATURES_DIR, expert_id, f"{task_hash}.npz")


def encode(pair: PairFeatures) -> bytes:
    """The ``.npz`` bytes of a pair (uncompressed: float features barely compress, and loading stays fast)."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(pair.meta, sort_keys=True))}
    for split, fs in zip(SPLITS, (pair.train, pair.test), strict=True):
        arrays[f"{split}_features"] = np.asarray(fs.features, dtype=np.float32)
        arrays[f"{split}_labels"] = np.asarray(fs.labels, dtype=np.int64)
        if fs.source_probs is not None:
            arrays[f"{split}_source_probs"] = np.asarray(fs.source_probs, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode(data: bytes) -> PairFeatures:
    """Inverse of :func:`encode`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        sets = [
            FeatureSet(
                features=z[f"{s}_features"],
                labels=z[f"{s}_labels"],
                source_probs=z[f"{s}_source_probs"] if f"{s}_source_probs" in z.files else None,
            )
            for s in SPLITS
        ]
        meta = json.loads(str(z["meta"]))
    return PairFeatures(sets[0], sets[1], meta)


def load_cached(uri: str, expert_hash: str | None = None) -> PairFeatures | None:
    """The cached pair at ``uri``, or None when absent, unreadable or made by other expert weights."""
    if not storage.exists(uri):
        return None
    try:
        pair = decode(storage.read_bytes(uri))
    except (OSError, ValueError, KeyError):  # a torn or foreign file is recomputed, not trusted
        return None
    if expert_hash is not None and pair.meta.get("expert_hash") != expert_hash:
        return None
    return pair


def get_or_extract(
    root: str,
    expert_id: str,
    expert_hash: str,
    task_hash: str,
    extract: Callable[[], PairFeatures],
) -> tuple[PairFeatures, bool, str]:
    """Load the pair's features from the cache, or run ``extract`` once and store its result.

    Args:
        root: storage root (path or URI).
        expert_id: expert folder name.
        expert_hash: hash of the expert's weights (``Probe.state_hash()``); a mismatch forces a new pass.
        task_hash: the task's content hash.
        extract: computes both splits (the expensive pass).

    Returns:
        ``(features, was_cached, uri)``.
    """
    uri = features_uri(root, expert_id, task_hash)
    cached = load_cached(uri, expert_hash)
    if cached is not None:
        return cached, True, uri
    pair = extract()
    pair.meta = {**pair.meta, "expert_id": expert_id, "expert_hash": expert_hash, "task_hash": task_hash}
    storage.write_bytes_atomic(uri, encode(pair))
    return pair, False, uri


@dataclass(frozen=True)
class FeatureSettings:
    """The frozen feature pass over a task's images.

    Attributes:
        batch_size: images per forward pass.
        device: ``auto`` (CUDA when the trial has a GPU), ``cpu`` or ``cuda``.
        num_workers: DataLoader processes decoding images (0: in the trial's process).
        source_probs: keep the expert's source-head softmax (LEEP/NCE need it).
    """

    batch_size: int = 128
    device: str = "auto"
    num_workers: int = 0
    source_probs: bool = True


def extract_pair(lib: Any, task_id: str, probe: Any, settings: FeatureSettings) -> PairFeatures:
    """The expensive pass: read the task once, run the frozen expert over its train and test images.

    Args:
        lib: the ``TaskLibrary``.
        task_id: the task.
        probe: the expert as a ``Probe``.
        settings: batch size, device, loader workers, whether to keep source-head probabilities.
    """
    from t2v_ray.data.dataset import TaskDataset
    from t2v_ray.train.features import extract_features, resolve_device

    start, device = time.perf_counter(), resolve_device(settings.device)
    table = lib.read_task(task_id)
    head = probe.source_head if settings.source_probs else None
    probe.to(device)
    sets = []
    for split in ("train", "test"):
        ds = TaskDataset(table, probe.transform, split=split)
        if len(ds) == 0:
            sets.append(FeatureSet(np.zeros((0, probe.feature_dim), np.float32), np.zeros(0, np.int64)))
            continue
        sets.append(
            extract_features(probe.features, ds, head, settings.batch_size, device, settings.num_workers)
        )
    return PairFeatures(sets[0], sets[1], {"task_id": task_id, "seconds": time.perf_counter() - start})


# ------------------------------------------------------------------------------------------- pair records

PAIRS_DIR = "grid/pairs"
GRID_SCHEMA_FIELDS = [
    ("expert_id", "string"), ("task_id", "string"), ("probe", "string"), ("test_error", "float64"),
    ("test_error_se", "float64"), ("train_error", "float64"), ("epochs", "int64"), ("seconds", "float64"), ("status", "string"),
    ("error", "string"), ("logme", "float64"), ("leep", "float64"), ("nce", "float64"), ("h_score", "float64"),
    ("is_source", "bool_"), ("n_train", "int64"), ("n_test", "int64"), ("n_classes", "int64"),
    ("feature_dim", "int64"), ("features_cached", "bool_"), ("extract_seconds", "float64"),
    ("head_seconds", "float64"), ("score_seconds", "float64"), ("features_uri", "string"),
    ("expert_hash", "string"), ("task_hash", "string"), ("config_hash", "string"), ("mlflow_run_id", "string"),
    ("attempt", "string"), ("finished_at", "string"),
]  # fmt: skip


def grid_schema() -> Any:
    """Arrow schema of ``grid.parquet``."""
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t in GRID_SCHEMA_FIELDS])


def pair_uri(out_uri: str, expert_id: str, task_id: str) -> str:
    """Where one pair's result record lives (task ids made folder-safe)."""
    from t2v_ray.distributed.experts import expert_id_for

    return storage.join(out_uri, PAIRS_DIR, expert_id, f"{expert_id_for(task_id)}.json")


def read_pair(out_uri: str, expert_id: str, task_id: str) -> dict | None:
    """The pair's record, or None when it has none (or an unreadable one)."""
    uri = pair_uri(out_uri, expert_id, task_id)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except ValueError:  # torn or foreign: the pair simply runs again
        return None


def write_pair(out_uri: str, row: dict) -> None:
    """Atomically (re)write the pair's record; NaN stays NaN (JSON extension, read back by ``json.loads``)."""
    data = json.dumps(row, default=str, allow_nan=True).encode()
    storage.write_bytes_atomic(pair_uri(out_uri, row["expert_id"], row["task_id"]), data)


def read_pairs(out_uri: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Recorded results of ``pairs`` (read concurrently: one small object per pair on S3)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = pool.map(lambda p: read_pair(out_uri, *p), pairs)
    return {p: r for p, r in zip(pairs, rows, strict=True) if r is not None}


def collect_grid(out_uri: str, pairs: Sequence[tuple[str, str]]) -> Any:
    """``grid.parquet`` content: exactly one row per pair, in plan order; a pair without a record is ``missing``."""
    from t2v_ray.distributed.results import rows_to_table

    found = read_pairs(out_uri, pairs)
    missing = {"status": "missing", "error": "no result recorded (run the grid again to compute it)"}
    rows = [_with_se(found.get(p)) or {"expert_id": p[0], "task_id": p[1], **missing} for p in pairs]
    return rows_to_table(rows, grid_schema())


def _with_se(row: dict | None) -> dict | None:
    """``row`` with ``test_error_se`` filled in from ``test_error`` and ``n_test`` (records written before the
    column existed)."""
    if row is None or row.get("test_error_se") is not None or row.get("n_test") is None:
        return row
    from t2v_ray.core.selection import binomial_se

    return {**row, "test_error_se": float(binomial_se(row.get("test_error", math.nan), row["n_test"]))}
