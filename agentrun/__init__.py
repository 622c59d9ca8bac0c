"""agentrun: call Azure AI Foundry Agents in the OpenAI chat-completions format.

Async first (`AsyncClient`, `acompletion`), with a thin sync layer (`Client`, `completion`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentrun import exceptions
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
    ClientStateError,
    ConfigurationError,
    ConflictError,
    ContextWindowExceededError,
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
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedParamsError,
)
from agentrun.exceptions import (
    APIResponseValidationError,
    InvalidRequestError,
    OpenAIError,
    Timeout,
)

if TYPE_CHECKING:
    from agentrun._client import AsyncClient, RunStream
    from agentrun._fanout import RunMap
    from agentrun._litellm import stream_chunk_builder
    from agentrun._machine import State, Transition
    from agentrun._model import (
        ImageFilePart,
        ImageUrlPart,
        LastError,
        Message,
        Run,
        RunStep,
        StepToolCall,
        TextPart,
        ToolCall,
        UnknownPart,
        Usage,
    )
    from agentrun._openai import (
        ChatCompletion,
        ChatCompletionChunk,
        CompletionStream,
        aclose_clients,
        acompletion,
    )
    from agentrun._options import RunOptions
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
    from agentrun._settings import ConnectionSettings
    from agentrun._sync import (
        Client,
        MapIterator,
        SyncCompletionStream,
        SyncRunStream,
        completion,
    )

__version__ = "0.1.0"

#: LiteLLM's global switch: True leaves out parameters the service cannot honour instead of
#: raising `UnsupportedParamsError` (a `drop_params=` argument wins over it).
drop_params: bool = False

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
    "ImageFilePart": "agentrun._model",
    "ImageUrlPart": "agentrun._model",
    "LastError": "agentrun._model",
    "Message": "agentrun._model",
    "Run": "agentrun._model",
    "RunStep": "agentrun._model",
    "StepToolCall": "agentrun._model",
    "TextPart": "agentrun._model",
    "ToolCall": "agentrun._model",
    "UnknownPart": "agentrun._model",
    "Usage": "agentrun._model",
    "RunMap": "agentrun._fanout",
    "AsyncClient": "agentrun._client",
    "RunStream": "agentrun._client",
    "ChatCompletion": "agentrun._openai",
    "ChatCompletionChunk": "agentrun._openai",
    "CompletionStream": "agentrun._openai",
    "acompletion": "agentrun._openai",
    "stream_chunk_builder": "agentrun._litellm",
    "aclose_clients": "agentrun._openai",
    "Client": "agentrun._sync",
    "ConnectionSettings": "agentrun._settings",
    "RunOptions": "agentrun._options",
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
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AgentRunError",
    "AsyncClient",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "CertificateVerificationError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Client",
    "ClientStateError",
    "ClientStatistics",
    "CompletionStream",
    "ConfigurationError",
    "ConflictError",
    "ConnectionSettings",
    "ContextWindowExceededError",
    "ImageFilePart",
    "ImageUrlPart",
    "InternalServerError",
    "InvalidRequestError",
    "LastError",
    "LocalProtocolError",
    "MapIterator",
    "MapResult",
    "Message",
    "NotFoundError",
    "OpenAIError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "Run",
    "RunCancelledError",
    "RunError",
    "RunExpiredError",
    "RunFailedError",
    "RunFinished",
    "RunIncompleteError",
    "RunMap",
    "RunOptions",
    "RunRequest",
    "RunResult",
    "RunStep",
    "RunStream",
    "ServiceUnavailableError",
    "State",
    "StateChanged",
    "StepToolCall",
    "StreamEvent",
    "SyncCompletionStream",
    "SyncRunStream",
    "TextDelta",
    "TextPart",
    "Timeout",
    "ToolCall",
    "ToolCallDelta",
    "Transition",
    "UnknownPart",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
    "Usage",
    "__version__",
    "aclose_clients",
    "acompletion",
    "completion",
    "drop_params",
    "exceptions",
    "stream_chunk_builder",
]
