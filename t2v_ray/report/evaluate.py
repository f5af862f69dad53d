"""Run every expert selector on stored embeddings and the ground-truth grid (paper §4.2, Table 1).

The math is in :mod:`t2v_ray.core.selection`; this module turns the stage outputs into its inputs:
    errors[i, j]          test error of a linear classifier for task i on expert j (grid.parquet)
    allowed[i, j]         protocol mask: "taxonomy" forbids the expert trained on task i's data, "mixed" allows all
    expert_task_embs[j]   embedding of expert j's source task (mean if several; NaN row for generic/unknown)
and returns Table 1 plus everything the figures need (:class:`SelectionDetails`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from t2v_ray.core import selection as sel
from t2v_ray.report.tasks import load_specs
from t2v_ray.results.embeddings import EmbeddingSet, load_embeddings
from t2v_ray.results.experts import load_experts
from t2v_ray.results.grid import grid_matrix, load_grid

log = logging.getLogger(__name__)

PROTOCOLS = ("taxonomy", "mixed")
OPTIMAL, CHANCE, GENERIC = "Optimal", "Chance", "Generic"
TASK2VEC, ASYM, ASYM_SWEEP, MODEL2VEC = (
    "Task2Vec",
    "Asymmetric Task2Vec",
    "Asym. Task2Vec (α sweep)",
    "MODEL2VEC",
)
TRANSFER_COLUMNS = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "h_score": "H-score"}
SELECTOR_ORDER = [OPTIMAL, CHANCE, GENERIC, TASK2VEC, ASYM, ASYM_SWEEP, MODEL2VEC, *TRANSFER_COLUMNS.values()]


@dataclass
class SelectionDetails:
    """Inputs and per-task outcomes of one evaluation (what the figures and the picks table are drawn from).

    Attributes:
        protocol, alpha: the protocol and the alpha of d_asym.
        task_ids, expert_ids: rows and columns of ``errors``.
        errors, allowed: (n, k) ground truth and protocol mask (NaN cells are never allowed).
        picks: selector -> (n,) index of the chosen expert (every selector but Chance).
        scores: selector -> (n, k) lower-is-better scores (transferability scores negated).
        chosen_alpha: (n,) alpha picked on held-in tasks by the sweep (empty when not run).
        alpha_curve: relative error increase of d_asym picks at each alpha of the sweep grid (diagnostic only:
            it looks at every task's error, so it must not be used to pick alpha).
        embeddings: every embedded task (also tasks outside the grid), for Fig. 1-2.
        expert_task_embs: (k, d) source-task embedding per expert.
        expert_sources: source task ids per expert.
        generic_index: column of the generic expert, or None.
        specs: task_id -> TaskSpec from the library (empty without one).
    """

    protocol: str
    alpha: float
    task_ids: list[str]
    expert_ids: list[str]
    errors: np.ndarray
    allowed: np.ndarray
    picks: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    chosen_alpha: np.ndarray
    alpha_curve: pd.DataFrame
    embeddings: EmbeddingSet
    expert_task_embs: np.ndarray
    expert_sources: list[list[str]]
    generic_index: int | None
    specs: dict[str, Any] = field(default_factory=dict)

    @property
    def task_vectors(self) -> np.ndarray:
        """(n, d) embeddings of the grid tasks, in ``task_ids`` order."""
        return self.embeddings.vectors[self.embeddings.rows(self.task_ids)]

    @property
    def optimal_errors(self) -> np.ndarray:
        """Best allowed error per task."""
        return self.errors[np.arange(len(self.task_ids)), self.picks[OPTIMAL]]

    def expert_margins(self) -> pd.DataFrame:
        """Per fine-tuned expert and source task in the grid: its error, the generic expert's, and the margin
        ``generic - expert`` (positive: the specialist wins on its own data). Empty without a generic expert."""
        cols = ["expert_id", "source_task", "expert_error", "generic_error", "margin"]
        if self.generic_index is None:
            return pd.DataFrame(columns=cols)
        index = {t: i for i, t in enumerate(self.task_ids)}
        rows = []
        for j, (expert, sources) in enumerate(zip(self.expert_ids, self.expert_sources, strict=True)):
            for task in sources or []:
                if j == self.generic_index or task not in index:
                    continue
                e, g = self.errors[index[task], j], self.errors[index[task], self.generic_index]
                rows.append(dict(zip(cols, [expert, task, e, g, g - e], strict=True)))
        return pd.DataFrame(rows, columns=cols)

    def per_task(self) -> pd.DataFrame:
        """Long table: one row per (task, selector) with the picked expert, its error and the optimal error."""
        n, opt = len(self.task_ids), self.optimal_errors
        rows = []
        for name, p in self.picks.items():
            err = self.errors[np.arange(n), p]
            for i in range(n):
                rows.append(
                    {
                        "task_id": self.task_ids[i],
                        "selector": name,
                        "expert_id": self.expert_ids[p[i]],
                        "error": err[i],
                        "optimal_error": opt[i],
                        "regret": err[i] - opt[i],
                    }
                )
        return pd.DataFrame(rows)


def expert_embeddings(sources: list[list[str]], emb: EmbeddingSet) -> np.ndarray:
    """(k, d) mean embedding of each expert's source tasks; NaN rows for experts without an embedded source."""
    index = {t: i for i, t in enumerate(emb.task_ids)}
    out = np.full((len(sources), emb.vectors.shape[1]), np.nan)
    for j, src in enumerate(sources):
        rows = [index[t] for t in src if t in index]
        if len(rows) < len(src):
            log.warning("expert %d: %d of its source tasks have no embedding", j, len(src) - len(rows))
        if rows:
            out[j] = emb.vectors[rows].mean(axis=0)
    return out


def protocol_mask(
    protocol: str, task_ids: list[str], sources: list[list[str]], errors: np.ndarray
) -> np.ndarray:
    """Allowed (task, expert) cells under ``protocol``, restricted to known grid cells."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    n, k = errors.shape
    mask = sel.loo_mask(task_ids, sources) if protocol == "taxonomy" else sel.mixed_mask(n, k)
    return mask & np.isfinite(errors)


# Below this many (task, expert, filter) entries a MODEL2VEC step is tiny and thread-pool overhead dominates it
# (5x slower on 2 busy cores); above it (EfficientNet-Lite0: 21,008 filters) 2 threads fit 2x faster (measured).
SMALL_FIT = 2_000_000


@contextlib.contextmanager
def fit_threads(n_entries: int) -> Iterator[None]:
    """One torch thread for small MODEL2VEC fits, every core (up to 8) for large ones.

    Set explicitly both ways: earlier stages in the same process (Ray drivers, actors' settings) may have left
    torch at one thread.
    """
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1 if n_entries < SMALL_FIT else max(1, min(8, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _selector_scores(
    vectors: np.ndarray,
    experts_emb: np.ndarray,
    t0: np.ndarray,
    errors: np.ndarray,
    mask: np.ndarray,
    alpha: float,
    model2vec: bool,
    model2vec_opts: dict[str, Any],
    includes_prior: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """Score matrices of the embedding-based selectors, the alpha-sweep picks and its per-task alpha.

    ``includes_prior``: the embeddings come from the variational estimator (they hold t0 already).
    """
    prior = {"includes_prior": includes_prior}
    scores: dict[str, np.ndarray] = {}
    sweep, chosen = None, np.array([])
    # Without a single expert whose source task is embedded, d_sym/d_asym have nothing to compare to.
    if np.isfinite(experts_emb).all(axis=1).any():
        scores[TASK2VEC] = sel.symmetric_scores(vectors, experts_emb)
        scores[ASYM] = sel.asymmetric_scores(vectors, experts_emb, t0, alpha, **prior)
        if len(vectors) >= 2:
            sweep, chosen = sel.sweep_alpha(vectors, experts_emb, t0, errors, mask, **prior)
    if model2vec and len(vectors) >= 3:
        with fit_threads(errors.size * vectors.shape[1]):
            scores[MODEL2VEC] = sel.loo_model2vec(
                vectors, errors, experts_emb, t0, alpha, allowed=mask, **prior, **model2vec_opts
            )
    return scores, sweep, chosen


def _transfer_scores(grid: pd.DataFrame, task_ids: list[str], expert_ids: list[str]) -> dict[str, np.ndarray]:
    """Higher-is-better transferability matrices for the columns the grid holds (skipped when all NaN)."""
    out = {}
    for column, name in TRANSFER_COLUMNS.items():
        if column in grid.columns:
            m = grid_matrix(grid, task_ids, expert_ids, column)
            if np.isfinite(m).any():
                out[name] = m
    return out


def _alpha_curve(vectors, experts_emb, t0, errors, mask, includes_prior: bool = False) -> pd.DataFrame:
    opt = errors[np.arange(len(errors)), sel.oracle_picks(errors, mask)]
    rows = []
    for a in sel.DEFAULT_ALPHAS:
        p = sel.pick_lowest(sel.asymmetric_scores(vectors, experts_emb, t0, float(a), includes_prior), mask)
        rows.append(
            {"alpha": float(a), "rel_increase": errors[np.arange(len(errors)), p].mean() / opt.mean() - 1}
        )
    return pd.DataFrame(rows)


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(SELECTOR_ORDER)}
    key = table["selector"].map(lambda s: rank.get(s, len(rank)))
    return table.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def _ground_truth(
    emb: EmbeddingSet, grid: pd.DataFrame, expert_ids: list[str], sources: list[list[str]], protocol: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tasks both embedded and in the grid (sorted), their error matrix and protocol mask.

    Tasks without a single allowed expert are dropped (with a warning): no selector can serve them.
    """
    task_ids = sorted(set(emb.task_ids) & set(grid["task_id"]))
    if not task_ids:
        raise ValueError("no task is both embedded and in the grid")
    errors = grid_matrix(grid, task_ids, expert_ids, "test_error")
    mask = protocol_mask(protocol, task_ids, sources, errors)
    ok = mask.any(axis=1)
    if not ok.all():
        log.warning("dropping %d task(s) with no allowed expert in the grid", int((~ok).sum()))
    return [t for t, keep in zip(task_ids, ok, strict=True) if keep], errors[ok], mask[ok]


def _test_counts(grid: pd.DataFrame, task_ids: list[str], expert_ids: list[str], mask: np.ndarray):
    """(n, k) test images behind each allowed grid cell, or None when the grid does not record them (then
    the bootstrap resamples tasks only).

    Raises:
        ValueError: naming the first (task, expert) cell whose count is missing or below 1.
    """
    if "n_test" not in grid.columns or grid["n_test"].isna().all():
        log.warning("the grid has no n_test column: Table 1's intervals resample tasks only, not test images")
        return None
    counts = grid_matrix(grid, task_ids, expert_ids, "n_test")
    bad = mask & ~(np.isfinite(counts) & (counts >= 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"grid row (expert {expert_ids[j]!r}, task {task_ids[i]!r}): n_test = {counts[i, j]}; every "
            "grid row needs the size of its test set (rerun the grid for that pair)"
        )
    return counts


def _generic_index(experts: pd.DataFrame, mask: np.ndarray) -> int | None:
    """Column of the generic expert; None without one, or when it lacks grid cells (it could not serve all)."""
    generic = [j for j, g in enumerate(experts["is_generic"]) if g]
    if not generic:
        return None
    if not mask[:, generic[0]].all():
        log.warning("the generic expert lacks grid cells for some tasks: no Generic row")
        return None
    return generic[0]


def evaluate_selection(
    embeddings_uri: str,
    grid_uri: str,
    experts_uri: str | None,
    library_uri: str | None = None,
    protocol: str = "taxonomy",
    alpha: float = 0.15,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    model2vec: bool = True,
    model2vec_opts: dict[str, Any] | None = None,
    model2vec_folds: int = 0,
    probe: str | None = None,
    method: str | None = None,
) -> tuple[pd.DataFrame, SelectionDetails]:
    """Table 1 for the stored results, with bootstrap intervals, and the per-task picks behind it.

    The intervals resample tasks and each grid cell's test images (binomial, from the grid's ``n_test``).

    Tasks are those both embedded and in the grid; experts those in the grid. Selectors: Optimal, Chance,
    Generic (when ``experts.parquet`` marks one), Task2Vec (d_sym to the expert's source task), Asymmetric
    Task2Vec (d_asym at ``alpha``, and with alpha chosen on held-in tasks), MODEL2VEC (leave-one-out) and the
    transferability columns of the grid (LogME, LEEP, NCE, H-score) when present.

    Returns:
        ``(table, details)``: the rows of ``core.selection.evaluate_selectors`` in Table 1 order, and
        :class:`SelectionDetails`.
    """
    emb = load_embeddings(embeddings_uri, probe=probe, method=method)
    grid = load_grid(grid_uri)
    experts = load_experts(experts_uri, grid)
    expert_ids = list(experts["expert_id"])
    sources = [list(s) for s in experts["source_tasks"]]
    task_ids, errors, mask = _ground_truth(emb, grid, expert_ids, sources, protocol)
    vectors = emb.vectors[emb.rows(task_ids)]
    experts_emb = expert_embeddings(sources, emb)
    generic = _generic_index(experts, mask)
    picks = {GENERIC: sel.generic_picks(len(task_ids), generic)} if generic is not None else {}
    includes_prior = emb.method == "variational"  # its embeddings are (β/2N)Λ ≈ F + t0
    scores, sweep, chosen = _selector_scores(
        vectors, experts_emb, emb.trivial, errors, mask, alpha, model2vec,
        {**(model2vec_opts or {}), "folds": model2vec_folds},
        includes_prior,
    )  # fmt: skip
    transfer = _transfer_scores(grid, task_ids, expert_ids)
    if sweep is not None:
        picks[ASYM_SWEEP] = sweep
    table = sel.evaluate_selectors(
        errors,
        mask,
        picks=picks,
        scores=scores,
        transfer_scores=transfer,
        n_test=_test_counts(grid, task_ids, expert_ids, mask),
        n_boot=n_boot,
        seed=seed,
    )
    all_scores = {**scores, **{k: -v for k, v in transfer.items()}}
    all_picks = {OPTIMAL: sel.oracle_picks(errors, mask), **picks}
    all_picks.update({k: sel.pick_lowest(s, mask) for k, s in all_scores.items()})
    curve = (
        _alpha_curve(vectors, experts_emb, emb.trivial, errors, mask, includes_prior)
        if TASK2VEC in scores
        else pd.DataFrame()
    )
    details = SelectionDetails(
        protocol=protocol,
        alpha=alpha,
        task_ids=task_ids,
        expert_ids=expert_ids,
        errors=errors,
        allowed=mask,
        picks=all_picks,
        scores=all_scores,
        chosen_alpha=chosen,
        alpha_curve=curve,
        embeddings=emb,
        expert_task_embs=experts_emb,
        expert_sources=sources,
        generic_index=generic,
        specs=load_specs(library_uri),
    )
    return _ordered(table), details
