"""Names and locations: experiment names, run names, identifying tags, tracking URI and artifact roots.

Conventions (DESIGN.md, "Embeddings and results"):

- one experiment per library and stage: ``t2v/<library>/<stage>``, ``<library>`` being the last path component
  of the library URI;
- identifying tags ``stage``, ``task_id``, ``expert_id``, ``probe``, each its own key (STACK pitfall 14: a tuple
  would be logged as one opaque string and could not be filtered on);
- embedded default: ``sqlite:///<data dir>/mlflow.db`` with artifacts under ``<data dir>/mlartifacts``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

STAGES = ("embed", "experts", "grid", "select")

TAG_STAGE = "stage"
TAG_TASK_ID = "task_id"
TAG_EXPERT_ID = "expert_id"
TAG_PROBE = "probe"

DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"

_MAX_RUN_NAME = 250
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def library_name(library_uri: str) -> str:
    """Last path component of a library URI (``s3://b/libs/glyphs/`` -> ``glyphs``; ``s3://b`` -> ``b``)."""
    parsed = urlparse(str(library_uri))
    path = parsed.path if parsed.scheme and len(parsed.scheme) > 1 else str(library_uri)
    name = Path(path.rstrip("/\\")).name or parsed.netloc
    if not name:
        raise ValueError(f"cannot derive a library name from {library_uri!r}")
    return name


def experiment_name(library_uri: str, stage: str) -> str:
    """MLflow experiment for one stage of one library: ``t2v/<library>/<stage>``.

    Args:
        library_uri: Library folder or URI (plain path, ``file://``, ``s3://``).
        stage: Pipeline stage; usually one of ``STAGES``.

    Returns:
        The experiment name.
    """
    if not stage or "/" in stage:
        raise ValueError(f"stage must be a non-empty name without '/', got {stage!r}")
    return f"t2v/{library_name(library_uri)}/{stage}"


def run_tags(
    stage: str | None = None,
    *,
    task_id: str | None = None,
    expert_id: str | None = None,
    probe: str | None = None,
    **extra: object,
) -> dict[str, str]:
    """Identifying tags for a run, one key per identifier (also usable as params); ``None`` values are left out."""
    ids = {TAG_STAGE: stage, TAG_TASK_ID: task_id, TAG_EXPERT_ID: expert_id, TAG_PROBE: probe, **extra}
    return {k: str(v) for k, v in ids.items() if v is not None}


def run_name(
    stage: str,
    *,
    task_id: str | None = None,
    expert_id: str | None = None,
    probe: str | None = None,
) -> str:
    """Human-readable run name, e.g. ``embed:resnet34:cub-birds`` or ``grid:expert-3:cub-birds``.

    Order is stage, probe, expert, task so that runs sort by what produced them. Names are for people; filter
    on the tags from :func:`run_tags`, never on names.
    """
    parts = [stage, probe, expert_id, task_id]
    return ":".join(str(p) for p in parts if p is not None)[:_MAX_RUN_NAME]


def default_tracking_uri(data_dir: str | os.PathLike[str]) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded default ``sqlite:///<abs data_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / DB_FILENAME}"


def default_artifact_root(data_dir: str | os.PathLike[str]) -> str:
    """Artifact root of the embedded default: ``<abs data_dir>/mlartifacts``."""
    return str(Path(data_dir).expanduser().resolve() / ARTIFACTS_DIRNAME)


def sqlite_path(tracking_uri: str) -> Path | None:
    """Database file of a ``sqlite:///`` URI (absolute), or ``None`` for any other URI.

    ``sqlite:///rel.db`` is relative to the cwd and ``sqlite:////abs.db`` absolute (SQLAlchemy's convention).
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    raw = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not raw or raw == ":memory:":
        raise ValueError(f"in-memory sqlite cannot hold MLflow runs across processes: {tracking_uri!r}")
    return Path(raw).expanduser().resolve()


def experiment_artifact_location(artifact_root: str, experiment: str) -> str:
    """Where one experiment's artifacts go: ``<artifact_root>/<experiment name as path>``.

    A root without a scheme is a local folder and becomes an absolute ``file://`` URI, so artifacts never depend
    on the cwd of whichever process logs them. Characters unsafe in paths become ``_``.
    """
    parts = [_UNSAFE_PATH_CHARS.sub("_", p) for p in experiment.split("/")]
    rel = "/".join(p for p in parts if p and p not in (".", ".."))
    if "://" in artifact_root or artifact_root.startswith("mlflow-artifacts:"):
        return f"{artifact_root.rstrip('/')}/{rel}"
    return (Path(artifact_root).expanduser().resolve() / rel).as_uri()
