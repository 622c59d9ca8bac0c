"""The exceptions agentrun raises: one base class, and a tree a caller can catch at any level.

```
AgentRunError
├── ConfigurationError            bad arguments, missing credentials, malformed model string
├── ClientStateError              client used after close or from another event loop
├── ProtocolError
│   ├── LocalProtocolError        we tried an illegal state-machine move (a bug in agentrun)
│   └── RemoteProtocolError       the service sent something impossible or malformed
├── APIError                      anything that came back from (or failed to reach) the service
│   ├── APIConnectionError        no HTTP response at all (service or token endpoint)
│   │   ├── APITimeoutError       the caller's deadline passed
│   │   └── CertificateVerificationError  TLS certificate not trusted (no retry can help)
│   └── APIStatusError            an HTTP error status
│       ├── BadRequestError               400
│       │   ├── UnsupportedParamsError        a parameter the service can't honour
│       │   └── ContextWindowExceededError    400 context_length_exceeded
│       ├── AuthenticationError           401 (the token endpoint refused the credential)
│       ├── PermissionDeniedError         403
│       ├── NotFoundError                 404
│       ├── ConflictError                 409
│       ├── UnprocessableEntityError      422
│       ├── RateLimitError                429
│       └── InternalServerError           5xx
│           ├── BadGatewayError                 502
│           └── ServiceUnavailableError         503
└── RunError                      the run reached a terminal state other than `completed`
    ├── RunFailedError
    ├── RunCancelledError
    ├── RunExpiredError
    └── RunIncompleteError
```

Messages never contain secrets: tokens, keys and client secrets are not passed to these classes.

LiteLLM's exception names are available too (`agentrun.exceptions`, and on `agentrun` itself),
as the same classes or subclasses: `Timeout` is `APITimeoutError`, `APIError` is `APIError`, and
so on (see docs/openai-format.md).

`parse_error_body` is the one reader of what an error says: HTTP error bodies (the Agents API,
the Responses API, gateways), OAuth token-endpoint errors, and stream `error` events.
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AgentRunError",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "CertificateVerificationError",
    "ClientStateError",
    "ConfigurationError",
    "ConflictError",
    "ContextWindowExceededError",
    "ErrorBody",
    "InternalServerError",
    "LocalProtocolError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "RunCancelledError",
    "RunError",
    "RunExpiredError",
    "RunFailedError",
    "RunIncompleteError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
    "parse_error_body",
    "status_error_class",
]


class AgentRunError(Exception):
    """Base class of every error agentrun raises."""


class ConfigurationError(AgentRunError, ValueError):
    """Bad arguments or configuration, detected before any request is sent."""


class ClientStateError(AgentRunError, RuntimeError):
    """A client was used after it was closed, or from an event loop it does not belong to."""


class ProtocolError(AgentRunError):
    """A state-machine or wire-format violation."""


class LocalProtocolError(ProtocolError):
    """agentrun itself attempted an illegal transition: a bug, please report it."""


class RemoteProtocolError(ProtocolError):
    """The service sent a response agentrun cannot make sense of (malformed or impossible)."""


class APIError(AgentRunError):
    """An error talking to the Agent Service.

    `thread_id` and `run_id` are filled in where the failing request concerned them.
    """

    def __init__(
        self,
        message: str,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.thread_id = thread_id
        self.run_id = run_id


class APIConnectionError(APIError):
    """The request got no HTTP response: connection refused, reset, TLS failure, DNS, ...

    `token_endpoint` is True when it was the Entra token endpoint that could not be reached
    (no request went to the service, so retrying the invocation later is safe).
    """

    token_endpoint: bool = False


class APITimeoutError(APIConnectionError, TimeoutError):
    """The caller's deadline passed before the invocation finished.

    `history` holds the state transitions recorded until then (possibly empty).
    """

    def __init__(
        self,
        message: str = "the request timed out",
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        history: Sequence[Any] = (),
    ) -> None:
        super().__init__(message, thread_id=thread_id, run_id=run_id)
        self.history = tuple(history)


class CertificateVerificationError(APIConnectionError):
    """The TLS certificate of the service or of the token endpoint was not trusted (unknown CA,
    expired, wrong host). A configuration problem: retrying cannot fix it."""


class APIStatusError(APIError):
    """The service answered with an HTTP error status.

    `code` is the service's error code (`error.code` in the JSON body) when it sent one.
    `retry_after` is the delay the service asked for, in seconds, when it sent one.
    """

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        thread_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, thread_id=thread_id, run_id=run_id)
        if status_code is not None:
            self.status_code = status_code
        self.code = code
        self.body = body
        self.retry_after = retry_after
        self.request_id = request_id


class BadRequestError(APIStatusError):
    status_code = 400


class UnsupportedParamsError(BadRequestError):
    """A parameter the Agent Service cannot honour (refused before anything is sent; pass
    `drop_params=True` to leave such parameters out). LiteLLM's name for the same refusal."""


class ContextWindowExceededError(BadRequestError):
    """400 with code `context_length_exceeded`: the input is longer than the model takes."""


class AuthenticationError(APIStatusError):
    status_code = 401


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    status_code = 500


class BadGatewayError(InternalServerError):
    status_code = 502


class ServiceUnavailableError(InternalServerError):
    status_code = 503


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    502: BadGatewayError,
    503: ServiceUnavailableError,
}


def status_error_class(status: int, code: str | None = None) -> type[APIStatusError]:
    """The most specific error class for an HTTP status (and the service's error code)."""
    if status == 400 and code == "context_length_exceeded":
        return ContextWindowExceededError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return InternalServerError
    return APIStatusError


class RunError(AgentRunError):
    """The run ended in a terminal state other than `completed`.

    Carries the run's final `status`, its `last_error` code and message (when the service gave
    one), and the `history` of state transitions with their timestamps.
    """

    def __init__(
        self,
        message: str,
        *,
        status: str,
        thread_id: str | None,
        run_id: str | None,
        code: str | None = None,
        error_message: str | None = None,
        history: Sequence[Any] = (),
        result: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.thread_id = thread_id
        self.run_id = run_id
        self.code = code
        self.error_message = error_message
        self.history = tuple(history)
        self.result = result


class RunFailedError(RunError):
    """The run ended `failed` (`code` is e.g. `server_error` or `rate_limit_exceeded`)."""


class RunCancelledError(RunError):
    """The run ended `cancelled`."""


class RunExpiredError(RunError):
    """The run ended `expired` (it passed its `expires_at`)."""


class RunIncompleteError(RunError):
    """The run ended `incomplete` (`code` is the reason, e.g. `max_completion_tokens`)."""


# -- what an error body says -------------------------------------------------------------------

#: The longest message kept from an error body (characters; a longer one ends with "…").
ERROR_TEXT_LIMIT = 500


class ErrorBody(NamedTuple):
    """What an error body said. `message` is never empty when the body was not.

    `details` are the objects of an ``error.details`` list (the Responses API names the
    offending parameters there); `data` is the JSON object itself, when the body was one.
    """

    code: str | None
    message: str
    param: str | None = None
    type: str | None = None
    details: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] | None = None


def _loose_str(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        return value
    if type(value) in (int, float, bool):
        return _json.dumps(value)
    return None


def _truncate(text: str) -> str:
    text = text.strip()
    if len(text) > ERROR_TEXT_LIMIT:
        return text[:ERROR_TEXT_LIMIT] + "…"
    return text


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_summary(text: str) -> str | None:
    """A gateway's HTML error page (nginx, Azure Front Door; real-service.md section 3, item 9)
    in one line: its title, e.g. "HTML page from a gateway: 502 Bad Gateway"."""
    head = text.lstrip()[:15].lower()
    if not head.startswith(("<html", "<!doctype html")):
        return None
    match = _HTML_TITLE.search(text)
    title = " ".join((match.group(1) if match else _HTML_TAG.sub(" ", text)).split())[:200]
    return f"HTML page from a gateway: {title}" if title else "an HTML page from a gateway"


def parse_error_body(body: bytes | str) -> ErrorBody:
    """What an error body says. Pure, and never raises: an error path must not fail twice.

    Understands, in this order:
    ``{"error": {"code", "message", "param", "type", "details"?}}`` (the Agents and Responses
    APIs, OpenAI; each detail's message, with its param, is appended to the message);
    ``{"error": "<code>", "error_description": "..."}`` (an OAuth 2.0 token endpoint, RFC 6749
    section 5.2, as Entra ID sends it); ``{"error": "text"}``; a flat ``{"code", "message"}``
    (gateways); and anything else as plain text (at most `ERROR_TEXT_LIMIT` characters). The
    same function reads the data of a stream ``error`` event.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    try:
        data = _json.loads(text)
    except (ValueError, RecursionError):
        return ErrorBody(None, _truncate(_html_summary(text) or text))
    if type(data) is str:
        return ErrorBody(None, _truncate(data))
    if type(data) is not dict:
        return ErrorBody(None, _truncate(text))
    err = data.get("error")
    if type(err) is str:
        description = data.get("error_description")
        if type(description) is str and description.strip():
            return ErrorBody(err, _truncate(description), data=data)
        return ErrorBody(_loose_str(data.get("code")), _truncate(err), data=data)
    d = err if type(err) is dict else data
    message = _loose_str(d.get("message"))
    if message is None and d is not data:
        message = _loose_str(data.get("message"))
    message = _truncate(message) if message else _truncate(text)
    raw_details = d.get("details")
    details = tuple(x for x in raw_details if type(x) is dict) if type(raw_details) is list else ()
    extra = [
        f"{x.get('param')}: {x.get('message')}" if x.get("param") else str(x.get("message"))
        for x in details
        if _loose_str(x.get("message"))
    ]
    if extra:
        message = f"{message} ({'; '.join(extra)})"[: 2 * ERROR_TEXT_LIMIT]
    return ErrorBody(
        _loose_str(d.get("code")),
        message,
        _loose_str(d.get("param")),
        _loose_str(d.get("type")),
        details,
        data,
    )
