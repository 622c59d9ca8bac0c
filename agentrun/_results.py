"""What `AsyncClient` hands back: run results, stream events, batch items and statistics.

Frozen attrs values, so they can cross threads (the sync wrapper) and be kept safely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from agentrun._machine import State, Transition
from agentrun._model import ImageFilePart, LastError, Message, Run, RunStep, ToolCall, Usage

__all__ = [
    "ClientStatistics",
    "MapResult",
    "RunFinished",
    "RunRequest",
    "RunResult",
    "StateChanged",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
]


@attrs.frozen
class RunResult:
    """The outcome of one invocation.

    `state` is `completed`, or `requires_action` when the agent called tools (their calls are
    in `tool_calls`; submit outputs with `AsyncClient.run(..., tool_outputs=...)`).
    `messages` are this run's assistant messages in the service's order (stream event order;
    a message list's own order, never sorted by ``created_at``, which is whole seconds), and
    `text` their text joined by a blank line. A run may write several messages, with tool
    steps between them; after tool outputs, only the messages written since are here.
    `tool_calls` holds only the calls the caller must answer (``function`` calls, or other
    types in ``required_action``); tools the service runs itself (``code_interpreter``,
    ``bing_grounding``, ``file_search``, ``connected_agent``, ...) are in `steps`, the run's
    steps in the service's order: from the event stream, or listed after a polled (or broken)
    run whose ``tools`` include a built-in tool (otherwise not listed: empty when polled).
    `history` records every state entered with the driver's clock (seconds, monotonic);
    `durations` sums the time spent in each state.
    """

    agent_id: str
    state: State
    thread_id: str
    run_id: str
    messages: tuple[Message, ...]
    usage: Usage | None
    tool_calls: tuple[ToolCall, ...]
    history: tuple[Transition, ...]
    mode: str
    requests: int
    run: Run | None = None
    last_error: LastError | None = None
    incomplete_reason: str | None = None
    #: The service's id for the request that started (or resumed) the run, when it sent one.
    request_id: str | None = None
    steps: tuple[RunStep, ...] = ()

    @property
    def builtin_tool_calls(self) -> tuple[Any, ...]:
        """The `StepToolCall`s of `steps` the service ran itself (every type but ``function``)."""
        return tuple(
            call for step in self.steps for call in step.tool_calls if call.type != "function"
        )

    @property
    def images(self) -> tuple[ImageFilePart, ...]:
        """The ``image_file`` content of the messages (e.g. a code-interpreter chart)."""
        return tuple(p for m in self.messages for p in m.content if type(p) is ImageFilePart)

    @property
    def text(self) -> str:
        return "\n\n".join(m.text for m in self.messages if m.text)

    @property
    def status(self) -> str:
        return self.state.value

    @property
    def durations(self) -> Mapping[State, float]:
        out: dict[State, float] = {}
        for prev, nxt in zip(self.history, self.history[1:], strict=False):
            out[prev.state] = out.get(prev.state, 0.0) + (nxt.at - prev.at)
        return out

    @property
    def elapsed(self) -> float:
        return self.history[-1].at - self.history[0].at if self.history else 0.0


@attrs.frozen
class StateChanged:
    """The invocation entered `state` at `at` (driver clock)."""

    state: State
    previous: State
    at: float
    thread_id: str | None
    run_id: str | None


@attrs.frozen
class TextDelta:
    """A fragment of the reply text, as the service streamed it."""

    text: str
    message_id: str
    index: int = 0
    annotations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class ToolCallDelta:
    """A fragment of a tool call: the first carries `id` and `name`, later ones `arguments`."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    type: str = "function"


@attrs.frozen
class RunFinished:
    """The last event of a stream: the invocation's result."""

    result: RunResult


StreamEvent = StateChanged | TextDelta | ToolCallDelta | RunFinished


@attrs.frozen
class RunRequest:
    """One invocation for `AsyncClient.map`: the agent, the input, and `run()` keyword options."""

    agent: str
    input: str | Sequence[Mapping[str, Any]]
    options: Mapping[str, Any] = attrs.field(factory=dict)
    key: Any = None


@attrs.frozen
class MapResult:
    """One finished item of `AsyncClient.map`: its request, and a result or an error."""

    index: int
    request: RunRequest
    result: RunResult | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class ClientStatistics:
    """Counters of one client since it was created.

    `state_time` maps a state to percentiles (p50, p90, p99, max) of the seconds invocations
    spent in it, over the most recent invocations.
    """

    requests_sent: int
    retries: int
    token_requests: int
    connections_opened: int
    responses_by_status: Mapping[int, int]
    runs_started: int
    runs_in_flight: int
    runs_by_state: Mapping[str, int]
    state_time: Mapping[str, Mapping[str, float]]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..1); NaN when there are none."""
    if not values:
        return math.nan
    data = sorted(values)
    return data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max of `values` (nearest rank), or an empty dict."""
    if not values:
        return {}
    data = sorted(values)
    return {
        "p50": percentile(data, 0.5),
        "p90": percentile(data, 0.9),
        "p99": percentile(data, 0.99),
        "max": data[-1],
    }
