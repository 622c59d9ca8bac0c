"""The retry decision: a pure function of method, outcome, headers, attempt and deadline.

Nothing here sleeps, reads a clock or draws a random number: the transport passes the current
time and a jitter value in, and gets back whether to retry and after how long. That keeps the
policy testable as a table and with property tests.

The rule for non-idempotent methods (POST, PATCH) is strict: they are retried only when the
server provably did not act on the request, which is a 429 (throttled before any work), a 503
(the service was unavailable) or a connection that failed before the request was sent. A 500,
a 502, a 408 or a connection dropped after sending may mean the run was created, so retrying
could create a second one.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
from collections.abc import Mapping

import attrs

__all__ = ["Failure", "RetryDecision", "RetryPolicy", "decide", "retry_after_seconds"]

# RFC 9110 idempotent methods: repeating them has the same effect as sending them once.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Statuses that prove a non-idempotent request was not acted on.
_NOT_ACTED_STATUSES = frozenset({429, 503})
_RETRY_AFTER_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")


@attrs.frozen
class RetryPolicy:
    """How hard to retry.

    `max_attempts` counts every attempt, the first included (4 means up to 3 retries).
    `base_delay` and `max_delay` shape the exponential backoff used when the server gives no
    delay; `max_retry_after` caps a delay the server asks for.
    """

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))
    max_delay: float = attrs.field(default=8.0, validator=attrs.validators.ge(0.0))
    max_retry_after: float = attrs.field(default=60.0, validator=attrs.validators.ge(0.0))


class Failure(enum.Enum):
    """How a request failed when no HTTP response arrived."""

    CONNECT = "connect"
    """Refused, DNS, TLS: the request was never sent, so the server provably did not act."""
    READ = "read"
    """The request was sent (maybe partly) but no response came: the server may have acted."""


@attrs.frozen
class RetryDecision:
    """Whether to retry, after how many seconds, and a human-readable reason."""

    retry: bool
    delay: float
    reason: str


def _stop(reason: str) -> RetryDecision:
    return RetryDecision(retry=False, delay=0.0, reason=reason)


def decide(
    policy: RetryPolicy,
    *,
    method: str,
    status: int | None,
    failure: Failure | None,
    headers: Mapping[str, str],
    attempt: int,
    now: float,
    deadline: float | None,
    jitter: float,
    now_epoch: float | None = None,
) -> RetryDecision:
    """Decide whether attempt number `attempt` (1 for the first) should be followed by another.

    Exactly one of `status` (an HTTP response arrived) and `failure` (none did) is given.
    `now` and `deadline` are on the same clock (the transport uses `anyio.current_time()`);
    `jitter` is a number in [0, 1) drawn by the caller. `now_epoch` (Unix time) is needed only
    to honour a `Retry-After` given as an HTTP date; without it such a header is ignored.
    """
    if (status is None) == (failure is None):
        raise ValueError("pass exactly one of `status` and `failure`")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    method = method.upper()
    idempotent = method in _IDEMPOTENT_METHODS

    if status is not None:
        if status < 400:
            return _stop(f"status {status} is not an error")
        if status not in _RETRYABLE_STATUSES:
            return _stop(f"status {status} is not retryable")
        if not idempotent and status not in _NOT_ACTED_STATUSES:
            return _stop(
                f"{method} is not retried on status {status}: the server may have acted on it"
            )
        what = f"status {status}"
    else:
        if not idempotent and failure is Failure.READ:
            return _stop(
                f"{method} is not retried after the connection failed once the request was "
                "sent: the server may have acted on it"
            )
        assert failure is not None
        what = f"{failure.value} failure"

    if attempt >= policy.max_attempts:
        return _stop(f"{what}, but attempts are exhausted ({attempt} of {policy.max_attempts})")

    server_delay = retry_after_seconds(headers, now_epoch) if status is not None else None
    if server_delay is not None:
        delay = min(server_delay, policy.max_retry_after)
        source = "the server's Retry-After"
    else:
        # Full jitter (a uniform draw below the exponential cap) spreads a burst of clients
        # that failed together instead of having them retry in lockstep.
        exponent = min(attempt - 1, 64)  # 2**64 * base_delay is beyond any cap already
        delay = jitter * min(policy.max_delay, policy.base_delay * 2.0**exponent)
        source = "backoff"

    if deadline is not None and now + delay > deadline:
        return _stop(
            f"{what}, but waiting {delay:.3f}s ({source}) would pass the deadline "
            f"({max(deadline - now, 0.0):.3f}s left)"
        )
    return RetryDecision(
        retry=True, delay=delay, reason=f"{what}: retry in {delay:.3f}s ({source})"
    )


def _finite_non_negative(value: float) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return max(value, 0.0)


def retry_after_seconds(headers: Mapping[str, str], now_epoch: float | None = None) -> float | None:
    """The delay, in seconds, the server asked for, or None if it asked for none.

    Reads `Retry-After` (delta-seconds, or an HTTP date when `now_epoch` is given), then
    `retry-after-ms` and `x-ms-retry-after-ms` (milliseconds), matching header names
    case-insensitively. Unparseable values are skipped; negative delays count as 0.
    """
    wanted: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "retry-after" or lowered in _RETRY_AFTER_MS_HEADERS:
            wanted.setdefault(lowered, value)
    if not wanted:
        return None

    raw = wanted.get("retry-after", "").strip()
    if raw:
        try:
            seconds = _finite_non_negative(float(raw))
        except ValueError:
            seconds = _http_date_delay(raw, now_epoch)
        if seconds is not None:
            return seconds
    for name in _RETRY_AFTER_MS_HEADERS:
        raw = wanted.get(name, "").strip()
        if not raw:
            continue
        try:
            millis = _finite_non_negative(float(raw))
        except ValueError:
            continue
        if millis is not None:
            return millis / 1000.0
    return None


def _http_date_delay(raw: str, now_epoch: float | None) -> float | None:
    if now_epoch is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    return _finite_non_negative(when.timestamp() - now_epoch)


# Azure support asks for `apim-request-id` (a UUID); the service also sends `x-request-id`, a
# different 32-hex value (recordings in Azure/azure-sdk-assets, azure-ai-agents tests).
_REQUEST_ID_HEADERS = ("apim-request-id", "x-ms-request-id", "x-request-id")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The service's id for a request: `apim-request-id` first (what Azure support asks for),
    then `x-ms-request-id`, then `x-request-id`."""
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None
