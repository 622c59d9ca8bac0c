"""The exceptions agentrun raises: one base class, and a tree a caller can catch at any level.

```
AgentRunError
├── ConfigurationError            bad arguments, missing credentials, malformed model string
├── ClientStateError              client used after close or from another event loop
├── ProtocolError
│   ├── LocalProtocolError        we tried an illegal state-machine move (a bug in agentrun)
│   └── RemoteProtocolError       the service sent something impossible or malformed
├── APIError                      anything that came back from (or failed to reach) the service
│   ├── APIConnectionError        no HTTP response at all
│   │   └── APITimeoutError       the caller's deadline passed
│   └── APIStatusError            an HTTP error status
│       ├── BadRequestError               400
│       ├── AuthenticationError           401 (and token acquisition failures)
│       ├── PermissionDeniedError         403
│       ├── NotFoundError                 404
│       ├── ConflictError                 409
│       ├── UnprocessableEntityError      422
│       ├── RateLimitError                429
│       └── InternalServerError           5xx
└── RunError                      the run reached a terminal state other than `completed`
    ├── RunFailedError
    ├── RunCancelledError
    ├── RunExpiredError
    └── RunIncompleteError
```

Messages never contain secrets: tokens, keys and client secrets are not passed to these classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AgentRunError",
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "ConfigurationError",
    "ConflictError",
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
    "UnprocessableEntityError",
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
    """The request got no HTTP response: connection refused, reset, TLS failure, DNS, ..."""


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


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The most specific error class for an HTTP status."""
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)


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
