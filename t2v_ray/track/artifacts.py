"""Stage artifacts on local disk, redacted, under the name they will have in the run.

MLflow uploads files by path and keeps their base name, so every artifact is first written (or found) as
``<staging dir>/<name>``. Text content passes through :func:`~t2v_ray.track.redact.redact_text` on the way.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from t2v_ray.track.redact import redact, redact_text, secret_values

# Files above this size are uploaded as they are, unscanned: they are data (shards, weights), not configs or
# logs, and decoding them would double the driver's memory for nothing.
MAX_SCANNED_FILE_BYTES = 64 * 1024 * 1024

ArtifactData = bytes | str | os.PathLike[str] | Mapping[str, Any] | list[Any]


def artifact_name(name: str) -> PurePosixPath:
    """Validate a run-relative artifact name such as ``embedding.npy`` or ``plots/heatmap.png``."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or path.is_absolute() or ".." in parts:
        raise ValueError(f"artifact name must be a relative path inside the run, got {name!r}")
    return PurePosixPath(*parts)


def _redact_bytes(data: bytes) -> bytes:
    # Only UTF-8 text is scanned; binary formats (npy, png, parquet) are left byte-for-byte intact.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    cleaned = redact_text(text)
    return data if cleaned == text else cleaned.encode("utf-8")


def _to_bytes(data: bytes | str | Mapping[str, Any] | list[Any]) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return _redact_bytes(bytes(data))
    if isinstance(data, str):
        return redact_text(data).encode("utf-8")
    secrets = secret_values()
    text = json.dumps(redact(data, secrets), indent=2, sort_keys=True, default=str)
    return redact_text(text, secrets).encode("utf-8")


def _stage_file(src: Path, dest: Path) -> Path:
    if not src.is_file():
        raise FileNotFoundError(f"artifact file not found: {src}")
    if src.stat().st_size <= MAX_SCANNED_FILE_BYTES:
        raw = src.read_bytes()
        cleaned = _redact_bytes(raw)
        if cleaned is not raw:
            dest.write_bytes(cleaned)
            return dest
    if src.name == dest.name:
        return src  # clean and already well named: upload in place, no copy
    shutil.copyfile(src, dest)
    return dest


def stage_artifact(staging_dir: Path, name: str, data: ArtifactData) -> tuple[Path, str | None]:
    """Write ``data`` as a local file ready for ``MlflowClient.log_artifact``.

    Args:
        staging_dir: Empty temporary folder owned by the caller.
        name: Run-relative artifact name (folders allowed).
        data: ``bytes`` and ``str`` are the content; a ``PathLike`` names a file to upload; a mapping or list is
            written as JSON. A plain ``str`` is always content, never a path: pass ``pathlib.Path`` for files.

    Returns:
        The local file to upload and the run-relative folder to upload it into (``None`` for the run root).
    """
    rel = artifact_name(name)
    dest = staging_dir / rel.name
    if isinstance(data, os.PathLike):
        local = _stage_file(Path(data), dest)
    else:
        dest.write_bytes(_to_bytes(data))
        local = dest
    folder = str(rel.parent)
    return local, None if folder == "." else folder
