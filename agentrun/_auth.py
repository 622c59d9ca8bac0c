"""The token cache every request of a client shares: single flight, refresh ahead, stale on error.

A `TokenSource` produces access tokens (a fixed token, or any azure-identity async credential);
a `TokenCache` sits in front of it so that however many runs need a token at once, only one
request for a token is in flight. The cache refreshes ahead of expiry (at the token's
`refresh_on`, else `refresh_margin` seconds before `expires_on`) in the first caller that
notices, while every other caller keeps using the current token. If that refresh fails while the
current token is still valid, the current token keeps being served and the refresh is tried
again after a short backoff. Only when there is no valid token does a failure reach callers:
`agentrun.AuthenticationError` when the token endpoint refused the credential,
`agentrun.APIConnectionError` when it could not be reached (refused, reset, DNS, timeout), and
`agentrun.CertificateVerificationError` (an `APIConnectionError`) when its TLS certificate is not
trusted. The last two have `token_endpoint = True`.

After the service rejects a token (401), `invalidate` makes the next fetch a *forced* one:
azure-identity credentials serve their own cached token until near expiry, so the forced fetch
asks for a token issued not before now (an `nbf` claims request, the mechanism of Entra's
claims challenges), which bypasses that cache and yields a new token.

azure-identity credentials do not single-flight by themselves (a cold cache sends one token
request per concurrent caller), which is why this layer exists.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from agentrun._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    CertificateVerificationError,
    ClientStateError,
)

__all__ = [
    "DEFAULT_SCOPE",
    "AccessToken",
    "CredentialTokenSource",
    "StaticTokenSource",
    "TokenCache",
    "TokenCacheStatistics",
    "TokenSource",
    "fresh_token_claims",
    "is_certificate_failure",
    "token_error",
]

DEFAULT_SCOPE = "https://ai.azure.com/.default"

logger = logging.getLogger("agentrun.auth")

# After a failed refresh ahead of expiry, wait this long (doubling per consecutive failure, up
# to the cap) before trying again, so a broken token endpoint is not hit on every request.
_REFRESH_RETRY_BASE = 5.0
_REFRESH_RETRY_MAX = 60.0
# At most one refresh ahead of expiry per this many seconds, even when a fresh token is already
# inside its refresh window (a lifetime shorter than the margin would otherwise refresh on every
# call; azure-identity then returns its cached token anyway).
_MIN_REFRESH_INTERVAL = 30.0


@attrs.frozen
class AccessToken:
    """A bearer token and when it stops being valid (Unix seconds). The repr hides the token."""

    token: str = attrs.field(repr=False)
    expires_on: float
    refresh_on: float | None = None


@runtime_checkable
class TokenSource(Protocol):
    """Something that can fetch an access token, and be closed.

    `fetch(fresh=True)` asks for a token the source has not handed out before (the service
    rejected the last one); a source that cannot do better may return its current token. A
    source whose `fetch()` takes no `fresh` argument is called without it.
    """

    async def fetch(self, *, fresh: bool = False) -> AccessToken: ...

    async def aclose(self) -> None: ...


class StaticTokenSource:
    """A fixed token (an `api_key` or `AZURE_AD_TOKEN`): it never expires from our side."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the static token is empty")
        self._token = AccessToken(token, expires_on=math.inf)

    def __repr__(self) -> str:
        return "StaticTokenSource(token=<hidden>)"

    async def fetch(self, *, fresh: bool = False) -> AccessToken:
        return self._token

    async def aclose(self) -> None:
        return None


class CredentialTokenSource:
    """Tokens from an azure-identity async credential (or anything shaped like one).

    Uses `get_token_info(scope)` when the credential has it (it carries `refresh_on`), else
    `get_token(scope)`. `fetch(fresh=True)` passes a claims request for a token issued not
    before now (`{"access_token": {"nbf": {"essential": true, "value": "<unix time>"}}}`, via
    `options={"claims": ...}` or `claims=`, azure-core's credential protocols): azure-identity
    never answers a claims request from its cache, so this gets a new token. `aclose()` closes
    the credential only when `owns_credential` is true: a credential the caller passed in stays
    the caller's to close.
    """

    __slots__ = ("_credential", "_owns_credential", "_scope")

    def __init__(
        self, credential: Any, scope: str = DEFAULT_SCOPE, *, owns_credential: bool
    ) -> None:
        if not (hasattr(credential, "get_token_info") or hasattr(credential, "get_token")):
            raise TypeError(
                f"{type(credential).__name__} is not a credential: it has neither "
                "get_token_info() nor get_token()"
            )
        self._credential = credential
        self._scope = scope
        self._owns_credential = owns_credential

    def __repr__(self) -> str:
        return (
            f"CredentialTokenSource({type(self._credential).__name__}, scope={self._scope!r}, "
            f"owns_credential={self._owns_credential})"
        )

    @property
    def credential(self) -> Any:
        return self._credential

    async def fetch(self, *, fresh: bool = False) -> AccessToken:
        claims = fresh_token_claims(time.time()) if fresh else None
        get_token_info: Callable[..., Awaitable[Any]] | None = getattr(
            self._credential, "get_token_info", None
        )
        if get_token_info is not None:
            if claims is not None:
                info = await get_token_info(self._scope, options={"claims": claims})
            else:
                info = await get_token_info(self._scope)
            refresh_on = getattr(info, "refresh_on", None)
            return AccessToken(
                str(info.token),
                expires_on=float(info.expires_on),
                refresh_on=None if refresh_on is None else float(refresh_on),
            )
        if claims is not None:
            token = await self._credential.get_token(self._scope, claims=claims)
        else:
            token = await self._credential.get_token(self._scope)
        return AccessToken(str(token.token), expires_on=float(token.expires_on))

    async def aclose(self) -> None:
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()


def fresh_token_claims(now: float) -> str:
    """The claims request (JSON) for an access token issued not before `now` (Unix seconds)."""
    return json.dumps(
        {"access_token": {"nbf": {"essential": True, "value": str(int(now))}}},
        separators=(",", ":"),
    )


@attrs.frozen
class TokenCacheStatistics:
    """Counters since the cache was made.

    `token_requests`: fetches started at the source. `failures`: fetches that failed.
    `refreshes`: fetches started while a valid token was still held (refresh ahead of expiry).
    `served_stale`: calls answered with the current token because a refresh had failed.
    """

    token_requests: int
    failures: int
    refreshes: int
    served_stale: int


class _Flight:
    """One fetch in progress, which every caller without a valid token waits on."""

    __slots__ = ("aborted", "done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: AccessToken | None = None
        self.error: BaseException | None = None
        self.aborted = False  # the fetching caller was cancelled: waiters start a new fetch


def _describe(exc: BaseException) -> str:
    # azure-core errors (ClientAuthenticationError, ServiceRequestError, ...) carry the Entra
    # error code and description, never the secret; other exceptions are named only, since
    # their text is not under our control. The cause is chained either way.
    if any(cls.__module__.startswith("azure.core") for cls in type(exc).__mro__):
        text = str(exc).strip().splitlines()
        if text:
            first = text[0]
            return f"{type(exc).__name__}: {first[:300]}"
    return type(exc).__name__


class TokenCache:
    """Shares one token among all callers; see the module docstring for the rules.

    `clock` returns Unix time (token expiry times are Unix times). Safe to build outside a
    running event loop. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        source: TokenSource,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
    ) -> None:
        self._source = source
        self._fresh_fetch = _accepts_fresh(source)
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._current: AccessToken | None = None
        self._refresh_at = math.inf
        self._flight: _Flight | None = None
        self._refresh_not_before = -math.inf  # backoff after a failed refresh
        self._refresh_failures = 0
        self._force_fresh = False
        self._closed = False
        self._token_requests = 0
        self._failures = 0
        self._refreshes = 0
        self._served_stale = 0

    def __repr__(self) -> str:
        return f"TokenCache({self._source!r})"

    @property
    def source(self) -> TokenSource:
        return self._source

    def statistics(self) -> TokenCacheStatistics:
        return TokenCacheStatistics(
            token_requests=self._token_requests,
            failures=self._failures,
            refreshes=self._refreshes,
            served_stale=self._served_stale,
        )

    async def get_token(self) -> str:
        """A valid bearer token; fetches one (once, for all concurrent callers) if needed."""
        if self._closed:
            raise ClientStateError("the token cache is closed")
        now = self._clock()
        current = self._current
        if current is not None and now < current.expires_on:
            if now < self._refresh_at:
                return current.token
            if self._flight is not None:
                return current.token  # someone is refreshing; keep using the valid token
            if now < self._refresh_not_before:
                if self._refresh_failures:
                    self._served_stale += 1  # a refresh failed recently; do not hammer
                return current.token
            flight = self._start_flight(refresh=True)
            await self._run_flight(flight)
            if flight.result is not None:
                return flight.result.token
            # The refresh failed (or was cancelled, which re-raised above): keep the old token
            # while it lasts, and wait a little before trying again.
            self._refresh_failures += 1
            exponent = min(self._refresh_failures - 1, 16)
            backoff = min(_REFRESH_RETRY_BASE * 2.0**exponent, _REFRESH_RETRY_MAX)
            self._refresh_not_before = self._clock() + backoff
            if self._clock() < current.expires_on:
                self._served_stale += 1
                assert flight.error is not None
                logger.warning(
                    "token refresh failed (%s); using the current token, valid for %.0f s more, "
                    "and retrying in %.0f s",
                    _describe(flight.error),
                    current.expires_on - self._clock(),
                    backoff,
                )
                return current.token
            assert flight.error is not None
            raise self._auth_error(flight.error) from flight.error

        while True:
            pending = self._flight
            if pending is None:
                flight = self._start_flight(refresh=False)
                await self._run_flight(flight)
            else:
                flight = pending
                await flight.done.wait()
            if flight.result is not None:
                return flight.result.token
            if flight.aborted:
                continue  # the fetching caller was cancelled; someone fetches again
            assert flight.error is not None
            raise self._auth_error(flight.error) from flight.error

    def invalidate(self, token: str) -> None:
        """The service rejected `token` (401): the next `get_token` fetches a new one.

        That fetch is a forced one (`TokenSource.fetch(fresh=True)`), which bypasses the
        credential's own cache. Does nothing if the cache has already moved on to another token.
        """
        current = self._current
        if current is not None and current.token == token:
            self._current = None
            self._refresh_at = math.inf
            self._refresh_not_before = -math.inf
            self._force_fresh = True

    async def aclose(self) -> None:
        """Close the token source (which closes the credential if the source owns it)."""
        if self._closed:
            return
        self._closed = True
        self._current = None
        await self._source.aclose()

    def _start_flight(self, *, refresh: bool) -> _Flight:
        flight = _Flight()
        self._flight = flight
        self._token_requests += 1
        if refresh:
            self._refreshes += 1
        return flight

    async def _run_flight(self, flight: _Flight) -> None:
        """Fetch in this caller, publish the outcome to everyone waiting on `flight`.

        Errors are recorded on the flight, not raised; cancellation of this caller marks the
        flight aborted (waiters then fetch again) and propagates.
        """
        fresh = self._force_fresh
        try:
            if fresh and self._fresh_fetch:
                token = await self._source.fetch(fresh=True)
            else:
                token = await self._source.fetch()
        except Exception as exc:
            self._failures += 1
            flight.error = exc
        except BaseException:
            flight.aborted = True
            raise
        else:
            flight.result = token
            if fresh:
                self._force_fresh = False
            self._store(token)
        finally:
            if self._flight is flight:
                self._flight = None
            flight.done.set()

    def _store(self, token: AccessToken) -> None:
        now = self._clock()
        self._current = token
        self._refresh_failures = 0
        if token.refresh_on is not None:
            refresh_at = min(token.refresh_on, token.expires_on)
        else:
            refresh_at = token.expires_on - self._refresh_margin
        self._refresh_at = refresh_at
        self._refresh_not_before = now + _MIN_REFRESH_INTERVAL if refresh_at <= now else -math.inf

    @staticmethod
    def _auth_error(cause: BaseException) -> APIError:
        return token_error(cause)


def _accepts_fresh(source: TokenSource) -> bool:
    """Whether `source.fetch` takes `fresh=` (sources written before it existed do not)."""
    try:
        parameters = inspect.signature(source.fetch).parameters
    except (TypeError, ValueError):
        return False
    return "fresh" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes/contexts (azure-core also keeps one in `inner_exception`)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen) or len(seen) > 20:
            continue
        seen.append(item)
        inner = getattr(item, "inner_exception", None)
        todo.extend(
            [item.__cause__, item.__context__, inner if isinstance(inner, BaseException) else None]
        )
    return seen


def is_certificate_failure(exc: BaseException) -> bool:
    """True if `exc` is, or was caused by, a TLS certificate verification failure (an
    untrusted, expired or mismatched certificate), which no retry can fix."""
    return any(
        isinstance(e, (CertificateVerificationError, ssl.SSLCertVerificationError))
        or type(e).__name__ == "ClientConnectorCertificateError"
        for e in _chain(exc)
    )


def _is_connection_failure(exc: BaseException) -> bool:
    # azure-core: ServiceRequestError (nothing sent: refused, DNS, TLS) and ServiceResponseError
    # (no usable answer: reset, timeout). Plain socket errors from other credentials too.
    for e in _chain(exc):
        names = {cls.__name__ for cls in type(e).__mro__}
        if names & {"ServiceRequestError", "ServiceResponseError"}:
            return True
        if isinstance(e, (ConnectionError, TimeoutError, ssl.SSLError)) or (
            isinstance(e, OSError) and e.errno is not None
        ):
            return True
    return False


def token_error(cause: BaseException) -> APIError:
    """Our error for a failed token fetch: which kind tells the caller what can help.

    An untrusted certificate is `CertificateVerificationError`; no answer from the token
    endpoint is `APIConnectionError` (a retry later may succeed); anything else (the endpoint
    refused the credential) is `AuthenticationError`. Messages never include the secret.
    """
    if isinstance(cause, AuthenticationError):
        return AuthenticationError(cause.message, code=cause.code)
    if isinstance(cause, APIConnectionError):
        cls = (
            CertificateVerificationError
            if isinstance(cause, CertificateVerificationError)
            else APIConnectionError
        )
        error: APIConnectionError = cls(cause.message)
    elif is_certificate_failure(cause):
        error = CertificateVerificationError(
            "could not reach the token endpoint: TLS certificate verification failed "
            f"({_describe(cause)}); trust its CA (verify= / SSL_CERT_FILE) or check "
            "the authority"
        )
    elif _is_connection_failure(cause):
        error = APIConnectionError(
            f"could not reach the token endpoint ({_describe(cause)}); check the authority "
            "(AZURE_AUTHORITY_HOST) and the network"
        )
    else:
        return AuthenticationError(
            f"could not acquire an access token ({_describe(cause)})",
            code="token_acquisition_failed",
        )
    error.token_endpoint = True
    return error
