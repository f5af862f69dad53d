"""The grid's feature cache: one frozen pass of an expert over a task, stored once, reused by every head on it.

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from t2v_ray.data import storage
from t2v_ray.results.layout import FEATURES_DIR

SPLITS = ("train", "test")


@dataclass
class FeatureSet:
    """Features of one split of one task under one expert.

    Attributes:
        features: (N, D) float32, the input of the expert's (replaced) last linear layer.
        labels: (N,) int64 target labels 0..C-1.
        source_probs: (N, K) float32 softmax of the expert's own source head (K source classes), or None
            when the expert has no head (LEEP and NCE need it; LogME and H-score do not).
    """

    features: np.ndarray
    labels: np.ndarray
    source_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


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
