"""agentrun: call Azure AI Foundry Agents in the OpenAI chat-completions format.

Async first (`AsyncClient`, `acompletion`), with a thin sync layer (`Client`, `completion`).
"""

from __future__ import annotations

from agentrun._errors import (
    AgentRunError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    LocalProtocolError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RemoteProtocolError,
    RunCancelledError,
    RunError,
    RunExpiredError,
    RunFailedError,
    RunIncompleteError,
    UnprocessableEntityError,
)

__version__ = "0.1.0"

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
    "__version__",
]
