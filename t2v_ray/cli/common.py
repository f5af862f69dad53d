"""What the stage commands (``t2v embed``, ``t2v experts train``, ``t2v grid run``, ``t2v select``, ``t2v report``)
share: turning the flags that were given into dotted overrides, resolving a stage config from ``--config`` + flags
+ trailing ``key.sub=value`` overrides, and reporting bad settings as a message instead of a traceback.

Only typer is imported at module level; the config and library modules load inside the functions, so importing a
command module never pulls in torch, ray or mlflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

_NULL_WEIGHTS = ("none", "null", "random")


def flag_overrides(flags: Mapping[str, Any], keys: Mapping[str, str] | None = None) -> list[str]:
    """Dotted overrides for the flags that were given (JSON-quoted so ``a,b`` and ``*`` survive YAML parsing).

    Args:
        flags: flag name -> value; ``None`` means the flag was not given and is skipped.
        keys: flag name -> dotted config key (default: the flag name itself).
    A ``weights`` flag of ``none``, ``null`` or ``random`` becomes ``weights=null`` (random initialisation).
    """
    out = []
    for name, value in flags.items():
        if value is None:
            continue
        if name == "weights" and str(value).lower() in _NULL_WEIGHTS:
            out.append("weights=null")
        else:
            key = name if keys is None else keys[name]
            out.append(f"{key}={json.dumps(value)}")
    return out


def resolve_stage_config(
    cls: type[T],
    config_path: Path | str | None,
    flag_overrides: Sequence[str] = (),
    overrides: Sequence[str] | None = None,
) -> T:
    """Defaults of ``cls`` < YAML at ``config_path`` < ``flag_overrides`` < trailing ``overrides``.

    Raises :class:`~t2v_ray.config.ConfigError` (a ``ValueError``) on unknown keys or wrong types.
    """
    from t2v_ray.config import load_config

    return load_config(cls, config_path, list(flag_overrides) + list(overrides or []))


@contextmanager
def exit_on_bad_settings(command: str) -> Iterator[None]:
    """Bad settings or inputs (``ValueError``, ``ConfigError``, ``LibraryError``) or storage that stayed
    unreachable (``StorageUnavailableError``) inside the block: print ``<command>: <message>`` to stderr and exit
    with status 1 instead of showing a traceback."""
    from t2v_ray.data.library import LibraryError
    from t2v_ray.data.retry import StorageUnavailableError

    try:
        yield
    except (ValueError, LibraryError, StorageUnavailableError) as err:
        typer.echo(f"{command}: {err}", err=True)
        raise typer.Exit(1) from err


@contextmanager
def bad_parameter_on(errors: tuple[type[Exception], ...] = (ValueError,)) -> Iterator[None]:
    """``errors`` inside the block (by default ``ValueError``, which includes ``ConfigError``) become a typer
    usage error (``typer.BadParameter``: the message under the usage line, exit status 2)."""
    try:
        yield
    except errors as err:
        raise typer.BadParameter(str(err)) from err
