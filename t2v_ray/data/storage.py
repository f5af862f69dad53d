"""One reader/writer over ``pyarrow.fs`` so a library URI can be a plain path, ``file://`` or ``s3://``.

S3-compatible endpoints (moto, MinIO) come in through ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``).
Credentials found in the environment are passed to :class:`pyarrow.fs.S3FileSystem` explicitly, because a
filesystem built from the default credential chain does not carry them when pickled to a Ray worker.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from functools import lru_cache
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "delete",
    "exists",
    "is_local",
    "join",
    "list_dir",
    "list_files",
    "open_fs",
    "parquet_bytes",
    "read_bytes",
    "read_parquet",
    "write_bytes_atomic",
    "write_bytes_if_changed",
    "write_parquet_atomic",
]


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


@lru_cache(maxsize=16)
def _s3_filesystem(
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    region: str | None,
    scheme: str | None,
    endpoint: str | None,
) -> pafs.S3FileSystem:
    # Cached on the full configuration, so a change of env (a test's moto server) yields a new filesystem.
    kwargs: dict = {"allow_bucket_creation": True, "region": region, "endpoint_override": endpoint}
    if scheme:
        kwargs["scheme"] = scheme
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return pafs.S3FileSystem(**kwargs)


def open_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """Resolve a library URI to a filesystem and a path inside it.

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
        fs = _s3_filesystem(
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
            env.get("AWS_SESSION_TOKEN"),
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None),
            scheme,
            endpoint,
        )
        return fs, (parsed.netloc + parsed.path).rstrip("/")
    if is_local(uri):
        path = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (``/`` separators for URIs, ``os.path.join`` for plain paths)."""
    uri = str(uri)
    if urlparse(uri).scheme in ("", "file") and "://" not in uri:
        return os.path.join(uri, *parts)
    return posixpath.join(uri.rstrip("/"), *[p.strip("/") for p in parts])


def exists(uri: str) -> bool:
    """True if a file or directory exists at ``uri``."""
    fs, path = open_fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    """The whole content of the file at ``uri``."""
    fs, path = open_fs(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either the old file or the whole new one, never a partial one.

    Local files go to a temporary sibling and are renamed with ``os.replace``. On S3 an object only becomes
    visible once its upload completes, so the data is serialised first and written through one stream.
    """
    fs, path = open_fs(uri)
    if isinstance(fs, pafs.LocalFileSystem):
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
        return
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
    fs, path = open_fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def list_dir(uri: str) -> list[str]:
    """Sorted names (not paths) of the entries directly under ``uri``; empty if it does not exist."""
    fs, path = open_fs(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(i.base_name for i in infos)


def list_files(uri: str) -> list[tuple[str, int]]:
    """All files below ``uri`` recursively as ``(relative posix path, size in bytes)``, sorted by path."""
    fs, path = open_fs(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    root = path.rstrip("/\\")
    out = []
    for i in infos:
        if i.type == pafs.FileType.File:
            rel = i.path[len(root) :].lstrip("/\\").replace(os.sep, "/")
            out.append((rel, int(i.size or 0)))
    return sorted(out)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file (not a dataset directory) into a table."""
    fs, path = open_fs(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table to Parquet bytes (zstd; statistics off so identical content gives identical bytes)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False)
    return buf.getvalue()


def write_parquet_atomic(table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file at ``uri`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(uri, parquet_bytes(table))
