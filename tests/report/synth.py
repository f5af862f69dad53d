"""A small synthetic results root with planted structure, so report tests never run the other stages.

Planted structure:
- ``n_groups`` taxonomy families of ``per_group`` tasks; task embeddings are a family centre (a block of
  high entries) times a per-task complexity scale s (1, 1.5, 2, ...), with mild multiplicative noise;
- one expert per task (source = that task), one expert on the first two tasks of family 0, and a generic
  expert with no source task;
- test error = base(s) + 0.3 d_sym(task, expert source) + small noise; base grows with s (so embedding norm
  correlates with error), the generic expert costs +0.08 over base, and transferability columns are noisy
  negated errors (NaN for the generic expert, which has no source head).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from t2v_ray.core.distance import symmetric_distance
from t2v_ray.data import storage
from t2v_ray.data.library import TaskSpec, tasks_table

GENERIC = "generic"


@dataclass
class Synth:
    root: Path
    task_ids: list[str]
    groups: list[str]
    vectors: np.ndarray
    trivial: np.ndarray
    expert_ids: list[str]
    sources: list[list[str]]
    errors: np.ndarray  # (tasks, experts), in task_ids x expert_ids order

    def expert_vectors(self) -> np.ndarray:
        idx = {t: i for i, t in enumerate(self.task_ids)}
        return np.array(
            [
                self.vectors[[idx[t] for t in s]].mean(0) if s else np.full(self.vectors.shape[1], np.nan)
                for s in self.sources
            ]
        )


def _embeddings(n_groups: int, per_group: int, dim: int, rng: np.random.Generator):
    block = dim // n_groups
    ids, groups, vecs, scales = [], [], [], []
    for g in range(n_groups):
        centre = np.full(dim, 0.2)
        centre[g * block : (g + 1) * block] = 1.0
        for k in range(per_group):
            s = 1.0 + 0.5 * k
            ids.append(f"fam{g}/task{k}")
            groups.append(f"family{g}")
            vecs.append(s * centre * np.exp(0.1 * rng.standard_normal(dim)))
            scales.append(s)
    return ids, groups, np.array(vecs), np.array(scales)


def _experts(ids: list[str]) -> tuple[list[str], list[list[str]]]:
    expert_ids = [f"x-{t}" for t in ids] + ["x-pair", GENERIC]
    return expert_ids, [[t] for t in ids] + [[ids[0], ids[1]], []]


def _errors(vecs, scales, ids, sources, rng) -> np.ndarray:
    idx = {t: i for i, t in enumerate(ids)}
    base = 0.05 + 0.04 * scales
    err = np.empty((len(ids), len(sources)))
    for j, src in enumerate(sources):
        for i in range(len(ids)):
            if src:
                f = vecs[[idx[t] for t in src]].mean(0)
                err[i, j] = base[i] + 0.3 * symmetric_distance(vecs[i], f) + 0.003 * rng.standard_normal()
            else:
                err[i, j] = base[i] + 0.08
    return err


def _grid_table(ids, expert_ids, err, rng) -> pa.Table:
    rows = []
    for j, e in enumerate(expert_ids):
        for i, t in enumerate(ids):
            head = e != GENERIC
            rows.append(
                {
                    "expert_id": e,
                    "task_id": t,
                    "test_error": err[i, j],
                    "train_error": err[i, j] / 2,
                    "epochs": 5,
                    "seconds": 0.1,
                    "status": "ok",
                    "error": "",
                    "logme": -err[i, j] + 0.01 * rng.standard_normal() if head else np.nan,
                    "leep": -err[i, j] if head else np.nan,
                    "nce": -2 * err[i, j] if head else np.nan,
                    "h_score": np.nan,  # a transferability column with no values: must be skipped
                }
            )
    # A failed cell that must be ignored (its error would otherwise make x-generic the best everywhere).
    rows.append({**rows[-1], "status": "error", "test_error": 0.0, "error": "boom"})
    return pa.Table.from_pylist(rows)


def _embedding_table(ids, vecs, groups, trivial, rng) -> pa.Table:
    dom_dim = 6
    rows = []
    for t, v, g in zip(ids, vecs, groups, strict=True):
        dom = np.full(dom_dim, 0.1)
        dom[int(g[-1]) % dom_dim] = 1.0
        rows.append(
            {
                "task_id": t,
                "probe": "synth",
                "probe_hash": "p",
                "method": "montecarlo",
                "config_hash": "c",
                "data_hash": "d",
                "embedding": v.astype(np.float32).tolist(),
                "layer_offsets": [0, len(v)],
                "norm": float(np.abs(v).sum()),
                "head_accuracy": 0.9,
                "n_samples": 50,
                "seconds": 0.5,
                "status": "ok",
                "error": "",
                "trivial": trivial.astype(np.float32).tolist(),
                "domain": (dom + 0.05 * rng.random(dom_dim)).astype(np.float32).tolist(),
            }
        )
    rows.append({**rows[0], "task_id": "broken/task", "status": "error", "embedding": [0.0] * len(vecs[0])})
    return pa.Table.from_pylist(rows)


def make_results(root: Path, n_groups: int = 3, per_group: int = 4, dim: int = 24, seed: int = 0) -> Synth:
    """Write embeddings.parquet, grid.parquet, experts.parquet and a library (tasks.parquet) under ``root``."""
    rng = np.random.default_rng(seed)
    ids, groups, vecs, scales = _embeddings(n_groups, per_group, dim, rng)
    vecs = vecs.astype(np.float32).astype(np.float64)  # what the parquet round trip will give back
    trivial = np.full(dim, 0.05).astype(np.float32).astype(np.float64)
    expert_ids, sources = _experts(ids)
    err = _errors(vecs, scales, ids, sources, rng)
    root.mkdir(parents=True, exist_ok=True)
    storage.write_parquet_atomic(
        _embedding_table(ids, vecs, groups, trivial, rng), str(root / "embeddings.parquet")
    )
    storage.write_parquet_atomic(_grid_table(ids, expert_ids, err, rng), str(root / "grid.parquet"))
    experts = pa.Table.from_pylist(
        [
            {"expert_id": e, "source_tasks": s, "is_generic": e == GENERIC, "epochs": 3}
            for e, s in zip(expert_ids, sources, strict=True)
        ]
    )
    storage.write_parquet_atomic(experts, str(root / "experts.parquet"))
    specs = [
        TaskSpec(t, "synth", "taxonomy", ["synth", g, t.split("/")[1]], ["a", "b"], 40, 10)
        for t, g in zip(ids, groups, strict=True)
    ]
    storage.write_parquet_atomic(tasks_table(specs), str(root / "library" / "tasks.parquet"))
    return Synth(root, ids, groups, vecs, trivial, expert_ids, sources, err)
