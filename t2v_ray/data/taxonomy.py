"""Taxonomic distance between tasks (paper §2), used to check that embedding distances follow the taxonomy.

A node is given by its path from the root, e.g. ``["glyphs", "European", "Latin"]``. The tree distance between
two nodes is the number of edges on the path joining them: ``len(a) + len(b) - 2 * len(common prefix)``.
Paper §2 defines the distance between two tasks as the minimum over pairs of their classes,
``d_tax(t_a, t_b) = min_{i in S_a, j in S_b} d(i, j)``, where a task's classes are the children of its node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def taxonomic_distance(tax_a: Sequence[str], tax_b: Sequence[str]) -> int:
    """Tree distance (edges) between two nodes given their root paths; 0 for the same node."""
    return len(tax_a) + len(tax_b) - 2 * _common_prefix(tax_a, tax_b)


def class_taxonomic_distance(
    tax_a: Sequence[str], classes_a: Sequence[str], tax_b: Sequence[str], classes_b: Sequence[str]
) -> int:
    """Paper §2: the minimum tree distance over pairs (class of a, class of b); classes hang under their task.

    Class ``c`` of a task at path ``p`` is the node ``p + [c]``. Without classes, the task node stands in.
    """
    nodes_a = [[*tax_a, c] for c in classes_a] or [list(tax_a)]
    nodes_b = [[*tax_b, c] for c in classes_b] or [list(tax_b)]
    return min(taxonomic_distance(x, y) for x in nodes_a for y in nodes_b)


def _path_and_classes(task: Any) -> tuple[list[str], list[str]]:
    if hasattr(task, "taxonomy"):
        return list(task.taxonomy), list(getattr(task, "classes", []))
    if isinstance(task, dict):
        return list(task["taxonomy"]), list(task.get("classes", []))
    return list(task), []


def taxonomy_matrix(tasks: Sequence[Any], level: str = "task") -> np.ndarray:
    """Pairwise taxonomic distances.

    Args:
        tasks: ``TaskSpec``s, dicts with ``taxonomy`` (and ``classes``), or bare root paths.
        level: ``"task"`` for the tree distance between task nodes, ``"class"`` for the paper's min over class
            pairs.

    Returns:
        A symmetric ``(n, n)`` int array with zeros on the diagonal.
    """
    if level not in ("task", "class"):
        raise ValueError(f"level must be 'task' or 'class', got {level!r}")
    items = [_path_and_classes(t) for t in tasks]
    n = len(items)
    out = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            (pa_, ca), (pb, cb) = items[i], items[j]
            d = taxonomic_distance(pa_, pb) if level == "task" else class_taxonomic_distance(pa_, ca, pb, cb)
            out[i, j] = out[j, i] = d
    return out
