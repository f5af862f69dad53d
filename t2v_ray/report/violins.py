"""Fig. 3 of the paper: per-task error distribution over the experts, with each selector's pick marked.

One column per task, ordered by the L1 norm of its embedding (simple tasks left). The shaded violin and the grey
points are the test errors of every allowed expert on that task; markers show which expert each selector chose.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from t2v_ray.report.evaluate import ASYM, GENERIC, MODEL2VEC, OPTIMAL, SelectionDetails
from t2v_ray.report.plotting import new_figure, short_label

# selector -> (marker, colour, size): the paper's red cross for Asymmetric TASK2VEC, blue triangle for ImageNet.
MARKERS = {
    OPTIMAL: ("*", "tab:green", 140),
    GENERIC: ("^", "tab:blue", 70),
    MODEL2VEC: ("D", "tab:purple", 45),
    ASYM: ("x", "tab:red", 80),
}


def column_order(norms: np.ndarray, max_tasks: int) -> np.ndarray:
    """Task indices by increasing norm; evenly spaced over that order when there are more than ``max_tasks``."""
    order = np.argsort(norms, kind="stable")
    if len(order) <= max_tasks:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, max_tasks).round().astype(int))]


def _violin(ax, values: list[np.ndarray], positions: np.ndarray) -> None:
    # gaussian_kde needs at least two distinct values; other columns show their points only.
    keep = [i for i, v in enumerate(values) if len(np.unique(v)) >= 2]
    if keep:
        parts = ax.violinplot(
            [values[i] for i in keep], positions=positions[keep], widths=0.8, showextrema=False
        )
        for body in parts["bodies"]:
            body.set_facecolor("0.75")
            body.set_alpha(0.6)
    rng = np.random.default_rng(0)
    for x, v in zip(positions, values, strict=True):
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(v)), v, s=7, color="0.35", alpha=0.7, zorder=2)


def fig_violins(details: SelectionDetails, max_tasks: int = 40) -> Figure:
    """Violins of per-task test error (%) across allowed experts, columns ordered by embedding norm."""
    norms = np.abs(details.task_vectors).sum(axis=1)
    cols = column_order(norms, max_tasks)
    err = 100 * details.errors
    values = [err[i][details.allowed[i]] for i in cols]
    pos = np.arange(len(cols))
    fig = new_figure(max(7.0, 0.45 * len(cols) + 3), 5.5)
    ax = fig.subplots()
    _violin(ax, values, pos)
    for name, (marker, colour, size) in MARKERS.items():
        if name in details.picks:
            picked = err[cols, details.picks[name][cols]]
            ax.scatter(pos, picked, marker=marker, s=size, color=colour, label=name, zorder=3, linewidths=2)
    ax.set_xticks(pos, [short_label(details.task_ids[i]) for i in cols], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(cols) - 0.3)
    ax.set_xlabel("task (ordered by L1 norm of the task embedding →)")
    ax.set_ylabel("test error (%)")
    ax.set_title(
        f"Error of every expert per task (protocol: {details.protocol}; "
        f"{len(cols)} of {len(details.task_ids)} tasks, {len(details.expert_ids)} experts)"
    )
    ax.legend(loc="upper left", fontsize=8, title="selected by")
    ax.grid(axis="y", alpha=0.3)
    return fig
