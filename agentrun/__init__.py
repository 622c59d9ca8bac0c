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

if TYPE_CHECKING:
    from agentrun._client import AsyncClient, RunStream
    from agentrun._machine import State, Transition
    from agentrun._openai import (
        ChatCompletion,
        ChatCompletionChunk,
        CompletionStream,
        aclose_clients,
        acompletion,
    )
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
    from agentrun._sync import (
        Client,
        MapIterator,
        SyncCompletionStream,
        SyncRunStream,
        completion,
    )

__version__ = "0.1.0"

# Names whose modules import aiohttp/anyio are loaded on first use, so that importing
# agentrun (the CLI's --help, the pytest plugin in every test run) stays cheap.
_LAZY = {
    "State": "agentrun._machine",
    "Transition": "agentrun._machine",
    "ClientStatistics": "agentrun._results",
    "MapResult": "agentrun._results",
    "RunFinished": "agentrun._results",
    "RunRequest": "agentrun._results",
    "RunResult": "agentrun._results",
    "StateChanged": "agentrun._results",
    "StreamEvent": "agentrun._results",
    "TextDelta": "agentrun._results",
    "ToolCallDelta": "agentrun._results",
    "AsyncClient": "agentrun._client",
    "RunStream": "agentrun._client",
    "ChatCompletion": "agentrun._openai",
    "ChatCompletionChunk": "agentrun._openai",
    "CompletionStream": "agentrun._openai",
    "acompletion": "agentrun._openai",
    "aclose_clients": "agentrun._openai",
    "Client": "agentrun._sync",
    "completion": "agentrun._sync",
    "MapIterator": "agentrun._sync",
    "SyncCompletionStream": "agentrun._sync",
    "SyncRunStream": "agentrun._sync",
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
    "Client",
    "ClientStateError",
    "ClientStatistics",
    "CompletionStream",
    "ConfigurationError",
    "ConflictError",
    "InternalServerError",
    "LocalProtocolError",
    "MapIterator",
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
    "SyncCompletionStream",
    "SyncRunStream",
    "TextDelta",
    "ToolCallDelta",
    "Transition",
    "UnprocessableEntityError",
    "__version__",
    "aclose_clients",
    "acompletion",
    "completion",
]
