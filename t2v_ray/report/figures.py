"""Embedding-space figures in the style of the paper's Fig. 1 and Fig. 2.

Fig. 1: t-SNE of task embeddings (d_sym) next to t-SNE of domain embeddings (cosine), coloured by group.
Fig. 2: d_sym matrix ordered by hierarchical clustering with its dendrogram and a taxonomy colour bar; the
mean taxonomic distance of a task's k nearest neighbours as k grows; L1 norm of the embedding vs the error of
the best expert on the task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from t2v_ray.report.plotting import group_colours, new_figure, short_label


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """Pairwise cosine distances between rows (0 on the diagonal; zero rows are at distance 1 from others)."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def embed_2d(dist: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D coordinates from a distance matrix: t-SNE (precomputed metric), or classical MDS below 5 points.

    t-SNE needs perplexity < n; perplexity min(30, (n - 1) / 3) keeps about three neighbours' worth of mass.
    """
    d = np.asarray(dist, dtype=np.float64)
    n = len(d)
    if n < 5:
        j = np.eye(n) - 1.0 / n
        b = -0.5 * j @ (d**2) @ j
        vals, vecs = np.linalg.eigh(b)
        top = np.argsort(vals)[::-1][:2]
        out = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2,
        metric="precomputed",
        init="random",
        perplexity=min(30.0, max(2.0, (n - 1) / 3)),
        random_state=seed,
    )
    # A few hundred tasks take well under a second on one thread; OpenMP threads fighting over busy cores
    # made 12 tasks take 8-13 s here.
    with threadpool_limits(1 if n < 1000 else None):
        return tsne.fit_transform(d)


def _scatter_groups(ax, xy: np.ndarray, groups: Sequence[str], colours: dict, ticks: bool = False) -> None:
    for g in sorted(set(groups)):
        m = np.array([x == g for x in groups])
        ax.scatter(xy[m, 0], xy[m, 1], s=36, color=colours[g], label=g, edgecolor="white", linewidth=0.5)
    if not ticks:  # t-SNE axes carry no meaning
        ax.set_xticks([])
        ax.set_yticks([])


def fig_tsne(
    task_dist: np.ndarray, domain_dist: np.ndarray | None, groups: Sequence[str], seed: int = 0
) -> Figure:
    """Fig. 1: task embeddings (left) vs domain embeddings (right), one colour per group."""
    fig = new_figure(12, 5.5)
    axes = fig.subplots(1, 2)
    colours = group_colours(groups)
    _scatter_groups(axes[0], embed_2d(task_dist, seed), groups, colours)
    axes[0].set_title("Task embedding (TASK2VEC, d_sym)")
    if domain_dist is not None:
        _scatter_groups(axes[1], embed_2d(domain_dist, seed), groups, colours)
    else:
        axes[1].text(
            0.5, 0.5, "no domain embeddings stored", ha="center", va="center", transform=axes[1].transAxes
        )
        axes[1].set_xticks([])
        axes[1].set_yticks([])
    axes[1].set_title("Domain embedding (mean features, cosine)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="group", fontsize=8)
    fig.suptitle(f"t-SNE of {len(groups)} tasks")
    return fig


def cluster_tree(dist: np.ndarray) -> np.ndarray:
    """Average-linkage hierarchical clustering of a symmetric distance matrix (scipy linkage matrix)."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    d = np.asarray(dist, dtype=np.float64)
    return linkage(squareform((d + d.T) / 2, checks=False), method="average")


def cluster_order(dist: np.ndarray) -> np.ndarray:
    """Leaf order of :func:`cluster_tree` (the order the heatmap rows and columns are drawn in)."""
    from scipy.cluster.hierarchy import leaves_list

    if len(dist) < 2:
        return np.arange(len(dist))
    return leaves_list(cluster_tree(dist))


def fig_distance_matrix(dist: np.ndarray, groups: Sequence[str], labels: Sequence[str]) -> Figure:
    """Fig. 2 left: d_sym matrix ordered by the dendrogram, with a group colour bar along the rows."""
    from scipy.cluster.hierarchy import dendrogram

    n = len(dist)
    size = min(14.0, 5.0 + 0.18 * n)
    # Fixed axes rectangles (not a layout engine): the dendrogram leaves must sit exactly over the heatmap columns.
    fig = new_figure(size + 2.5, size + 1.5, layout=None)
    ax_bar, ax_heat = fig.add_axes((0.03, 0.1, 0.02, 0.68)), fig.add_axes((0.06, 0.1, 0.68, 0.68))
    ax_dend, ax_cb = fig.add_axes((0.06, 0.79, 0.68, 0.1)), fig.add_axes((0.9, 0.1, 0.02, 0.68))
    order = cluster_order(dist)
    if n >= 2:
        dendrogram(
            cluster_tree(dist), ax=ax_dend, no_labels=True, color_threshold=0, above_threshold_color="0.3"
        )
    ax_dend.set_xlim(0, 10 * n)  # scipy puts leaf i at x = 10 i + 5
    ax_dend.axis("off")
    im = ax_heat.imshow(
        np.asarray(dist)[np.ix_(order, order)], cmap="viridis_r", aspect="auto", interpolation="nearest"
    )
    colours = group_colours(groups)
    ax_bar.imshow(np.array([[colours[groups[i]] for i in order]]).transpose(1, 0, 2), aspect="auto")
    ax_bar.set_xticks([])
    ax_bar.set_yticks([])
    ticks = np.arange(n) if n <= 60 else []
    ax_heat.set_yticks(ticks, [short_label(labels[order[i]]) for i in ticks], fontsize=7)
    ax_heat.yaxis.tick_right()
    ax_heat.set_xticks([])
    ax_heat.set_xlabel("tasks (ordered by hierarchical clustering)")
    fig.colorbar(im, cax=ax_cb, label="d_sym")
    handles = [_patch(colours[g], g) for g in sorted(colours)]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, title="group (colour bar)"
    )
    fig.suptitle("Task distance matrix (TASK2VEC d_sym) with dendrogram", y=0.96)
    return fig


def _patch(colour, label):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, label=label)


def neighbourhood_curve(dist: np.ndarray, tax: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Mean over tasks of the mean taxonomic distance to its k nearest other tasks under ``dist``, per k.

    With ``dist = tax`` this is the oracle curve (the best any embedding can do); ties keep index order.
    """
    d = np.asarray(dist, dtype=np.float64).copy()
    np.fill_diagonal(d, np.inf)  # a task is never its own neighbour
    order = np.argsort(d, axis=1, kind="stable")[:, :-1]
    near = np.take_along_axis(np.asarray(tax, dtype=np.float64), order, axis=1)
    cum = np.cumsum(near, axis=1) / np.arange(1, near.shape[1] + 1)
    return np.array([cum[:, k - 1].mean() for k in ks])


def fig_taxonomy_curve(
    task_dist: np.ndarray, tax: np.ndarray, domain_dist: np.ndarray | None = None
) -> Figure:
    """Fig. 2 centre: taxonomic distance vs neighbourhood size for TASK2VEC, domain embedding, taxonomy, random."""
    n = len(tax)
    ks = np.arange(1, n)
    fig = new_figure(6.5, 4.8)
    ax = fig.subplots()
    # The oracle goes first, wide and translucent, so curves that match it stay visible on top of it.
    ax.plot(
        ks,
        neighbourhood_curve(tax, tax, ks),
        "-",
        color="tab:orange",
        lw=5,
        alpha=0.5,
        label="taxonomy (oracle)",
    )
    ax.plot(
        ks, neighbourhood_curve(task_dist, tax, ks), "o-", ms=3, color="tab:blue", label="TASK2VEC (d_sym)"
    )
    if domain_dist is not None:
        ax.plot(
            ks,
            neighbourhood_curve(domain_dist, tax, ks),
            "s--",
            ms=3,
            color="tab:green",
            label="domain embedding",
        )
    random = tax[~np.eye(n, dtype=bool)].mean()
    ax.axhline(random, ls="--", color="0.5", label="random neighbours")
    ax.set_xlabel("neighbourhood size k (tasks)")
    ax.set_ylabel("mean taxonomic distance to the k nearest tasks")
    ax.set_title("Task distance vs taxonomic distance")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman rho); NaN with fewer than 3 points or a constant input."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(x, y).statistic), float(spearmanr(x, y).statistic)


def fig_norm_vs_error(norms: np.ndarray, best_error: np.ndarray, groups: Sequence[str]) -> Figure:
    """Fig. 2 right: L1 norm of the task embedding vs the test error of the best expert, with correlations."""
    r, rho = correlations(norms, best_error)
    fig = new_figure(6.5, 4.8)
    ax = fig.subplots()
    xy = np.column_stack([norms, 100 * np.asarray(best_error)])
    _scatter_groups(ax, xy, groups, group_colours(groups), ticks=True)
    ax.set_xlabel("L1 norm of the task embedding")
    ax.set_ylabel("test error of the best expert (%)")
    ax.set_title(f"Embedding norm vs error  (Pearson r = {r:.2f}, Spearman ρ = {rho:.2f})")
    ax.legend(fontsize=8, title="group")
    ax.grid(alpha=0.3)
    return fig
