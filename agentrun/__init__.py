"""agentrun: call Azure AI Foundry Agents in the OpenAI chat-completions format.

Async first (`AsyncClient`, `acompletion`), with a thin sync layer (`Client`, `completion`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from agentrun._machine import State, Transition
from agentrun._results import (
    ClientStatistics,
    MapResult,
    RunFinished,
    RunRequest,
    RunResult,
    StateChanged,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from agentrun._client import AsyncClient, RunStream
    from agentrun._openai import (
        ChatCompletion,
        ChatCompletionChunk,
        CompletionStream,
        acompletion,
    )

__version__ = "0.1.0"

# Names whose modules import aiohttp/anyio are loaded on first use, so that importing
# agentrun (the CLI's --help, the pytest plugin in every test run) stays cheap.
_LAZY = {
    "AsyncClient": "agentrun._client",
    "RunStream": "agentrun._client",
    "ChatCompletion": "agentrun._openai",
    "ChatCompletionChunk": "agentrun._openai",
    "CompletionStream": "agentrun._openai",
    "acompletion": "agentrun._openai",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AgentRunError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ClientStateError",
    "ClientStatistics",
    "CompletionStream",
    "ConfigurationError",
    "ConflictError",
    "InternalServerError",
    "LocalProtocolError",
    "MapResult",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "RunCancelledError",
    "RunError",
    "RunExpiredError",
    "RunFailedError",
    "RunFinished",
    "RunIncompleteError",
    "RunRequest",
    "RunResult",
    "RunStream",
    "State",
    "StateChanged",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "Transition",
    "UnprocessableEntityError",
    "__version__",
    "acompletion",
]
