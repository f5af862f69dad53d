"""Crash-safe, incrementally written Parquet result tables (``embeddings.parquet``; any keyed table).

A :class:`ResultStore` keeps one compacted file (``<out>/<name>``) plus a folder of small part files
(``<out>/<name>.parts/part-*.parquet``). Results are buffered and flushed as a new part file every few rows or
seconds; every file is written atomically (``storage.write_parquet_atomic``), so a crash loses at most the
buffered rows and never leaves a torn file. :meth:`ResultStore.read` merges the compacted file and the parts, the
newest row per key winning; :meth:`ResultStore.compact` folds the parts into the main file at the end of a run.
One writer per store at a time: two concurrent runs on the same ``out`` are not supported.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from t2v_ray.data import storage
from t2v_ray.results.layout import PARTS_SUFFIX

STATUS_OK = "ok"
STATUS_ERROR = "error"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: missing ones null, extra ones dropped, types cast."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def latest_per_key(tables: Sequence[pa.Table], key: Sequence[str], keep_ok: bool = False) -> pa.Table:
    """Concatenate ``tables`` (oldest first) and keep the newest row of each key, in their stored order.

    With ``keep_ok``, an ``error`` row never replaces an ``ok`` row of the same key (a failed retry of a task
    that already has a good result must not lose it).
    """
    table = pa.concat_tables(tables)
    if table.num_rows == 0:
        return table
    keys = list(zip(*(table.column(k).to_pylist() for k in key), strict=True))
    ok = [s == STATUS_OK for s in table.column("status").to_pylist()] if keep_ok else [False] * len(keys)
    last: dict[tuple, int] = {}
    for i, k in enumerate(keys):
        if keep_ok and not ok[i] and k in last and ok[last[k]]:
            continue
        last[k] = i
    order = sorted(last.values())
    return table.take(pa.array(order, pa.int64()))


class ResultStore:
    """Buffered, atomic, mergeable rows under ``<out_uri>/<name>`` (local folder or ``s3://`` prefix).

    Args:
        out_uri: output folder or prefix.
        name: compacted file name, e.g. ``embeddings.parquet``.
        schema: columns of every row; rows missing a column get null.
        key: columns identifying a row; newer rows replace older ones with the same key, except that an
            ``error`` row never replaces an ``ok`` one (when the schema has a ``status`` column).
        flush_rows: write a part file once this many rows are buffered.
        flush_seconds: ...or once the oldest buffered row is this old (checked on :meth:`add` and :meth:`tick`).
    """

    def __init__(
        self,
        out_uri: str,
        name: str,
        schema: pa.Schema,
        key: Sequence[str],
        flush_rows: int = 8,
        flush_seconds: float = 20.0,
    ):
        self.out_uri = str(out_uri)
        self.schema = schema
        self.key = tuple(key)
        self.flush_rows = max(1, int(flush_rows))
        self.flush_seconds = float(flush_seconds)
        self.main_uri = storage.join(self.out_uri, name)
        self.parts_uri = storage.join(self.out_uri, name + PARTS_SUFFIX)
        self._buffer: list[dict[str, Any]] = []
        self._oldest: float | None = None
        self.parts_written = 0

    # ----------------------------------------------------------------------------------------- reading
    def part_names(self) -> list[str]:
        """Completed part files, oldest first (temporary files of an interrupted write are ignored)."""
        names = storage.list_dir(self.parts_uri)
        return [n for n in names if n.startswith("part-") and n.endswith(".parquet")]

    def read(self) -> pa.Table:
        """Every stored row (compacted file + parts), newest per key, conformed to the schema."""
        tables = [self.schema.empty_table()]
        if storage.exists(self.main_uri):
            tables.append(conform(storage.read_parquet(self.main_uri), self.schema))
        for name in self.part_names():
            tables.append(conform(storage.read_parquet(storage.join(self.parts_uri, name)), self.schema))
        return latest_per_key(tables, self.key, keep_ok="status" in self.schema.names)

    @classmethod
    def at(cls, file_uri: str, schema: pa.Schema, key: Sequence[str]) -> ResultStore:
        """The store whose compacted file is ``file_uri`` (its parts sit beside it in ``<file>.parts/``)."""
        folder, _, name = str(file_uri).rstrip("/").rpartition("/")
        return cls(folder or ".", name, schema, key)

    def fingerprint(self) -> str:
        """SHA-256 of the merged rows (compacted file + parts): equal rows give an equal fingerprint, whether
        or not the parts were compacted yet; a new part with new rows changes it."""
        sink = pa.BufferOutputStream()
        table = self.read()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()

    def read_rows(self) -> dict[tuple, dict[str, Any]]:
        """:meth:`read` as ``{key tuple: row dict}``."""
        return {tuple(r[k] for k in self.key): r for r in self.read().to_pylist()}

    @property
    def buffered(self) -> int:
        """Rows added but not yet in a part file."""
        return len(self._buffer)

    # ----------------------------------------------------------------------------------------- writing
    def add(self, row: Mapping[str, Any]) -> bool:
        """Buffer one row; returns True when this call flushed a part file."""
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._buffer.append(dict(row))
        return self.tick()

    def tick(self) -> bool:
        """Flush if the buffer is full or old enough; returns True when a part file was written."""
        if not self._buffer:
            return False
        age = time.monotonic() - (self._oldest or time.monotonic())
        if len(self._buffer) >= self.flush_rows or age >= self.flush_seconds:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the buffered rows as one new part file (atomic); no-op when nothing is buffered."""
        if not self._buffer:
            return
        table = rows_to_table(self._buffer, self.schema)
        # Nanosecond time first: part names sort chronologically, which is the order read() merges them in.
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        storage.write_parquet_atomic(table, storage.join(self.parts_uri, name))
        self.parts_written += 1
        self._buffer, self._oldest = [], None

    def compact(self) -> pa.Table:
        """Flush, merge everything into the main file (atomic), then delete the merged parts; returns it.

        A crash between the two steps only leaves parts that duplicate rows of the main file, which
        :meth:`read` dedupes, so the store is consistent at every point.
        """
        self.flush()
        merged_parts = self.part_names()
        table = self.read()
        storage.write_parquet_atomic(table, self.main_uri)
        for name in merged_parts:
            storage.delete(storage.join(self.parts_uri, name))
        return table


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts; numpy arrays allowed in list columns) as a table of ``schema``; absent keys are null."""
    clean = []
    for r in rows:
        clean.append({f.name: _plain(r.get(f.name)) for f in schema})
    return pa.Table.from_pylist(clean, schema=schema)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
