"""One reader/writer over ``pyarrow.fs`` so a library URI can be a plain path, ``file://`` or ``s3://``.

S3-compatible endpoints (moto, MinIO) come in through ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``).
Credentials found in the environment are passed to :class:`pyarrow.fs.S3FileSystem` explicitly, because a
filesystem built from the default credential chain does not carry them when pickled to a Ray worker.

Every S3 call here retries transient errors (network, timeouts, HTTP 5xx, throttling) with exponential backoff
for a total *patience* (``T2V_S3_PATIENCE_S``, default 300 s: S3 throttling and endpoint blips last that long),
then raises :class:`StorageUnavailableError` naming the endpoint. "Not found" and permission errors are never
retried. Two layers, because pyarrow's own retry strategy covers single requests but not our sequences (an
atomic write is open + write + close): pyarrow gets per-request timeouts and a few quick retries, and
:func:`call_with_retries` repeats the whole operation until the patience is spent.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from t2v_ray.data.retry import (
    PATIENCE_ENV,
    SDK_ATTEMPTS,
    RetryPolicy,
    StorageUnavailableError,
    call_with_retries,
    is_transient_error,
    retry_policy,
)

__all__ = [
    "PATIENCE_ENV",
    "RetryPolicy",
    "StorageUnavailableError",
    "call_with_retries",
    "delete",
    "endpoint_name",
    "exists",
    "is_local",
    "is_transient_error",
    "join",
    "list_dir",
    "list_files",
    "missing_bucket",
    "open_fs",
    "parquet_bytes",
    "read_bytes",
    "read_parquet",
    "retry_policy",
    "write_bytes_atomic",
    "write_bytes_if_changed",
    "write_parquet_atomic",
]

T = TypeVar("T")


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    scheme = urlparse(str(uri)).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _endpoint_from_env() -> tuple[str | None, str | None]:
    """``(scheme, host[:port])`` from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, or ``(None, None)``."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return None, None
    parsed = urlparse(url)
    if not parsed.scheme:  # "host:port" without a scheme: pyarrow's own default (https) applies
        return None, url
    return parsed.scheme, parsed.netloc + parsed.path.rstrip("/")


def endpoint_name() -> str:
    """The S3 endpoint requests go to, as named in messages: the configured URL, else AWS S3 and the region."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        return url.rstrip("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return f"AWS S3 ({region})" if region else "AWS S3"


@lru_cache(maxsize=16)
def _s3_filesystem(
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    region: str | None,
    scheme: str | None,
    endpoint: str | None,
    timeouts: tuple[float, float],
) -> pafs.S3FileSystem:
    # Cached on the full configuration, so a change of env (a test's moto server, a patience) yields a new one.
    connect_timeout, request_timeout = timeouts
    kwargs: dict = {
        "allow_bucket_creation": True,
        "region": region,
        "endpoint_override": endpoint,
        "connect_timeout": connect_timeout,
        "request_timeout": request_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=SDK_ATTEMPTS),
    }
    if scheme:
        kwargs["scheme"] = scheme
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return pafs.S3FileSystem(**kwargs)


def open_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """Resolve a library URI to a filesystem and a path inside it.

    S3 filesystems carry the per-request timeouts of :func:`retry_policy` and pyarrow's standard retry strategy
    (a filesystem unpickled in a Ray worker keeps the timeouts; the storage functions of this module rebuild
    it from the worker's environment and add the patience).

    Args:
        uri: a plain path, ``file:///abs/path`` or ``s3://bucket/key``.

    Returns:
        ``(filesystem, path)``; for local URIs the path is absolute, for S3 it is ``bucket/key``.
    """
    uri = str(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        scheme, endpoint = _endpoint_from_env()
        env = os.environ
        policy = retry_policy()
        fs = _s3_filesystem(
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
            env.get("AWS_SESSION_TOKEN"),
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None),
            scheme,
            endpoint,
            (policy.connect_timeout_s, policy.request_timeout_s),
        )
        return fs, (parsed.netloc + parsed.path).rstrip("/")
    if is_local(uri):
        path = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    return pafs.FileSystem.from_uri(uri)


def _run(uri: str, what: str, op: Callable[[pafs.FileSystem, str], T]) -> T:
    """``op(fs, path)`` for ``uri``; on remote filesystems with :func:`call_with_retries` (local: no retries)."""
    fs, path = open_fs(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return op(fs, path)
    endpoint = endpoint_name() if isinstance(fs, pafs.S3FileSystem) else None
    return call_with_retries(lambda: op(fs, path), f"{what} {uri}", endpoint=endpoint)


def missing_bucket(uri: str) -> str | None:
    """The bucket of an ``s3://`` URI when that bucket does not exist at the endpoint, else None."""
    if urlparse(str(uri)).scheme != "s3":
        return None
    bucket = urlparse(str(uri)).netloc
    try:
        info = _run(f"s3://{bucket}", "looking up bucket", lambda fs, _: fs.get_file_info(bucket))
    except OSError:  # e.g. no permission to look buckets up (HeadBucket needs s3:ListBucket): cannot tell
        return None
    return bucket if info.type == pafs.FileType.NotFound else None


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (``/`` separators for URIs, ``os.path.join`` for plain paths)."""
    uri = str(uri)
    if urlparse(uri).scheme in ("", "file") and "://" not in uri:
        return os.path.join(uri, *parts)
    return posixpath.join(uri.rstrip("/"), *[p.strip("/") for p in parts])


def exists(uri: str) -> bool:
    """True if a file or directory exists at ``uri``."""
    info = _run(uri, "checking", lambda fs, path: fs.get_file_info(path))
    return info.type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """The whole content of the file at ``uri``."""
    return _run(uri, "reading", _read_all)


def _read_all(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the whole new one, never a partial one.

    Local files go to a temporary sibling and are renamed with ``os.replace``. On S3 an object only becomes
    visible once its upload completes, so the data is serialised first and written through one stream; a
    failed attempt leaves the old object, and the whole write is retried (see :func:`call_with_retries`).
    """
    if not is_local(uri):
        _run(uri, "writing", lambda fs, path: _put(fs, path, data))
        return
    _, path = open_fs(uri)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_bytes_if_changed(uri: str, data: bytes) -> bool:
    """Atomically write ``data`` unless the file already holds exactly these bytes; True if written."""
    if exists(uri) and read_bytes(uri) == data:
        return False
    write_bytes_atomic(uri, data)
    return True


def delete(uri: str) -> None:
    """Delete the file at ``uri`` (missing files are ignored)."""
    _run(uri, "deleting", _delete_file)


def _delete_file(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def _select(uri: str, recursive: bool) -> tuple[str, list[pafs.FileInfo]]:
    def op(fs: pafs.FileSystem, path: str) -> tuple[str, list[pafs.FileInfo]]:
        return path, fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))

    return _run(uri, "listing", op)


def list_dir(uri: str) -> list[str]:
    """Sorted names (not paths) of the entries directly under ``uri``; empty if it does not exist."""
    _, infos = _select(uri, recursive=False)
    return sorted(i.base_name for i in infos)


def list_files(uri: str) -> list[tuple[str, int]]:
    """All files below ``uri`` recursively as ``(relative posix path, size in bytes)``, sorted by path."""
    path, infos = _select(uri, recursive=True)
    root = path.rstrip("/\\")
    out = []
    for i in infos:
        if i.type == pafs.FileType.File:
            rel = i.path[len(root) :].lstrip("/\\").replace(os.sep, "/")
            out.append((rel, int(i.size or 0)))
    return sorted(out)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file (not a dataset directory) into a table."""
    return _run(uri, "reading", lambda fs, path: pq.read_table(path, filesystem=fs, columns=columns))


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table to Parquet bytes (zstd; statistics off so identical content gives identical bytes)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False)
    return buf.getvalue()


def write_parquet_atomic(table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file at ``uri`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(uri, parquet_bytes(table))
