"""Rank the stored experts for one new task (``t2v select rank``), without touching the grid.

1. Rebuild the probe and ``EmbedConfig`` from ``<results>/embed_config.yaml`` (the embed stage's resolved config)
   and check that the probe's weights hash equals the stored embeddings' ``probe_hash``: distances between
   embeddings of different probes mean nothing.
2. Embed the new task: a library URI plus a task id, a library holding a single task, or a folder with one
   sub-folder of images per class (``root/<class>/*.png``).
3. Score every expert: d_asym(F_j -> t) (paper §3.3; F_j the embedding of expert j's source task) and MODEL2VEC's
   d_asym(m_j -> t), fitted once on every task of the stored grid (paper §3.4).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from t2v_ray.config import Uri
from t2v_ray.data import storage
from t2v_ray.results.embeddings import EmbeddingSet, load_embeddings, stored_probe_hashes
from t2v_ray.results.experts import load_experts
from t2v_ray.results.grid import grid_matrix, load_grid
from t2v_ray.results.layout import EMBED_CONFIG_FILE, ResultsPaths, read_embed_config

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class RankConfig:
    """Settings of ``t2v select rank`` (also loadable from YAML; see the module docstring for ``task``).

    Attributes:
        task: the new task: a library URI (with ``task_id`` unless it holds one task) or a class-folder tree.
        task_id: task id inside the ``task`` library.
        library_results: results root of the expert library (embeddings, grid, experts, embed_config.yaml).
        top: print only the best N experts (None: all).
        by: ranking column: ``d_asym``, ``d_sym`` or ``model2vec`` (lower = better).
        alpha: alpha of the asymmetric distance.
        model2vec: also fit MODEL2VEC on the stored grid and score the experts with it.
        csv: also write the full ranking as CSV to this path or URI.
        device: torch device for the embedding (None: cuda when available).
    """

    task: Uri = ""
    task_id: str | None = None
    library_results: Uri = ""
    top: int | None = None
    by: Literal["d_asym", "d_sym", "model2vec"] = "d_asym"
    alpha: float = 0.15
    model2vec: bool = True
    csv: Uri | None = None
    device: Literal["cpu", "cuda"] | None = None


@dataclass
class StoredExperts:
    """What ranking needs from the stored results: the experts, their source embeddings and the grid.

    Attributes:
        expert_ids, sources: experts and their source task ids.
        expert_task_embs: (k, d) mean source-task embedding (NaN rows when unknown, e.g. the generic expert).
        embeddings: the stored task embeddings (one run).
        grid_task_ids, errors: tasks of the grid with an embedding, and their (n, k) test errors.
    """

    expert_ids: list[str]
    sources: list[list[str]]
    expert_task_embs: np.ndarray
    embeddings: EmbeddingSet
    grid_task_ids: list[str]
    errors: np.ndarray


def load_store(paths: ResultsPaths, probe: str | None = None, method: str | None = None) -> StoredExperts:
    """Read embeddings, grid and experts of a results root into a :class:`StoredExperts`."""
    from t2v_ray.report.evaluate import expert_embeddings

    emb = load_embeddings(paths.embeddings, probe=probe, method=method)
    grid = load_grid(paths.grid)
    experts = load_experts(paths.experts, grid)
    sources = [list(s) for s in experts["source_tasks"]]
    expert_ids = list(experts["expert_id"])
    tasks = sorted(set(emb.task_ids) & set(grid["task_id"]))
    return StoredExperts(
        expert_ids,
        sources,
        expert_embeddings(sources, emb),
        emb,
        tasks,
        grid_matrix(grid, tasks, expert_ids, "test_error"),
    )


def _model2vec_scores(vector: np.ndarray, store: StoredExperts, alpha: float) -> np.ndarray:
    """MODEL2VEC fitted on every stored grid task (all known cells allowed), scored on the new task."""

    from t2v_ray.core.model2vec import fit_model2vec
    from t2v_ray.report.evaluate import fit_threads

    usable = np.isfinite(store.errors).any(axis=1)
    vectors = store.embeddings.vectors[store.embeddings.rows(store.grid_task_ids)][usable]
    with fit_threads(store.errors[usable].size * vectors.shape[1]):
        model = fit_model2vec(
            vectors, store.errors[usable], store.expert_task_embs, store.embeddings.trivial, alpha,
            includes_prior=store.embeddings.method == "variational",
        )  # fmt: skip
    return model.scores(vector[None, :])[0]


def rank_experts(
    vector: np.ndarray, store: StoredExperts, alpha: float = 0.15, model2vec: bool = True, by: str = "d_asym"
) -> pd.DataFrame:
    """Every expert scored for the task embedded as ``vector``, best first by ``by`` (lower = better).

    Returns:
        Columns ``rank``, ``expert_id``, ``source_tasks``, ``d_asym``, ``d_sym``, ``model2vec`` and
        ``model2vec_rank``; distances are NaN for experts without an embedded source task.
    """
    from t2v_ray.core.selection import asymmetric_scores, symmetric_scores

    v = np.asarray(vector, dtype=np.float64)[None, :]
    if v.shape[1] != store.embeddings.vectors.shape[1]:
        raise ValueError(
            f"the new embedding has {v.shape[1]} entries but the stored ones {store.embeddings.vectors.shape[1]}: "
            "was it made with another probe?"
        )
    sym = symmetric_scores(v, store.expert_task_embs)[0]
    variational = store.embeddings.method == "variational"  # its embeddings hold t0 already
    asym = asymmetric_scores(v, store.expert_task_embs, store.embeddings.trivial, alpha, variational)[0]
    df = pd.DataFrame(
        {
            "expert_id": store.expert_ids,
            "source_tasks": [", ".join(s) if s else "(generic / unknown)" for s in store.sources],
            "d_asym": np.where(np.isfinite(asym), asym, np.nan),
            "d_sym": np.where(np.isfinite(sym), sym, np.nan),
        }
    )
    if model2vec and len(store.grid_task_ids) >= 2:
        df["model2vec"] = _model2vec_scores(v[0], store, alpha)
        df["model2vec_rank"] = df["model2vec"].rank(method="first").astype(int)
    if by not in df.columns:
        raise ValueError(f"cannot rank by {by!r}: choose one of d_asym, d_sym, model2vec")
    df = df.sort_values(by, kind="stable", na_position="last").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


# ------------------------------------------------------------------------------------------ embedding
def load_embed_job(results: str) -> Any:
    """The embed stage's resolved config (``EmbedJobConfig``) saved under ``results``."""
    from t2v_ray.config import from_dict
    from t2v_ray.stages.embed import EmbedJobConfig

    data = read_embed_config(results)
    if not data:
        raise FileNotFoundError(
            f"{storage.join(results, EMBED_CONFIG_FILE)}: no embed config (run `t2v embed` first)"
        )
    # Where the embed run was tracked does not matter here (and older files name that section ``mlflow``).
    data = {k: v for k, v in data.items() if k not in ("mlflow", "tracking")}
    return from_dict(EmbedJobConfig, data, where=EMBED_CONFIG_FILE)


def folder_rows(uri: str) -> list[dict[str, Any]]:
    """Training rows of a folder task ``root/<class>/<image>``: classes are the sorted sub-folder names."""
    files = [(rel, size) for rel, size in storage.list_files(uri) if rel.lower().endswith(IMAGE_SUFFIXES)]
    by_class: dict[str, list[str]] = {}
    for rel, _ in files:
        parts = rel.split("/")
        if len(parts) >= 2:
            by_class.setdefault(parts[0], []).append(rel)
    if len(by_class) < 2:
        raise ValueError(
            f"{uri}: expected one sub-folder of images per class, found {len(by_class)} class folder(s)"
        )
    rows = []
    for label, name in enumerate(sorted(by_class)):
        for rel in sorted(by_class[name]):
            rows.append(
                {
                    "image": storage.read_bytes(storage.join(uri, rel)),
                    "label": label,
                    "split": "train",
                    "image_id": rel,
                }
            )
    return rows


def task_rows(task: str, task_id: str | None = None) -> tuple[Any, str]:
    """Training rows of the new task and a name for it (see the module docstring for the accepted forms)."""
    from t2v_ray.data.library import TaskLibrary

    if storage.exists(storage.join(task, "tasks.parquet")):
        lib = TaskLibrary.open(task)
        if task_id is None:
            if len(lib) != 1:
                ids = ", ".join(s.task_id for s in lib.tasks[:5])
                raise ValueError(f"{task} holds {len(lib)} tasks ({ids}, ...): pass --task-id")
            task_id = lib.tasks[0].task_id
        return lib.read_task(task_id, split="train"), task_id
    if task_id is not None:
        raise ValueError(f"--task-id given but {task} is not a library (no tasks.parquet)")
    return folder_rows(task), task.rstrip("/").split("/")[-1]


@dataclass
class RankResult:
    """Output of :func:`rank_new_task`: the ranking, the new embedding and where the time went."""

    table: pd.DataFrame
    task_name: str
    vector: np.ndarray
    seconds: dict[str, float]


def _check_probe(probe: Any, stored_hashes: set[str]) -> None:
    if stored_hashes and probe.state_hash() not in stored_hashes:
        raise ValueError(
            f"probe {probe.name!r} rebuilt from the embed config has weights hash {probe.state_hash()}, but the "
            f"stored embeddings were made with {sorted(stored_hashes)}: its distances would be meaningless"
        )


def rank_new_task(
    paths: ResultsPaths,
    task: str,
    task_id: str | None = None,
    alpha: float = 0.15,
    model2vec: bool = True,
    by: str = "d_asym",
    device: str | None = None,
) -> RankResult:
    """Embed one new task with the stored probe/config and rank the stored experts for it."""
    from t2v_ray.data.dataset import TaskDataset
    from t2v_ray.stages.embed_worker import build_embedder

    t0 = time.perf_counter()
    job = load_embed_job(paths.root)
    store = load_store(paths, probe=job.probe, method=job.embed.method)
    probe, t2v = build_embedder(job, device)
    _check_probe(probe, stored_probe_hashes(paths.embeddings, job.probe))
    t1 = time.perf_counter()
    rows, name = task_rows(task, task_id)
    emb = t2v.embed(TaskDataset(rows, probe.transform, split="train"))
    t2 = time.perf_counter()
    table = rank_experts(emb.vector, store, alpha, model2vec, by)
    t3 = time.perf_counter()
    seconds = {"load": t1 - t0, "embed": t2 - t1, "rank": t3 - t2, "total": t3 - t0}
    return RankResult(table, name, emb.vector, seconds)
