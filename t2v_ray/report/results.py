"""Reading a results root: where each stage's output lives and how it becomes arrays.

Layout of a results root (a folder, ``file://`` or ``s3://`` prefix); every path can be overridden:

    <results>/embeddings.parquet   embed stage: one row per (task, probe, method, config); only ``ok`` rows are used
    <results>/grid.parquet         grid stage: test error of a linear classifier per (expert, task)
    <results>/experts.parquet      experts stage: ``expert_id``, ``source_tasks``, ``is_generic``
    <results>/library              the task library: the library folder itself (holds ``tasks.parquet``), or a
                                   small text file whose content is the library URI
    <results>/embed_config.yaml    the resolved embed config (probe, weights, input size, EmbedConfig), read by
                                   ``t2v select rank``; its ``library`` is the fallback library URI
    <results>/select/              default output folder of ``t2v select evaluate`` / ``t2v report``
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from t2v_ray.data import storage

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.parquet"
GRID_FILE = "grid.parquet"
EXPERTS_FILE = "experts.parquet"
LIBRARY_POINTER = "library"
EMBED_CONFIG_FILE = "embed_config.yaml"  # written by t2v_ray.distributed.embed (CONFIG_FILE)
SELECT_DIR = "select"


@dataclass(frozen=True)
class ResultsPaths:
    """Where the inputs of the select stage live (see the module docstring for the defaults)."""

    root: str
    embeddings: str
    grid: str
    experts: str | None
    library: str | None

    @classmethod
    def from_root(
        cls,
        root: str,
        embeddings: str | None = None,
        grid: str | None = None,
        experts: str | None = None,
        library: str | None = None,
    ) -> ResultsPaths:
        """Defaults under ``root``; an experts file or library that does not exist becomes ``None``."""
        exp = experts or storage.join(root, EXPERTS_FILE)
        return cls(
            root=str(root),
            embeddings=embeddings or storage.join(root, EMBEDDINGS_FILE),
            grid=grid or storage.join(root, GRID_FILE),
            experts=exp if storage.exists(exp) else None,
            library=library or resolve_library(root),
        )


def resolve_library(root: str) -> str | None:
    """The library of a results root: ``<root>/library`` (the folder itself, or a file holding its URI), else
    the ``library`` the embed stage recorded in ``<root>/embed_config.yaml``; None when neither says."""
    pointer = storage.join(root, LIBRARY_POINTER)
    if storage.exists(storage.join(pointer, "tasks.parquet")):
        return pointer
    if storage.exists(pointer):
        try:
            text = storage.read_bytes(pointer).decode().strip()
        except OSError:  # a folder without tasks.parquet: not a library
            text = ""
        if text:
            return text
    return read_embed_config(root).get("library") or None


def read_embed_config(root: str) -> dict[str, Any]:
    """The resolved embed config saved next to ``embeddings.parquet`` (empty when absent)."""
    import yaml

    uri = storage.join(root, EMBED_CONFIG_FILE)
    if not storage.exists(uri):
        return {}
    data = yaml.safe_load(storage.read_bytes(uri).decode()) or {}
    return data if isinstance(data, dict) else {}


@dataclass
class EmbeddingSet:
    """One consistent set of task embeddings (a single probe, method and config).

    Attributes:
        task_ids: task ids, one per row.
        vectors: (n, d) TASK2VEC embeddings.
        trivial: (d,) trivial embedding t0 (mean of the stored per-run t0 vectors).
        domain: (n, p) domain embeddings (mean probe features), or None when not stored.
        probe, method, config_hash: which embedding runs these are.
    """

    task_ids: list[str]
    vectors: np.ndarray
    trivial: np.ndarray
    domain: np.ndarray | None
    probe: str = ""
    method: str = ""
    config_hash: str = ""

    @property
    def norms(self) -> np.ndarray:
        """L1 norm per task (paper Fig. 2 right: the task-complexity proxy)."""
        return np.abs(self.vectors).sum(axis=1)

    def rows(self, task_ids: list[str]) -> np.ndarray:
        """Indices of ``task_ids`` in this set (KeyError for an unknown id)."""
        index = {t: i for i, t in enumerate(self.task_ids)}
        return np.array([index[t] for t in task_ids], dtype=int)


def _stack(values: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float64) for v in values])


def _choose_run(ok: pd.DataFrame) -> pd.DataFrame:
    """Rows of one (probe, method, config_hash) group: the most complete one (most tasks), the newest of those
    (latest ``finished_at``); embeddings of different configs never mix. Says which when there was a choice."""
    keys = [k for k in ("probe", "method", "config_hash") if k in ok.columns]
    if not keys:
        return ok
    groups = ok.groupby(keys, dropna=False, sort=False)
    stats = pd.DataFrame({"tasks": groups["task_id"].nunique()})
    stats["newest"] = groups["finished_at"].max() if "finished_at" in ok.columns else 0
    stats = stats.sort_values(["tasks", "newest"], ascending=False, kind="stable")
    best = stats.index[0] if len(keys) > 1 else (stats.index[0],)
    if len(stats) > 1:
        log.warning(
            "embeddings hold %d runs; using %s (%d tasks, newest of the most complete)",
            len(stats),
            ", ".join(f"{k}={v}" for k, v in zip(keys, best, strict=True)),
            stats["tasks"].iloc[0],
        )
    mask = np.logical_and.reduce([ok[k] == v for k, v in zip(keys, best, strict=True)])
    return ok[mask]


def load_embeddings(
    uri: str, probe: str | None = None, method: str | None = None, config_hash: str | None = None
) -> EmbeddingSet:
    """Read ``embeddings.parquet``: ``ok`` rows of one run, one row per task (the last one wins), sorted by id."""
    df = storage.read_parquet(uri).to_pandas()
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    for key, value in (("probe", probe), ("method", method), ("config_hash", config_hash)):
        if value is not None:
            ok = ok[ok[key] == value]
    if ok.empty:
        raise ValueError(f"{uri}: no embeddings with status 'ok' (filters probe={probe}, method={method})")
    if "finished_at" in ok.columns:  # one row per task: the newest (e.g. after the task's data changed)
        ok = ok.sort_values("finished_at", kind="stable")
    ok = _choose_run(ok).drop_duplicates("task_id", keep="last").sort_values("task_id")
    vectors = _stack(ok["embedding"])
    if "trivial" in ok.columns and ok["trivial"].notna().all():
        trivial = _stack(ok["trivial"]).mean(axis=0)
    else:
        # Without t0, d_sym(F, 0) = 1 for every F: d_asym degenerates to d_sym minus a constant.
        log.warning("%s has no 'trivial' column: using t0 = 0 (asymmetric = symmetric Task2Vec)", uri)
        trivial = np.zeros(vectors.shape[1])
    domain = None
    if "domain" in ok.columns and ok["domain"].notna().all():
        domain = _stack(ok["domain"])
    first = ok.iloc[0]
    return EmbeddingSet(
        task_ids=[str(t) for t in ok["task_id"]],
        vectors=vectors,
        trivial=trivial,
        domain=domain,
        probe=str(first.get("probe", "")),
        method=str(first.get("method", "")),
        config_hash=str(first.get("config_hash", "")),
    )


def load_grid(uri: str) -> pd.DataFrame:
    """Read ``grid.parquet``, keeping rows with status ``ok`` and a finite test error."""
    df = storage.read_parquet(uri).to_pandas()
    if "status" in df.columns:
        df = df[df["status"] == "ok"]
    df = df[np.isfinite(df["test_error"].astype(float))]
    return df.assign(task_id=df["task_id"].astype(str), expert_id=df["expert_id"].astype(str))


def grid_matrix(grid: pd.DataFrame, task_ids: list[str], expert_ids: list[str], column: str) -> np.ndarray:
    """(n_tasks, n_experts) values of ``column`` (mean over repeated cells); NaN where the grid has no value."""
    table = grid.pivot_table(
        index="task_id", columns="expert_id", values=column, aggfunc="mean", dropna=False
    )
    return table.reindex(index=task_ids, columns=expert_ids).to_numpy(dtype=np.float64)


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


def load_specs(library_uri: str | None) -> dict[str, Any]:
    """task_id -> TaskSpec of the library (empty without a library)."""
    if library_uri is None:
        return {}
    from t2v_ray.data.library import TaskLibrary

    return {s.task_id: s for s in TaskLibrary.open(library_uri).tasks}


def task_group(spec: Any, task_id: str, level: int = 1) -> str:
    """Colour group of a task: its taxonomy node at ``level`` (e.g. the script family), else its dataset."""
    if spec is None:
        return task_id.split("/")[0].split(":")[0]
    tax = list(spec.taxonomy)
    return tax[level] if len(tax) > level else str(spec.dataset)
