"""Feature cache: one frozen pass of an expert over a task, stored once and reused by every head on the pair.

Layout: ``<root>/features/<expert_id>/<task content_hash>.npz`` (local folder or S3 prefix) holding, per split,
``<split>_features`` (N, D) float32, ``<split>_labels`` (N,) int64 and, when the expert has a source head,
``<split>_source_probs`` (N, K) float32, plus a JSON ``meta`` record. Those arrays are also all the
transferability baselines need (LogME and H-score: features + labels; LEEP and NCE: source probabilities), so
the selection stage can score any pair again without touching images.

The key is the task's content hash (a rebuilt task with new images gets a new file); the expert's weights hash
is stored inside and checked on load, so retraining an expert under the same id invalidates its old features.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
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
