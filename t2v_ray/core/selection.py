"""Expert selection and its evaluation on a ground-truth grid (paper §4.2, Table 1; supplement §4.3).

Every selector is scored on the same matrix ``errors`` (n_tasks, n_experts): the test error of a classifier
trained for task i on top of expert j. ``allowed`` (n_tasks, n_experts) says which experts a selector may pick
for a task: the "taxonomy" protocol forbids the expert trained on the task itself (``loo_mask``), "mixed" allows
all (``mixed_mask``). Unknown grid entries (NaN) are never allowed. Score matrices are "lower = better"
(distances); transferability scores (higher = better) are negated by ``evaluate_selectors``.

Uncertainty (``bootstrap_errors``): each error is a fraction of a finite test set, so Table 1's intervals
resample both the tasks and, given ``n_test``, each (task, expert) error's test images (a parametric binomial
bootstrap); every selector is scored on the same draws, so differences between rows stay paired.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import weightedtau

from t2v_ray.core.distance import cross_complexity, cross_symmetric
from t2v_ray.core.model2vec import fit_model2vec

DEFAULT_ALPHAS = np.round(np.linspace(0.0, 1.0, 21), 10)


def mixed_mask(n_tasks: int, n_experts: int) -> np.ndarray:
    """'Mixed' protocol: every expert may serve every task."""
    return np.ones((n_tasks, n_experts), dtype=bool)


def loo_mask(
    task_ids: Sequence[str], expert_source_tasks: Sequence[str | Collection[str] | None]
) -> np.ndarray:
    """'Taxonomy' protocol: allowed[i, j] is False when expert j was trained on task i's data.

    ``expert_source_tasks[j]`` is the id of the task expert j was trained on, a collection of ids when it was
    trained on a group of tasks (e.g. a parent node containing task i), or None when unknown (e.g. ImageNet).
    """
    sources = [set() if s is None else {s} if isinstance(s, str) else set(s) for s in expert_source_tasks]
    return np.array([[t not in src for src in sources] for t in task_ids], dtype=bool).reshape(
        len(task_ids), -1
    )


def _allowed(errors: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    mask = np.isfinite(errors) if allowed is None else np.asarray(allowed, dtype=bool) & np.isfinite(errors)
    if not mask.any(axis=1).all():
        raise ValueError("every task needs at least one allowed expert with a finite error")
    return mask


def pick_lowest(scores: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """argmin_j scores[i, j] over the allowed experts (NaN scores never win; ties -> lowest index)."""
    s = np.where(np.isnan(scores), np.inf, np.asarray(scores, dtype=np.float64))
    if allowed is not None:
        s = np.where(allowed, s, np.inf)
    # If every allowed score is +inf, argmin over the masked row would return a disallowed 0: fall back explicitly.
    first_allowed = np.argmax(allowed, axis=1) if allowed is not None else np.zeros(len(s), dtype=int)
    return np.where(np.isfinite(s).any(axis=1), s.argmin(axis=1), first_allowed)


def oracle_picks(errors: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """The optimal expert per task: exhaustive search over the grid (Table 1, 'Optimal')."""
    err = np.asarray(errors, dtype=np.float64)
    return pick_lowest(err, _allowed(err, allowed))


def chance_errors(errors: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Expected error of a uniformly random allowed expert, per task: mean_j over allowed of errors[i, j]."""
    err = np.asarray(errors, dtype=np.float64)
    mask = _allowed(err, allowed)
    return np.where(mask, err, 0.0).sum(axis=1) / mask.sum(axis=1)


def generic_picks(n_tasks: int, index: int) -> np.ndarray:
    """Always the same generic expert (Table 1, 'ImageNet')."""
    return np.full(n_tasks, int(index))


def _known(expert_task_embs: np.ndarray) -> np.ndarray:
    e = np.asarray(expert_task_embs, dtype=np.float64)
    return np.isfinite(e).all(axis=1) & (np.nan_to_num(e) > 0).any(axis=1)


def symmetric_scores(task_embs: np.ndarray, expert_task_embs: np.ndarray) -> np.ndarray:
    """S[i, j] = d_sym(t_i, F_j) (paper §3.3); +inf for experts whose training task is unknown."""
    tasks = np.asarray(task_embs, dtype=np.float64)
    experts = np.nan_to_num(np.asarray(expert_task_embs, dtype=np.float64))
    return np.where(_known(expert_task_embs)[None, :], cross_symmetric(tasks, experts), np.inf)


def _complexity(expert_task_embs: np.ndarray, t0: np.ndarray, includes_prior: bool = False) -> np.ndarray:
    """Distance of each expert's source task from t0 (``distance.complexity``): how 'complex' it is."""
    return cross_complexity(np.nan_to_num(expert_task_embs), t0, includes_prior)


def asymmetric_scores(
    task_embs: np.ndarray,
    expert_task_embs: np.ndarray,
    t0: np.ndarray,
    alpha: float = 0.15,
    includes_prior: bool = False,
) -> np.ndarray:
    """A[i, j] = d_asym(F_j -> t_i) = d_sym(F_j, t_i) - alpha complexity(F_j): expert's task as the source (§3.3).

    ``includes_prior``: the embeddings hold the prior t0 already (variational estimator; see
    ``distance.complexity``).
    """
    triv = _complexity(expert_task_embs, t0, includes_prior)
    return symmetric_scores(task_embs, expert_task_embs) - alpha * triv[None, :]


def sweep_alpha(
    task_embs: np.ndarray,
    expert_task_embs: np.ndarray,
    t0: np.ndarray,
    errors: np.ndarray,
    allowed: np.ndarray | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    includes_prior: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric Task2Vec with alpha chosen on held-in tasks only.

    For each task i, alpha_i = argmin over ``alphas`` of the mean error of the d_asym picks on the other tasks
    (ties -> the first alpha in the grid); task i is then served by its d_asym pick at alpha_i. Task i's own
    errors never influence alpha_i.

    Returns:
        picks (n,) and the chosen alpha per task (n,).
    """
    err = np.asarray(errors, dtype=np.float64)
    mask = _allowed(err, allowed)
    n = len(err)
    if n < 2:
        raise ValueError("choosing alpha on held-in tasks needs at least two tasks")
    sym = symmetric_scores(task_embs, expert_task_embs)
    triv = _complexity(expert_task_embs, t0, includes_prior)
    picks = np.stack([pick_lowest(sym - a * triv[None, :], mask) for a in alphas])  # (n_alpha, n)
    picked_err = err[np.arange(n)[None, :], picks]
    held_in_mean = (picked_err.sum(axis=1, keepdims=True) - picked_err) / (n - 1)  # leave task i out
    best = held_in_mean.argmin(axis=0)
    return picks[best, np.arange(n)], np.asarray(alphas, dtype=np.float64)[best]


def cross_fit_folds(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Task indices of each held-out fold: ``folds`` <= 0 or >= n gives leave-one-out (n folds of one task);
    otherwise a seeded permutation dealt round-robin into ``folds`` folds of near-equal size."""
    if folds <= 0 or folds >= n:
        return [np.array([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[f::folds]) for f in range(folds)]


def loo_model2vec(
    task_embs: np.ndarray,
    errors: np.ndarray,
    expert_task_embs: np.ndarray,
    t0: np.ndarray,
    alpha_asym: float = 0.15,
    allowed: np.ndarray | None = None,
    includes_prior: bool = False,
    folds: int = 0,
    **opts,
) -> np.ndarray:
    """Out-of-fold MODEL2VEC scores (supplement §4.3): row i comes from a fit on tasks that exclude task i.

    ``folds = 0`` (default): leave-one-out, one fit per task, as in the paper. ``folds = K``: K-fold
    cross-fitting, each fold's tasks scored by a fit on the other K - 1 folds (:func:`cross_fit_folds`): K fits
    instead of n, each on a fraction (K - 1) / K of the tasks; task i's errors still never reach its own fit.

    Returns:
        (n, k) d_asym(m_j -> t_i), lower = better; ``opts`` go to ``fit_model2vec``.
    """
    tasks = np.asarray(task_embs, dtype=np.float64)
    err = np.asarray(errors, dtype=np.float64)
    mask = _allowed(err, allowed)
    out = np.empty_like(err)
    for held in cross_fit_folds(len(tasks), folds):
        rest = np.ones(len(tasks), dtype=bool)
        rest[held] = False
        model = fit_model2vec(
            tasks[rest], err[rest], expert_task_embs, t0, alpha_asym, allowed=mask[rest],
            includes_prior=includes_prior, **opts,
        )  # fmt: skip
        out[held] = model.scores(tasks[held])
    return out


def binomial_se(error: np.ndarray | float, n_test: np.ndarray | int) -> np.ndarray:
    """Standard error of an error rate measured on ``n_test`` test images: sqrt(e (1 - e) / n); NaN for n < 1."""
    e, n = np.asarray(error, dtype=np.float64), np.asarray(n_test, dtype=np.float64)
    return np.sqrt(np.divide(e * (1.0 - e), n, out=np.full(np.broadcast(e, n).shape, np.nan), where=n >= 1))


@dataclass(frozen=True)
class BootstrapDraws:
    """Resampled ground truth that every selector is scored on.

    Attributes:
        tasks: (B, n) task rows drawn with replacement, one resample of the n tasks per draw.
        errors: (B, n, k) errors of those rows: the measured ones, or binomial resamples of their test sets.
    """

    tasks: np.ndarray
    errors: np.ndarray


def _test_counts(n_test: np.ndarray, errors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``n_test`` as an (n, k) integer matrix (a per-task vector is broadcast over experts); 1 off ``mask``."""
    n = np.asarray(n_test, dtype=np.float64)
    if n.shape not in ((len(errors),), errors.shape):
        raise ValueError(
            f"n_test has shape {n.shape}; need ({len(errors)},) or {errors.shape} like the errors"
        )
    n = np.broadcast_to(n[:, None], errors.shape) if n.ndim == 1 else n
    bad = mask & ~(np.isfinite(n) & (n >= 1) & (n == np.round(n)))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"n_test[{i}, {j}] = {n[i, j]} (task row {i}, expert column {j}): need a positive integer count "
            "of test images for every allowed grid cell"
        )
    return np.where(mask, n, 1).astype(np.int64)


def bootstrap_errors(
    errors: np.ndarray,
    n_test: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    allowed: np.ndarray | None = None,
) -> BootstrapDraws:
    """B resamples of the ground truth: tasks with replacement and, given ``n_test``, each error's test set.

    Draw b takes task rows t = tasks[b] (uniform, with replacement) and, when ``n_test`` is given,
    errors[b, i, j] = Binomial(n_test[t_i, j], e[t_i, j]) / n_test[t_i, j], independently per cell and draw: the
    error a classifier with true error e would show on a fresh test set of the same size. Without ``n_test``
    the errors are the measured ones (a bootstrap over tasks only). Cells outside ``allowed`` (or NaN) stay NaN.

    Args:
        errors: (n, k) measured test errors.
        n_test: (n,) test images per task, or (n, k) per cell; None: resample tasks only.
        n_boot: number of draws B.
        seed: seeds the task draws and the binomial draws.
        allowed: cells that may be used (default: the finite ones).
    """
    err = np.asarray(errors, dtype=np.float64)
    mask = _allowed(err, allowed)
    rng = np.random.default_rng(seed)
    tasks = rng.integers(0, len(err), size=(n_boot, len(err)))
    if n_test is None:
        return BootstrapDraws(tasks, np.where(mask, err, np.nan)[tasks])
    if not (np.all((err[mask] >= 0) & (err[mask] <= 1))):
        raise ValueError("errors must lie in [0, 1] to be resampled as binomial test-set errors")
    counts = _test_counts(n_test, err, mask)
    p, n = np.where(mask, err, 0.0)[tasks], counts[tasks]
    resampled = rng.binomial(n, p) / n
    return BootstrapDraws(tasks, np.where(mask[tasks], resampled, np.nan))


def _top3_hits(err: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """H[i, j]: expert j is among task i's 3 best allowed, i.e. fewer than 3 allowed experts are strictly better."""
    e = np.where(mask, err, np.inf)
    better = (e[:, None, :] < e[:, :, None]).sum(axis=2)
    return better < 3


def _kendall(scores: np.ndarray, err: np.ndarray, mask: np.ndarray) -> float:
    """Mean over tasks of weightedtau(-score, -error) on the allowed experts.

    Both arguments are negated so that "higher = better" for each and scipy's hyperbolic weights emphasise the
    best experts; +1 = the predicted ranking matches the true one. Non-finite scores rank last.
    """
    taus = []
    for s, e, m in zip(scores, err, mask, strict=True):
        s, e = s[m], e[m]
        if len(s) < 2 or np.ptp(e) == 0:
            continue
        finite = np.isfinite(s)
        s = np.where(finite, s, (s[finite].max() + 1.0) if finite.any() else 0.0)
        tau = weightedtau(-s, -e).statistic
        if np.isfinite(tau):
            taus.append(tau)
    return float(np.mean(taus)) if taus else float("nan")


def _ratio_of_means(sel: np.ndarray, opt: np.ndarray) -> np.ndarray:
    """mean(sel) / mean(opt) - 1 along the last axis; NaN when the optimal mean is 0."""
    m_sel, m_opt = sel.mean(axis=-1), opt.mean(axis=-1)
    return np.divide(m_sel, m_opt, out=np.full_like(m_sel, np.nan), where=m_opt > 0) - 1.0


def _row(name, sel_err, sel_boot, hits, opt, opt_boot, kendall, ci, err_floor) -> dict:
    # Per-task reading: (e_sel - e_opt) / max(e_opt, err_floor) equals e_sel/e_opt - 1 whenever e_opt >= floor and
    # stays finite (and 0 for a matched pick) on tasks the optimal expert solves perfectly.
    stats = _ratio_of_means(sel_boot, opt_boot)
    lo, hi = (
        np.nanpercentile(stats, [50 * (1 - ci), 50 * (1 + ci)]) if np.isfinite(stats).any() else (np.nan,) * 2
    )
    return {
        "selector": name,
        "mean_error": float(sel_err.mean()),
        "mean_error_se": float(sel_boot.mean(axis=1).std()) if len(sel_boot) > 1 else float("nan"),
        "rel_increase": float(_ratio_of_means(sel_err, opt)),
        "rel_increase_lo": float(lo),
        "rel_increase_hi": float(hi),
        "mean_rel_increase": float(np.mean((sel_err - opt) / np.maximum(opt, err_floor))),
        "regret": float(np.mean(sel_err - opt)),
        "top3": float(np.mean(hits)),
        "kendall_tau": kendall,
        "n_tasks": len(sel_err),
    }


def evaluate_selectors(
    errors: np.ndarray,
    allowed: np.ndarray | None = None,
    picks: Mapping[str, np.ndarray] | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
    transfer_scores: Mapping[str, np.ndarray] | None = None,
    *,
    include_optimal: bool = True,
    include_chance: bool = True,
    n_test: np.ndarray | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    err_floor: float = 1e-3,
) -> pd.DataFrame:
    """Table 1: one row per selector, all scored on the same grid and protocol.

    Metrics, with e_sel / e_opt the selected / optimal allowed error per task:
        rel_increase: mean(e_sel) / mean(e_opt) - 1 (the paper's Table 1 reading), with a percentile bootstrap
            ``ci`` interval (``n_boot`` draws of :func:`bootstrap_errors`, ``seed``; the same draws for every
            row). A draw resamples the tasks and, given ``n_test``, every error's test set; every row keeps its
            picks, Optimal's included (the alpha sweep and MODEL2VEC are not refitted per draw), so a row that
            matches Optimal's picks has the interval [0, 0] and differences between rows stay paired. Searching
            the optimum again in every draw would centre the intervals above the estimate: the minimum of noisy
            errors is biased low (with 200 test images and experts a few points apart, Chance's interval
            excluded its own estimate), and the estimate itself carries that bias once already.
        mean_error_se: the bootstrap standard deviation of mean(e_sel) over the same draws.
        mean_rel_increase: mean_i (e_sel - e_opt) / max(e_opt, err_floor): the per-task reading; the floor
            (in error units, default 0.1 %) only matters for tasks with e_opt < err_floor.
        vs_generic (and _lo, _hi): mean(e_sel) - mean(e_generic) with its paired bootstrap interval, when a
            'Generic' row is given (``_with_paired_difference``); an interval below 0 means "beats Generic".
        regret: mean(e_sel - e_opt). top3: fraction of tasks whose pick is among the 3 best allowed (ties count
            as hits). kendall_tau: see ``_kendall`` (NaN for selectors given as picks only).
    Chance uses expectations over a uniformly random allowed expert for error and top-3.

    Args:
        picks: name -> (n,) chosen expert per task (e.g. 'Generic', 'Asymmetric Task2Vec (swept alpha)').
        scores: name -> (n, k) lower-is-better scores (distances); the pick is the allowed argmin.
        transfer_scores: name -> (n, k) higher-is-better scores (LogME, LEEP, NCE, H-score).
        n_test: (n,) test images per task or (n, k) per cell (``bootstrap_errors``); None: tasks only.
    """
    err = np.asarray(errors, dtype=np.float64)
    mask = _allowed(err, allowed)
    n = len(err)
    hits = _top3_hits(err, mask)
    opt_pick = pick_lowest(err, mask)
    opt = err[np.arange(n), opt_pick]
    draws = bootstrap_errors(err, n_test, n_boot, seed, mask)
    rows, boots = [], {}

    def add(name: str, sel_err: np.ndarray, sel_boot: np.ndarray, sel_hits: np.ndarray, tau: float) -> None:
        rows.append(_row(name, sel_err, sel_boot, sel_hits, opt, opt_boot, tau, ci, err_floor))
        boots[name] = (sel_err, sel_boot)

    def boot_of(p: np.ndarray) -> np.ndarray:
        return np.take_along_axis(draws.errors, p[draws.tasks][..., None], axis=2)[..., 0]

    opt_boot = boot_of(opt_pick)

    if include_optimal:
        add("Optimal", opt, opt_boot, hits[np.arange(n), opt_pick], _kendall(err, err, mask))
    if include_chance:
        chance_boot = (
            np.where(mask[draws.tasks], draws.errors, 0.0).sum(axis=2) / mask.sum(axis=1)[draws.tasks]
        )
        chance_hits = (hits & mask).sum(1) / mask.sum(1)
        add("Chance", chance_errors(err, mask), chance_boot, chance_hits, float("nan"))
    for name, p in (picks or {}).items():
        p = np.asarray(p, dtype=int)
        if not mask[np.arange(n), p].all():
            raise ValueError(f"selector {name!r} picked an expert that is not allowed for some task")
        add(name, err[np.arange(n), p], boot_of(p), hits[np.arange(n), p], float("nan"))
    lower = dict(scores or {})
    lower.update({k: -np.asarray(v, dtype=np.float64) for k, v in (transfer_scores or {}).items()})
    for name, s in lower.items():
        p = pick_lowest(s, mask)
        tau = _kendall(np.asarray(s, np.float64), err, mask)
        add(name, err[np.arange(n), p], boot_of(p), hits[np.arange(n), p], tau)
    return _with_paired_difference(pd.DataFrame(rows), boots, ci, reference="Generic")


def _with_paired_difference(table: pd.DataFrame, boots: dict, ci: float, reference: str) -> pd.DataFrame:
    """Columns ``vs_<ref>``, ``vs_<ref>_lo``, ``vs_<ref>_hi``: mean(e_sel) - mean(e_ref) and its percentile interval
    over the same bootstrap draws (paired: each draw scores both rows on the same tasks and test sets), so an
    interval that excludes 0 orders the two selectors. NaN when there is no ``reference`` row."""
    key = "vs_" + reference.lower()
    if reference not in boots:
        return table.assign(**{key: np.nan, f"{key}_lo": np.nan, f"{key}_hi": np.nan})
    ref_err, ref_boot = boots[reference]
    est, lo, hi = [], [], []
    for name in table["selector"]:
        sel_err, sel_boot = boots[name]
        diff = sel_boot.mean(axis=1) - ref_boot.mean(axis=1)
        est.append(float(sel_err.mean() - ref_err.mean()))
        q = np.nanpercentile(diff, [50 * (1 - ci), 50 * (1 + ci)]) if len(diff) > 1 else (np.nan, np.nan)
        lo.append(float(q[0]))
        hi.append(float(q[1]))
    return table.assign(**{key: est, f"{key}_lo": lo, f"{key}_hi": hi})
