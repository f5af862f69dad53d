"""Turn nested configs into MLflow params, tags and metrics that respect MLflow's limits.

Limits (``mlflow.utils.validation``, MLflow 3.17): a param value holds at most 6000 characters, a tag value
8000; one ``log_batch`` call carries at most 100 params + tags and 1000 metrics. They are copied here rather
than imported so that this module costs nothing to import on workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from t2v_ray.config import flatten
from t2v_ray.track.redact import redact, redact_text, secret_values

MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
TRUNCATION_MARK = "...[truncated]"

T = TypeVar("T")


def to_text(value: Any) -> str:
    """Render one value as MLflow stores it: strings as they are, containers as JSON, the rest via ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | dict | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return json.dumps(items, default=str, sort_keys=isinstance(value, dict))
    return str(value)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with ``TRUNCATION_MARK`` when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def _safe_strings(flat: Mapping[str, Any], limit: int) -> dict[str, str]:
    # Redact twice: structurally first (credential keys nested in list/dict values), then the rendered text
    # (a secret hidden in some object's str()).
    secrets = secret_values()
    rendered = {str(k): to_text(v) for k, v in redact(flat, secrets).items()}
    return {k: truncate(redact_text(v, secrets), limit) for k, v in rendered.items()}


def prepare_params(nested: Any) -> dict[str, str]:
    """Flatten, stringify, redact and truncate a (possibly nested) params mapping or dataclass."""
    return _safe_strings(flatten(nested), MAX_PARAM_VAL_LENGTH)


def prepare_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Stringify, redact and truncate tags (not flattened: tag keys are chosen by callers)."""
    return _safe_strings({k: v for k, v in (tags or {}).items() if v is not None}, MAX_TAG_VAL_LENGTH)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def metric_entities(
    metrics: Mapping[str, float] | None, step_metrics: Mapping[str, Sequence[float]] | None
) -> list[Any]:
    """MLflow ``Metric`` entities: scalars at step 0, each series at steps 0..n-1 (one shared timestamp)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = [Metric(str(k), float(v), now, 0) for k, v in (metrics or {}).items()]
    for key, series in (step_metrics or {}).items():
        out.extend(Metric(str(key), float(v), now, step) for step, v in enumerate(series))
    return out


__all__ = [
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_TAGS_PER_BATCH",
    "MAX_PARAM_VAL_LENGTH",
    "MAX_TAG_VAL_LENGTH",
    "chunked",
    "metric_entities",
    "prepare_params",
    "prepare_tags",
    "to_text",
    "truncate",
]
