"""Keep credentials out of everything we log: params, tags, run names and text artifacts.

Two rules, applied by every logging path of :mod:`t2v_ray.track`:

1. A key that looks like a credential (``SECRET_KEY_PATTERN``) keeps its name but its value is masked.
2. The *current* value of every credential-bearing environment variable is masked wherever it appears inside a
   string, as are passwords embedded in URLs (``scheme://user:password@host``).

The environment is read on every call, not cached, so a token rotated mid-run is still caught.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

SECRET_KEY_PATTERN = re.compile(r"(?i)(secret|token|password|credential|access_key|session)")

# Always treated as secrets, whatever the pattern says (AWS_ACCESS_KEY_ID does not match it, for one).
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "RAY_AUTH_TOKEN",
)

# Values shorter than this are not scrubbed from free text: env vars such as XDG_SESSION_ID=3 match the name
# pattern, and masking every "3" or "true" in a config would destroy it. Real credentials are far longer.
MIN_SECRET_LENGTH = 8

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")


def is_secret_key(key: str) -> bool:
    """Whether a param/tag/config key names a credential (matched anywhere in the key, case-insensitive)."""
    return bool(SECRET_KEY_PATTERN.search(str(key)))


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Current values of credential-bearing environment variables, longest first.

    Args:
        environ: Environment to read; ``os.environ`` when omitted.

    Returns:
        Distinct values at least ``MIN_SECRET_LENGTH`` long. Longest first so that a secret containing another
        one is masked whole.
    """
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if (name in SECRET_ENV_VARS or is_secret_key(name)) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """Mask secret values and URL passwords inside ``text``.

    Args:
        text: Any string (a param value, a YAML dump, a log).
        secrets: Values to mask; the current environment's (:func:`secret_values`) when omitted.

    Returns:
        ``text`` with each occurrence replaced by ``MASK``.
    """
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, MASK)
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """Return a copy of ``obj`` that is safe to log.

    Mappings (params, tags, configs) have values under credential-looking keys masked and are redacted
    recursively; strings have secret values masked (:func:`redact_text`); lists and tuples are redacted element
    by element; other values are returned unchanged.

    Args:
        obj: A mapping, string, list/tuple or scalar.
        secrets: Values to mask; the current environment's when omitted (read once per call).

    Returns:
        The redacted copy (same kind of container; mappings become ``dict``).
    """
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {k: MASK if is_secret_key(k) else redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        items = [redact(v, secrets) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj
