"""Task library: :class:`TaskSpec`, the reader :class:`TaskLibrary` and the writer :class:`LibraryWriter`.

Layout (DESIGN.md): ``tasks.parquet`` lists the tasks; ``shards/*.parquet`` hold one task's rows each. The writer
puts shards first and ``tasks.parquet`` last, so a crashed build never looks complete. Shard names carry the
task's content hash, so rebuilding identical content finds every shard in place and rewrites nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from t2v_ray.data import storage
from t2v_ray.data.schema import (
    BUILD_STATE,
    KINDS,
    REQUIRED_SHARD_COLUMNS,
    SHARD_SCHEMA,
    SHARDS_DIR,
    SPLITS,
    TASKS_FILE,
    TASKS_SCHEMA,
    missing_columns,
    type_mismatches,
)

DEFAULT_SHARD_BYTES = 128 * 2**20


class LibraryError(Exception):
    """The library as a whole cannot be read (no ``tasks.parquet``, wrong schema, unknown task)."""


class TaskDataError(LibraryError):
    """One task's data is broken; says which task, shard and row, and what is wrong."""

    def __init__(self, task_id: str, problem: str, shard: str | None = None, row: int | None = None):
        self.task_id, self.problem, self.shard, self.row = task_id, problem, shard, row
        where = f"task {task_id!r}"
        if shard is not None:
            where += f", shard {shard!r}"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {problem}")


@dataclass
class TaskSpec:
    """One row of ``tasks.parquet``: a classification task and where its images are."""

    task_id: str
    dataset: str
    kind: str
    taxonomy: list[str]
    classes: list[str]
    n_train: int = 0
    n_test: int = 0
    shards: list[str] = field(default_factory=list)
    content_hash: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_test

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskSpec:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in row.items() if k in names}
        for k in ("taxonomy", "classes", "shards"):
            kw[k] = list(kw.get(k) or [])
        return cls(**kw)


def tasks_table(specs: Iterable[TaskSpec]) -> pa.Table:
    """``tasks.parquet`` content for ``specs`` (in the given order)."""
    return pa.Table.from_pylist([s.to_row() for s in specs], schema=TASKS_SCHEMA)


def _slug(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", task_id).strip("_")[:80] or "task"


def rows_to_table(task_id: str, rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Normalise rows (a table or dicts with split/label/image/image_id[/attributes]) to the shard schema.

    ``task_id`` is filled in, ``attributes`` may be absent or None, and rows are sorted by
    (split, label, image_id) so the content hash does not depend on the order a builder produced them in.
    """
    if not isinstance(rows, pa.Table):
        rows = [dict(r) for r in rows]
        for r in rows:
            r["task_id"] = task_id
            attrs = r.get("attributes")
            r["attributes"] = None if attrs is None else [(str(k), str(v)) for k, v in sorted(attrs.items())]
        table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    else:
        cols = {n: rows.column(n) for n in rows.column_names if n in SHARD_SCHEMA.names}
        cols["task_id"] = pa.array([task_id] * rows.num_rows, pa.string())
        if "attributes" not in cols:
            cols["attributes"] = pa.nulls(rows.num_rows, SHARD_SCHEMA.field("attributes").type)
        table = pa.table({n: cols[n] for n in SHARD_SCHEMA.names}).cast(SHARD_SCHEMA)
    order = pc.sort_indices(
        table, [("split", "descending"), ("label", "ascending"), ("image_id", "ascending")]
    )
    return table.take(order)


def content_hash(spec: TaskSpec, table: pa.Table) -> str:
    """SHA-256 over the task's identity (id, dataset, kind, taxonomy, classes) and every row's content."""
    h = hashlib.sha256()
    ident = [spec.task_id, spec.dataset, spec.kind, list(spec.taxonomy), list(spec.classes)]
    h.update(json.dumps(ident, ensure_ascii=False).encode())
    attrs = table.column("attributes").to_pylist()
    for i, (split, label, image, image_id) in enumerate(
        zip(
            table.column("split").to_pylist(),
            table.column("label").to_pylist(),
            table.column("image").to_pylist(),
            table.column("image_id").to_pylist(),
            strict=True,
        )
    ):
        meta = json.dumps([split, label, image_id, attrs[i]], ensure_ascii=False)
        h.update(meta.encode())
        h.update(hashlib.sha256(image).digest())
    return h.hexdigest()


def _split_rows(table: pa.Table, max_bytes: int) -> list[pa.Table]:
    """Cut ``table`` into consecutive pieces whose image bytes stay under ``max_bytes`` (at least one row each)."""
    sizes = pc.binary_length(table.column("image")).to_pylist()
    pieces, start, acc = [], 0, 0
    for i, s in enumerate(sizes):
        if acc and acc + s > max_bytes:
            pieces.append(table.slice(start, i - start))
            start, acc = i, 0
        acc += s
    pieces.append(table.slice(start))
    return pieces


@dataclass
class WriteStats:
    """What a :class:`LibraryWriter` did; a rebuild of identical content writes nothing."""

    shards_written: int = 0
    shards_reused: int = 0
    shards_pruned: int = 0
    tasks_file_written: bool = False


class LibraryWriter:
    """Write a library: call :meth:`add_task` per task, then :meth:`finish`.

    Args:
        uri: library folder or S3 prefix.
        shard_bytes: target image bytes per shard (DESIGN: 64-256 MB on real data).
        prune: on :meth:`finish`, delete shard files that the new ``tasks.parquet`` does not reference.
    """

    def __init__(self, uri: str, shard_bytes: int = DEFAULT_SHARD_BYTES, prune: bool = True):
        self.uri = str(uri)
        self.shard_bytes = shard_bytes
        self.prune = prune
        self.specs: list[TaskSpec] = []
        self.stats = WriteStats()
        self._old_recipes = self._load_recipes()
        self._recipes: dict[str, dict] = {}

    def _load_recipes(self) -> dict[str, dict]:
        target = storage.join(self.uri, BUILD_STATE)
        try:
            return json.loads(storage.read_bytes(target)) if storage.exists(target) else {}
        except (OSError, ValueError):  # a damaged cache only costs a re-render
            return {}

    def reuse(self, task_id: str, recipe: str) -> TaskSpec | None:
        """Keep a task from the previous build without producing its rows again.

        ``recipe`` is the builder's hash of everything the task's rows derive from (plan, seed, input files,
        library versions). When the previous build recorded the same recipe for ``task_id`` and all its shards
        still exist, that spec is kept and returned; otherwise None, and the caller produces the rows.
        """
        entry = self._old_recipes.get(task_id)
        if not entry or entry.get("recipe") != recipe:
            return None
        spec = TaskSpec.from_row(entry["spec"])
        if not all(storage.exists(storage.join(self.uri, rel)) for rel in spec.shards):
            return None
        self.specs.append(spec)
        self._recipes[task_id] = entry
        self.stats.shards_reused += len(spec.shards)
        return spec

    def add_task(
        self,
        spec_fields: Mapping[str, Any],
        rows: pa.Table | Iterable[Mapping[str, Any]],
        recipe: str | None = None,
    ) -> TaskSpec:
        """Write one task's shards (unless identical ones exist) and remember its spec.

        Args:
            spec_fields: ``task_id``, ``dataset``, ``kind``, ``taxonomy``, ``classes`` (the rest is computed).
            rows: a table or dicts with ``split``, ``label``, ``image`` (PNG/JPEG bytes), ``image_id`` and an
                optional ``attributes`` mapping.
            recipe: optional hash of the rows' inputs, recorded so a later build can :meth:`reuse` the task.

        Returns:
            The completed :class:`TaskSpec` (counts, shard paths, content hash).
        """
        spec = TaskSpec.from_row(
            {k: spec_fields[k] for k in ("task_id", "dataset", "kind", "taxonomy", "classes")}
        )
        if spec.kind not in KINDS:
            raise ValueError(f"task {spec.task_id!r}: kind must be one of {KINDS}, got {spec.kind!r}")
        if any(s.task_id == spec.task_id for s in self.specs):
            raise ValueError(f"task {spec.task_id!r} added twice")
        table = rows_to_table(spec.task_id, rows)
        splits = table.column("split")
        spec.n_train = int(pc.sum(pc.equal(splits, "train")).as_py() or 0)
        spec.n_test = int(pc.sum(pc.equal(splits, "test")).as_py() or 0)
        spec.content_hash = content_hash(spec, table)
        pieces = _split_rows(table, self.shard_bytes)
        base = f"{SHARDS_DIR}/{_slug(spec.task_id)}-{spec.content_hash[:16]}"
        spec.shards = [f"{base}-{i:03d}-of-{len(pieces):03d}.parquet" for i in range(len(pieces))]
        for rel, piece in zip(spec.shards, pieces, strict=True):
            target = storage.join(self.uri, rel)
            if storage.exists(target):  # same name = same content hash; atomic writes mean it is whole
                self.stats.shards_reused += 1
                continue
            storage.write_parquet_atomic(piece, target)
            self.stats.shards_written += 1
        self.specs.append(spec)
        if recipe is not None:
            self._recipes[spec.task_id] = {"recipe": recipe, "spec": spec.to_row()}
        return spec

    def finish(self) -> list[TaskSpec]:
        """Write ``tasks.parquet`` (only if its content changed), then prune unreferenced shards."""
        table = tasks_table(self.specs)
        target = storage.join(self.uri, TASKS_FILE)
        old = None
        if storage.exists(target):
            try:
                old = storage.read_parquet(target)
            except storage.StorageUnavailableError:
                raise
            except Exception:  # a corrupt tasks file is simply replaced
                old = None
        if old is None or not old.equals(table):
            storage.write_parquet_atomic(table, target)
            self.stats.tasks_file_written = True
        if self._recipes:  # written after tasks.parquet: it is only a cache of what that file says
            state = json.dumps(self._recipes, sort_keys=True, indent=1).encode()
            storage.write_bytes_if_changed(storage.join(self.uri, BUILD_STATE), state)
        if self.prune:
            self._prune()
        return list(self.specs)

    def _prune(self) -> None:
        keep = {s for spec in self.specs for s in spec.shards}
        for name in storage.list_dir(storage.join(self.uri, SHARDS_DIR)):
            rel = f"{SHARDS_DIR}/{name}"
            if name.endswith(".parquet") and rel not in keep:
                storage.delete(storage.join(self.uri, rel))
                self.stats.shards_pruned += 1


class TaskLibrary:
    """Read-only view of a library at a URI (plain path, ``file://`` or ``s3://``)."""

    def __init__(self, uri: str, specs: list[TaskSpec]):
        self.uri = str(uri)
        self._specs = specs
        self._by_id = {s.task_id: s for s in specs}

    @classmethod
    def open(cls, uri: str) -> TaskLibrary:
        """Read ``tasks.parquet``.

        Raises:
            LibraryError: it is missing, malformed or cannot be read (e.g. access denied).
            StorageUnavailableError: its storage stayed unreachable for the whole retry patience.
        """
        target = storage.join(str(uri), TASKS_FILE)
        try:
            found = storage.exists(target)
        except OSError as e:  # not transient (those are retried, then StorageUnavailableError): e.g. denied
            raise LibraryError(f"{uri}: cannot read ({e})") from e
        if not found:
            bucket = storage.missing_bucket(str(uri))
            if bucket is not None:  # e.g. a wrong endpoint that answers 404 to everything
                where = f"S3 endpoint {storage.endpoint_name()}"
                raise LibraryError(f"{uri}: no bucket {bucket!r} at {where} (wrong endpoint or bucket name?)")
            raise LibraryError(f"{uri}: no {TASKS_FILE} (not a library, or its build did not finish)")
        try:
            table = storage.read_parquet(target)
        except storage.StorageUnavailableError:
            raise  # an outage, not a bad file: the message already names the endpoint
        except Exception as e:
            raise LibraryError(f"{target}: unreadable ({e})") from e
        missing = missing_columns(table.schema, TASKS_SCHEMA)
        bad = type_mismatches(table.schema, TASKS_SCHEMA)
        if missing or bad:
            raise LibraryError(f"{target}: schema mismatch; missing columns {missing}, wrong types {bad}")
        return cls(uri, [TaskSpec.from_row(r) for r in table.to_pylist()])

    @property
    def tasks(self) -> list[TaskSpec]:
        return list(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def task(self, task_id: str) -> TaskSpec:
        """The spec of ``task_id``; :class:`LibraryError` names a few known ids when it is absent."""
        try:
            return self._by_id[task_id]
        except KeyError:
            known = ", ".join(list(self._by_id)[:5])
            raise LibraryError(f"{self.uri}: no task {task_id!r} (known: {known}, ...)") from None

    def read_task(self, task_id: str, split: str | None = None, origin: bool = False) -> pa.Table:
        """Read only ``task_id``'s shards, checked; optionally only one split.

        With ``origin``, two extra columns say where each row lives: ``shard`` (relative path) and
        ``shard_row`` (row number inside that shard), so a later problem with a row can be reported exactly.

        Raises:
            TaskDataError: a shard is missing or unreadable, a column is missing, or a row has a label out of
                range, an unknown split, a null value or another task's id.
        """
        spec = self.task(task_id)
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        if not spec.shards:
            raise TaskDataError(task_id, "task lists no shards")
        parts = [self._read_shard(spec, rel) for rel in spec.shards]
        if origin:
            parts = [
                p.append_column("shard", pa.array([rel] * p.num_rows, pa.string())).append_column(
                    "shard_row", pa.array(range(p.num_rows), pa.int64())
                )
                for rel, p in zip(spec.shards, parts, strict=True)
            ]
        table = pa.concat_tables(parts)
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split))
        return table

    def _read_shard(self, spec: TaskSpec, rel: str) -> pa.Table:
        target = storage.join(self.uri, rel)
        if not storage.exists(target):
            raise TaskDataError(spec.task_id, "shard file is missing", shard=rel)
        try:
            table = storage.read_parquet(target)
        except storage.StorageUnavailableError:
            raise  # not this task's fault
        except Exception as e:
            raise TaskDataError(spec.task_id, f"shard unreadable ({e})", shard=rel) from e
        problem = check_shard_table(spec, table)
        if problem is not None:
            row, msg = problem
            raise TaskDataError(spec.task_id, msg, shard=rel, row=row)
        if "attributes" not in table.column_names:
            table = table.append_column(
                "attributes", pa.nulls(table.num_rows, SHARD_SCHEMA.field("attributes").type)
            )
        return table.select(SHARD_SCHEMA.names).cast(SHARD_SCHEMA)


def check_shard_table(spec: TaskSpec, table: pa.Table) -> tuple[int | None, str] | None:
    """First structural problem of a shard as ``(row or None, message)``, or None when it is sound."""
    issues = shard_issues(spec, table, limit=1)
    return issues[0] if issues else None


def shard_issues(spec: TaskSpec, table: pa.Table, limit: int | None = None) -> list[tuple[int | None, str]]:
    """Structural problems of one shard: schema, nulls, foreign task ids, unknown splits, labels outside 0..C-1."""
    missing = missing_columns(table.schema, REQUIRED_SHARD_COLUMNS)
    bad = type_mismatches(table.schema, SHARD_SCHEMA, REQUIRED_SHARD_COLUMNS)
    if missing or bad:
        return [(None, f"schema mismatch: missing columns {missing}, wrong types {bad}")]
    out: list[tuple[int | None, str]] = []
    n_classes = len(spec.classes)
    cols = {n: table.column(n).to_pylist() for n in ("task_id", "split", "label", "image_id")}
    images = table.column("image")
    for i in range(table.num_rows):
        msg = None
        if any(cols[n][i] is None for n in cols) or not images[i].is_valid:
            msg = "null value in a required column"
        elif cols["task_id"][i] != spec.task_id:
            msg = f"row belongs to task {cols['task_id'][i]!r}"
        elif cols["split"][i] not in SPLITS:
            msg = f"split {cols['split'][i]!r} is not one of {SPLITS}"
        elif not 0 <= cols["label"][i] < n_classes:
            msg = f"label {cols['label'][i]} out of range 0..{n_classes - 1}"
        if msg:
            out.append((i, msg))
            if limit is not None and len(out) >= limit:
                break
    return out
