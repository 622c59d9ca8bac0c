"""LiteLLM's exception names, for code written against `litellm.exceptions`.

`import agentrun as litellm` keeps `except litellm.RateLimitError:` (or
`except litellm.exceptions.Timeout:`) working: each LiteLLM name is agentrun's matching class
itself, or a subclass of it that agentrun raises in its place. Follows the names and HTTP statuses
of LiteLLM's `litellm/exceptions.py`:

| LiteLLM name | agentrun class | raised for |
|---|---|---|
| `APIError` | `APIError` (the same class) | anything from or on the way to the service |
| `APIConnectionError` | `APIConnectionError` | no HTTP response (service or token endpoint) |
| `Timeout` | `APITimeoutError` | the caller's deadline passed |
| `BadRequestError`, `InvalidRequestError` | `BadRequestError` | 400 |
| `ContextWindowExceededError` | `ContextWindowExceededError` | 400 `context_length_exceeded` |
| `UnsupportedParamsError` | subclass of `BadRequestError` | a parameter the service can't honour |
| `AuthenticationError` | `AuthenticationError` | 401, credential refused |
| `PermissionDeniedError` | `PermissionDeniedError` | 403 |
| `NotFoundError` | `NotFoundError` | 404 |
| `UnprocessableEntityError` | `UnprocessableEntityError` | 422 |
| `RateLimitError` | `RateLimitError` | 429 |
| `InternalServerError` | `InternalServerError` | 5xx |
| `BadGatewayError` | `BadGatewayError` | 502 |
| `ServiceUnavailableError` | `ServiceUnavailableError` | 503 |
| `APIResponseValidationError` | `RemoteProtocolError` | a response agentrun cannot parse |
| `OpenAIError` | `AgentRunError` | the base of everything agentrun raises |
"""

from __future__ import annotations

from agentrun._errors import (
    AgentRunError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    CertificateVerificationError,
    ContextWindowExceededError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RemoteProtocolError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedParamsError,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "CertificateVerificationError",
    "ContextWindowExceededError",
    "InternalServerError",
    "InvalidRequestError",
    "NotFoundError",
    "OpenAIError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Timeout",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
]

Timeout = APITimeoutError
InvalidRequestError = BadRequestError
APIResponseValidationError = RemoteProtocolError
OpenAIError = AgentRunError
