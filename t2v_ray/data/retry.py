"""Retrying transient storage errors: one policy (patience, backoff, timeouts) for every storage call.

A transient error is one worth waiting for: network failures, timeouts, HTTP 5xx and throttling. Missing files,
permissions and corrupt data are never retried. The patience (``T2V_S3_PATIENCE_S``, default 300 s) bounds the
total time one operation keeps trying; after it, :class:`StorageUnavailableError` names the endpoint.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "PATIENCE_ENV",
    "RetryPolicy",
    "StorageUnavailableError",
    "call_with_retries",
    "is_transient_error",
    "retry_policy",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

PATIENCE_ENV = "T2V_S3_PATIENCE_S"
DEFAULT_PATIENCE_S = 300.0
SDK_ATTEMPTS = 3  # pyarrow's quick retries of one request, inside each attempt of call_with_retries
MAX_REQUEST_TIMEOUT_S = 20.0  # a request that moves no byte for this long fails (and is retried)
MAX_CONNECT_TIMEOUT_S = 5.0

# pyarrow reports S3 failures as OSError("... AWS Error <TYPE> during <Op> operation: ..."); these types and
# HTTP 5xx / 429 are worth waiting for. Everything else (ACCESS_DENIED, NO_SUCH_KEY, ...) fails at once.
_TRANSIENT_AWS_TYPES = frozenset(
    {
        "NETWORK_CONNECTION",
        "REQUEST_TIMEOUT",
        "SERVICE_UNAVAILABLE",
        "THROTTLING",
        "SLOW_DOWN",
        "INTERNAL_FAILURE",
    }
)
_UNREACHABLE_AWS_TYPES = frozenset({"NETWORK_CONNECTION", "REQUEST_TIMEOUT"})
_AWS_TYPE = re.compile(r"AWS Error (\w+)")
_TRANSIENT_HTTP = re.compile(r"HTTP status (5\d\d|429)\b")
_TRANSIENT_TEXT = ("timeout", "timed out", "connection reset", "connection refused", "broken pipe")
_NEVER_TRANSIENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


class StorageUnavailableError(Exception):
    """Storage kept failing with transient errors for the whole patience (the message names the endpoint).

    Not an ``OSError`` on purpose: handlers that treat an ``OSError`` as a torn or missing file must not mistake
    an outage for bad data, and retry loops must not retry what already waited its full patience.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How long storage operations wait out transient errors.

    Attributes:
        patience_s: total seconds one operation may keep failing before it gives up.
        first_delay_s: sleep after the first failure; doubles after each further one, up to ``max_delay_s``.
        max_delay_s: longest sleep between two attempts.
        max_attempts: give up after this many attempts even within the patience (None: patience only).
    """

    patience_s: float = DEFAULT_PATIENCE_S
    first_delay_s: float = 0.5
    max_delay_s: float = 15.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not self.patience_s > 0:
            raise ValueError(f"storage patience must be > 0 seconds, got {self.patience_s}")
        if self.first_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("storage retry delays must be >= 0 seconds")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts counts attempts and must be >= 1, got {self.max_attempts}")

    @property
    def request_timeout_s(self) -> float:
        """Stall limit of one request: short enough that a stalled request is retried within the patience.

        pyarrow (curl) applies it as "less than 1 byte/s for this long", so slow but moving transfers are fine;
        whole seconds, at least 1 (0 would switch the check off).
        """
        return float(min(MAX_REQUEST_TIMEOUT_S, max(1, int(self.patience_s / (3 * SDK_ATTEMPTS)))))

    @property
    def connect_timeout_s(self) -> float:
        return min(MAX_CONNECT_TIMEOUT_S, self.request_timeout_s)


def retry_policy() -> RetryPolicy:
    """The policy in effect: :class:`RetryPolicy` defaults with the patience from ``T2V_S3_PATIENCE_S``."""
    raw = os.environ.get(PATIENCE_ENV, "").strip()
    if not raw:
        return RetryPolicy()
    try:
        patience = float(raw)
    except ValueError:
        raise ValueError(f"{PATIENCE_ENV}={raw!r} is not a number of seconds") from None
    return RetryPolicy(patience_s=patience)


def _aws_type(err: BaseException) -> str | None:
    m = _AWS_TYPE.search(str(err))
    return m[1] if m else None


def is_transient_error(err: BaseException) -> bool:
    """True for storage errors worth retrying (network, timeouts, HTTP 5xx, throttling).

    False for missing files, permissions, corrupt data, anything not an ``OSError``, and
    :class:`StorageUnavailableError` (it already waited). The ``__cause__`` chain is searched, so a
    library error raised ``from`` a network error counts as transient.
    """
    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 8:
        if isinstance(e, StorageUnavailableError):
            return False
        if isinstance(e, OSError) and _is_transient_os_error(e):
            return True
        e, seen = e.__cause__, seen + 1
    return False


def _is_transient_os_error(e: OSError) -> bool:
    if isinstance(e, _NEVER_TRANSIENT):
        return False
    if isinstance(e, TimeoutError | ConnectionError):
        return True
    aws_type = _aws_type(e)
    if aws_type is not None:
        return aws_type in _TRANSIENT_AWS_TYPES or bool(_TRANSIENT_HTTP.search(str(e)))
    text = str(e).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def call_with_retries(
    fn: Callable[[], T], what: str, policy: RetryPolicy | None = None, endpoint: str | None = None
) -> T:
    """``fn()``, repeated after transient errors with exponential backoff until ``policy.patience_s`` is spent.

    Args:
        fn: the whole operation; it must be safe to repeat (an S3 object appears only once fully written).
        what: what is being done, for messages, e.g. ``"writing s3://b/k"``.
        policy: default :func:`retry_policy` (read from the environment at each call).
        endpoint: the S3 endpoint, named in the final error.

    Raises:
        StorageUnavailableError: still failing after the patience (or ``max_attempts``).
        Exception: any non-transient error, unchanged, on its first occurrence.
    """
    policy = policy or retry_policy()
    start, delay, attempt = time.monotonic(), policy.first_delay_s, 0
    while True:
        attempt += 1
        try:
            result = fn()
        except Exception as err:
            if not is_transient_error(err):
                raise
            elapsed = time.monotonic() - start
            if elapsed >= policy.patience_s or attempt == policy.max_attempts:
                raise StorageUnavailableError(
                    _give_up_message(what, endpoint, err, attempt, elapsed, policy)
                ) from err
            if attempt == 1:
                log.warning(
                    "%s: %s; retrying for up to %g s (%s)", what, err, policy.patience_s, PATIENCE_ENV
                )
            time.sleep(min(delay, policy.patience_s - elapsed))
            delay = min(2 * delay, policy.max_delay_s)
            continue
        if attempt > 1:
            log.warning("%s: succeeded at attempt %d after %.1f s", what, attempt, time.monotonic() - start)
        return result


def _give_up_message(
    what: str, endpoint: str | None, err: BaseException, attempts: int, elapsed: float, policy: RetryPolicy
) -> str:
    plural = "" if attempts == 1 else "s"
    tried = (
        f"{attempts} attempt{plural} in {elapsed:.1f} s, patience {policy.patience_s:g} s ({PATIENCE_ENV})"
    )
    if endpoint is None:
        return f"{what}: storage error after {tried}: {err}"
    aws_type = _aws_type(err)
    state = "cannot reach" if aws_type is None or aws_type in _UNREACHABLE_AWS_TYPES else "kept failing at"
    return f"{state} S3 endpoint {endpoint} ({what}; {tried}): {err}"
