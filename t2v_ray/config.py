"""Typed configs: defaults in code, then a YAML file, then dotted CLI overrides; unknown keys are errors.

Every stage defines a frozen dataclass (nested dataclasses allowed). ``load_config(Cls, path, ["a.b=3"])``
resolves it; ``to_dict`` gives the resolved config to save next to outputs and log to MLflow;
``config_hash`` keys caches on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

from t2v_ray.core.settings import check_ranges as _check_ranges
from t2v_ray.core.settings import range_problem, ranged  # noqa: F401  (ranged: for the stage configs)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


class _PathKind:
    """Marker in ``Annotated`` field types: the field holds a location that :func:`resolve_paths` makes absolute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_URI, _WEIGHTS = _PathKind("uri"), _PathKind("weights")
Uri = Annotated[str, _URI]
"""A folder, ``file://``, ``sqlite:///`` or remote (``s3://``, ``http://``) location; local ones become absolute."""
Weights = Annotated[str, _WEIGHTS]
"""``default``, a torchvision weights name, or a path/URI of a state dict (only paths become absolute)."""

_REMOTE_SCHEMES = ("s3://", "gs://", "http://", "https://", "hdfs://", "databricks", "mlflow-artifacts:")


def absolute_uri(uri: str) -> str:
    """``uri`` with a local path made absolute against the current directory; remote URIs unchanged.

    Ray Tune runs each trial in its own directory and remote workers have other working directories, so a
    relative path must never reach a stage: ``t2v-data`` -> ``/cwd/t2v-data``, ``file://x`` -> ``file:///cwd/x``,
    ``sqlite:///x.db`` (relative, SQLAlchemy's convention) -> ``sqlite:////cwd/x.db``.
    """
    if not uri or uri.startswith(_REMOTE_SCHEMES):
        return uri
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path in ("", ":memory:"):
            return uri
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path)) + sep + query
    if uri.startswith("file://"):
        return "file://" + os.path.abspath(os.path.expanduser(uri[len("file://") :]))
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def _absolute_weights(value: str) -> str:
    looks_like_path = "/" in value or value.startswith(("~", ".")) or value.endswith((".pt", ".pth"))
    return absolute_uri(value) if looks_like_path else value


def resolve_paths(cfg: T) -> T:
    """Copy of ``cfg`` (a dataclass, nested ones included) with every ``Uri``/``Weights`` field made absolute.

    :func:`load_config` calls this, so every config that a CLI, job or the pipeline loads carries absolute
    local paths before any stage, actor or Tune trial sees it. Idempotent.
    """
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            new = resolve_paths(value)
        elif isinstance(value, str):
            kind = _path_kind(hints.get(f.name))
            new = (
                absolute_uri(value)
                if kind is _URI
                else _absolute_weights(value)
                if kind is _WEIGHTS
                else value
            )
        else:
            continue
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


def _path_kind(tp: Any) -> _PathKind | None:
    """The marker of an ``Annotated[str, kind]`` type, also inside ``X | None``."""
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, _PathKind)), None)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((k for a in typing.get_args(tp) if (k := _path_kind(a)) is not None), None)
    return None


def to_dict(cfg: Any) -> dict:
    """Resolved config as plain, JSON-able data."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def flatten(nested: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params, config hashes); dataclasses flatten like mappings."""
    if dataclasses.is_dataclass(nested) and not isinstance(nested, type):
        nested = {f.name: getattr(nested, f.name) for f in dataclasses.fields(nested)}
    if not isinstance(nested, Mapping):
        return {prefix.rstrip("."): nested} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """Stable hash of the resolved config (keys in ``exclude``, dotted, are left out)."""
    flat = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in exclude}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from nested ``data``; unknown keys raise ``ConfigError``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
        _check_range(v, fields[k], f"{where}.{k}")
    return cls(**kwargs)


def _check_range(value: Any, f: dataclasses.Field, where: str) -> None:
    problem = range_problem(value, f)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")


def check_ranges(cfg: Any, where: str = "config") -> None:
    """Raise :class:`ConfigError` for any field of ``cfg`` (nested dataclasses too) outside its ``range``."""
    _check_ranges(cfg, where, ConfigError)


def _expand_env(node: Any) -> Any:
    """Expand ``$VAR``/``${VAR}`` in string values (cluster configs read e.g. ``${T2V_STORAGE_URI}``)."""
    import os

    if isinstance(node, str):
        return os.path.expandvars(node)
    if isinstance(node, dict):
        return {k: _expand_env(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v) for v in node]
    return node


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars) to nested ``data`` in place."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like key.sub=value")
        key, raw = ov.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_scalar(raw)
    return data


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Defaults of ``cls``, updated by the YAML at ``path`` (if any), then by dotted ``overrides``."""
    data = to_dict(cls())

    def merge(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        merge(data, _expand_env(loaded))
    merge(data, _expand_env(apply_overrides({}, overrides)))
    return resolve_paths(from_dict(cls, data))
