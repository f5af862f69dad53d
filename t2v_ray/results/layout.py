"""Where each stage's output lives under a results root: every file and folder name is defined here, once.

Layout of a results root (a folder, ``file://`` or ``s3://`` prefix); the select inputs can be overridden:

    <results>/embeddings.parquet   embed stage: one row per (task, probe, method, config); only ``ok`` rows are used
    <results>/grid.parquet         grid stage: test error of a linear classifier per (expert, task)
    <results>/experts.parquet      experts stage: ``expert_id``, ``source_tasks``, ``is_generic``
    <results>/library              the task library: the library folder itself (holds ``tasks.parquet``), or a
                                   small text file whose content is the library URI
    <results>/embed_config.yaml    the resolved embed config (probe, weights, input size, EmbedConfig), read by
                                   ``t2v select rank``; its ``library`` is the fallback library URI
    <results>/embeddings.parquet.parts/  part files of a running (or interrupted) embed, merged by every reader
    <results>/embeddings.parquet.leases/ one lease per task being computed (concurrent runs share the work)
    <results>/embed_summary.json   counts and timings of the last embed run
    <results>/experts/<id>/        expert weights (``weights.pt``) and record (``expert.json``)
    <results>/features/<expert>/<task hash>.npz   the grid's cached expert features
    <results>/grid/pairs/<expert>/<task>.json     one grid pair's result record; grid/config.json
    <results>/tune/                Tune experiment state (local results roots)
    <results>/select/<protocol>/   default output folder of ``t2v select evaluate`` / ``t2v report``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from t2v_ray.data import storage

DEFAULT_DATA_DIR = "t2v-data"  # the embedded default: library, results, MLflow and Tune state of a laptop run
LIBRARY_DIR = "library"  # under a pipeline's storage root: the library it built...
RESULTS_DIR = "results"  # ...and the results root of every stage
EMBEDDINGS_FILE = "embeddings.parquet"
PARTS_SUFFIX = ".parts"
LEASES_SUFFIX = ".leases"  # <results>/embeddings.parquet.leases/: which run is computing which task
EMBED_CONFIG_FILE = "embed_config.yaml"
EMBED_SUMMARY_FILE = "embed_summary.json"
GRID_FILE = "grid.parquet"
GRID_DIR = "grid"
GRID_CONFIG_FILE = "grid/config.json"
PAIRS_DIR = "grid/pairs"
FEATURES_DIR = "features"
EXPERTS_FILE = "experts.parquet"
EXPERTS_DIR = "experts"
EXPERT_RECORD_FILE = "expert.json"
EXPERT_WEIGHTS_FILE = "weights.pt"
TUNE_DIR = "tune"
LIBRARY_POINTER = "library"
SELECT_DIR = "select"
SELECT_CONFIG_FILE = "config.yaml"
SELECT_KEY_FILE = "inputs.sha256"


@dataclass(frozen=True)
class ResultsPaths:
    """Where the inputs of the select stage live (see the module docstring for the defaults)."""

    root: str
    embeddings: str
    grid: str
    experts: str | None
    library: str | None

    @classmethod
    def from_root(
        cls,
        root: str,
        embeddings: str | None = None,
        grid: str | None = None,
        experts: str | None = None,
        library: str | None = None,
    ) -> ResultsPaths:
        """Defaults under ``root``; an experts file or library that does not exist becomes ``None``."""
        exp = experts or storage.join(root, EXPERTS_FILE)
        return cls(
            root=str(root),
            embeddings=embeddings or storage.join(root, EMBEDDINGS_FILE),
            grid=grid or storage.join(root, GRID_FILE),
            experts=exp if storage.exists(exp) else None,
            library=library or resolve_library(root),
        )


def resolve_library(root: str) -> str | None:
    """The library of a results root: ``<root>/library`` (the folder itself, or a file holding its URI), else
    the ``library`` the embed stage recorded in ``<root>/embed_config.yaml``; None when neither says."""
    pointer = storage.join(root, LIBRARY_POINTER)
    if storage.exists(storage.join(pointer, "tasks.parquet")):
        return pointer
    if storage.exists(pointer):
        try:
            text = storage.read_bytes(pointer).decode().strip()
        except OSError:  # a folder without tasks.parquet: not a library
            text = ""
        if text:
            return text
    return read_embed_config(root).get("library") or None


def read_embed_config(root: str) -> dict[str, Any]:
    """The resolved embed config saved next to ``embeddings.parquet`` (empty when absent)."""
    import yaml

    uri = storage.join(root, EMBED_CONFIG_FILE)
    if not storage.exists(uri):
        return {}
    data = yaml.safe_load(storage.read_bytes(uri).decode()) or {}
    return data if isinstance(data, dict) else {}
