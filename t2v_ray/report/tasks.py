"""The library's view that reports need: task specs by id, and the colour group of a task in the figures."""

from __future__ import annotations

from typing import Any


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
