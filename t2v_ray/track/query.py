"""Build MLflow search filters from simple ``{key: value}`` equalities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_PREFIXES = ("tags.", "params.", "metrics.", "attributes.", "attribute.", "run.")


def _quote_key(key: str) -> str:
    # Backticks let keys hold dots and dashes (``tags.`mlflow.parentRunId```); plain keys are tags.
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return f"{prefix}`{key[len(prefix) :]}`"
    return f"tags.`{key}`"


def _literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "'" + str(value).replace("'", "\\'") + "'"
    return repr(value)


def build_filter(filter: str | Mapping[str, Any]) -> str:
    """An MLflow filter string: a string is returned as is, a mapping becomes ``k1 = v1 AND k2 = v2``.

    Examples:
        ``{"task_id": "t1", "metrics.error": 0.5}`` -> ``tags.`task_id` = 't1' AND metrics.`error` = 0.5``.
    """
    if isinstance(filter, str):
        return filter
    return " AND ".join(f"{_quote_key(str(k))} = {_literal(v)}" for k, v in filter.items())
