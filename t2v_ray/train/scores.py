"""Transferability baselines of one (expert, task) pair from its cached features (paper §4.2, Table 1 rows).

LogME and H-score need the expert's features and the task labels; LEEP and NCE need the expert's own source-head
probabilities (NCE on their argmax), so they are NaN for an expert without a source head. All are computed on the
task's train split, as the methods prescribe (they score before any target training).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from t2v_ray.core.transfer import h_score, leep, logme, nce
from t2v_ray.train.extract import FeatureSet

SCORE_NAMES = ("logme", "leep", "nce", "h_score")


def _safe(fn: Callable[[], float]) -> float:
    # A degenerate split (one class, rank-0 features) makes a score undefined, not the whole pair broken.
    try:
        value = float(fn())
    except (ValueError, FloatingPointError, np.linalg.LinAlgError, ZeroDivisionError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def transfer_scores(train: FeatureSet) -> dict[str, float]:
    """``{"logme", "leep", "nce", "h_score"}`` of the expert on the task (higher = better; NaN when undefined)."""
    f, y, p = train.features, train.labels, train.source_probs
    if len(train) == 0:
        return dict.fromkeys(SCORE_NAMES, math.nan)
    with np.errstate(all="ignore"):
        return {
            "logme": _safe(lambda: logme(f, y)),
            "leep": _safe(lambda: leep(p, y)) if p is not None else math.nan,
            "nce": _safe(lambda: nce(p.argmax(axis=1), y)) if p is not None else math.nan,
            "h_score": _safe(lambda: h_score(f, y)),
        }
