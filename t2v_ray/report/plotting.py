"""Shared figure plumbing: Agg-backed figures without pyplot state, PNG bytes, one colour per group."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless nodes and CI: never try to open a window

from matplotlib.figure import Figure  # noqa: E402

DPI = 120


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure not registered with pyplot, so report threads never share (or leak) global figure state."""
    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def group_colours(groups: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A stable colour per distinct group (sorted), from tab10 up to 10 groups, tab20 up to 20, then cycled."""
    names = sorted(set(groups))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {g: cmap(i % cmap.N) for i, g in enumerate(names)}


def short_label(task_id: str, width: int = 22) -> str:
    """A task id shortened for tick labels (keeps the tail, which usually names the leaf node)."""
    return task_id if len(task_id) <= width else "…" + task_id[-(width - 1) :]
