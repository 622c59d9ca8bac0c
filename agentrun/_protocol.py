"""The protocol seam: what the run driver needs from one service API, and nothing more.

The driver (`agentrun._driver`) carries out the decisions of the run state machine
(`agentrun._machine`): send this, sleep until then, read the stream, finish. What those
decisions mean on the wire differs per service API, and sits behind `RunProtocol`:

* which request each machine `Op` becomes (`request`), and how its answer reads (`parse_run`,
  `parse_thread_id`);
* how one server-sent event reads, as the neutral `Event`s below (`stream_events`), and which
  events a caller without an event stream never needs decoded (`quiet_events`);
* how the reply is listed (`messages`, `steps`) and how the run of a broken create is found
  (`latest_run`); these make their own requests through the `Call` the driver hands them, so a
  protocol never holds a transport, a clock or a task.

Implementations: `agentrun._classic.protocol.ClassicProtocol` (threads/runs) and
`agentrun._responses.protocol.ResponsesProtocol` (the Responses API, Foundry Agents v2); the
client picks one per invocation (`Invocation.protocol`, `DriverContext.protocol_for`). v2's
create is one ``POST /openai/v1/responses`` (the machine's `CREATE_RUN`, or
`CREATE_THREAD_AND_RUN` with ``previous_response_id``), streamed or in background mode and
polled with ``GET`` (`GET_RUN`), cancelled with ``POST .../cancel`` (`CANCEL_RUN`); a
conversation is the "thread" and a new one is its own request (`creates_thread_first`). Three
members exist for it: tool outputs make a new response (`new_run_per_invocation`: the driver
looks up no waiting run and starts the machine without a run id), and the reply is the final
response's own output (`reply_of`: nothing is listed). Implementations import nothing of
each other; the values they exchange with the driver are neutral (`agentrun._model`,
`agentrun._inputs` and the events here). Pure: no I/O library is imported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeAlias

import attrs

from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._machine import Op
from agentrun._model import Message, Run, RunStep
from agentrun._options import Mode
from agentrun._sse import SSEEvent

__all__ = [
    "ApiRequest",
    "Call",
    "Event",
    "Invocation",
    "MessageSeen",
    "Mode",
    "RunProtocol",
    "RunUpdated",
    "StepSeen",
    "StreamEnded",
    "StreamFailed",
    "TextDelta",
    "ThreadStarted",
    "ToolCallDelta",
]


class ApiRequest(Protocol):
    """One HTTP request as a protocol builds it; the transport adds base URL and api-version.

    Each wire module has its own frozen class with these attributes; `path` is relative to the
    project base URL with every id quoted as one path segment.
    """

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def params(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def json(self) -> Mapping[str, Any] | None: ...


#: Sends one request of the invocation (bounded by its deadline) and returns the decoded body.
Call: TypeAlias = Callable[[ApiRequest], Awaitable[Any]]


@attrs.define
class Invocation:
    """One call of `run()`/`stream()`, checked: what the caller asked for.

    `thread_id` is the caller's thread (or conversation), `run_id` the run it follows or
    answers; `floor` (Unix seconds) separates runs of the thread made before this invocation.
    """

    agent: str
    messages: tuple[InputMessage, ...]
    options: RunOptions
    thread_id: str | None
    run_id: str | None
    tool_outputs: tuple[ToolOutput, ...]
    timeout: float | None
    mode: Mode
    floor: float = 0.0
    #: The `RunProtocol.name` of the API that serves `agent` (``"classic"``, ``"responses"``).
    protocol: str = "classic"


# -- the neutral stream events ----------------------------------------------------------------


@attrs.frozen
class ThreadStarted:
    """The stream named the thread (conversation) it created."""

    thread_id: str


@attrs.frozen
class RunUpdated:
    """The run as of this event (its `status` feeds the machine)."""

    run: Run


@attrs.frozen
class StepSeen:
    """A run step as of this event; `run_id` is the run it names (None when it names none)."""

    step: RunStep
    run_id: str | None


@attrs.frozen
class MessageSeen:
    """A message of the reply as of this event (whole, not a delta)."""

    message: Message


@attrs.frozen
class TextDelta:
    """A fragment of text of message `message_id`, content part `index`."""

    message_id: str
    index: int
    text: str
    annotations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class ToolCallDelta:
    """A fragment of tool call `index` of step `step_id` (id, type and name in the first one)."""

    step_id: str
    index: int
    id: str | None
    type: str | None
    name: str | None
    arguments: str


@attrs.frozen
class StreamEnded:
    """The service said the stream is over (the body ends after it)."""


@attrs.frozen
class StreamFailed:
    """An error event inside the stream; the run's own status (polled next) says the rest."""

    code: str | None
    message: str


Event: TypeAlias = (
    ThreadStarted
    | RunUpdated
    | StepSeen
    | MessageSeen
    | TextDelta
    | ToolCallDelta
    | StreamEnded
    | StreamFailed
)


class RunProtocol(Protocol):
    """One service API as the driver sees it. Instances are shared by every invocation of a
    client, so they hold no per-invocation state."""

    #: A short name for logs and docs (``"classic"``, ``"responses"``).
    name: str
    #: SSE event names that only a caller with an event stream needs; others skip decoding them.
    quiet_events: frozenset[str]
    #: The SSE event name of the usual text delta (most of a stream), taken by `plain_delta`.
    delta_event: str
    #: Events that each carry one object's whole snapshot, which a later snapshot of the same
    #: object (same kind, same id) replaces: ``{event name: kind}``. The driver keeps only the
    #: latest frame of each object while the event stream is read, and decodes it when the
    #: streaming phase ends (`snapshot_id` names the object without decoding the frame).
    snapshot_events: Mapping[str, str]
    #: Whether every invocation creates a run of its own, tool outputs included (the Responses
    #: API: outputs are input of a new response). When False (classic), tool outputs resume
    #: the thread's waiting run, which the driver looks up first.
    new_run_per_invocation: bool

    def creates_thread_first(self, inv: Invocation) -> bool:
        """Whether the invocation starts with `Op.CREATE_THREAD` (its own request) rather than
        creating the thread, if any, with the run."""
        ...

    def reply_of(self, run: Run) -> tuple[Message, ...] | None:
        """The reply `run` carries in itself (a response's output), or None when the reply
        must be listed (`messages`)."""
        ...

    def request(
        self,
        op: Op,
        inv: Invocation,
        thread_id: str | None,
        run_id: str | None,
        *,
        stream: bool,
    ) -> ApiRequest:
        """The request for `op` (every op but `LIST_MESSAGES` and `FIND_RUN`).

        Raises `ConfigurationError` for input the API cannot take."""
        ...

    def parse_run(self, data: Any) -> Run:
        """The answer of a create, a poll or a cancel, as a run snapshot."""
        ...

    def parse_thread_id(self, data: Any) -> str:
        """The id in the answer of `Op.CREATE_THREAD`."""
        ...

    def stream_events(self, sse: SSEEvent) -> list[Event]:
        """One server-sent event as neutral events (unknown events: an empty list)."""
        ...

    def plain_delta(self, data: str) -> tuple[str, int, str] | None:
        """The usual text delta, from the `data` of a frame named `delta_event`, as
        ``(message id, content index, text)``: the values of the one `TextDelta` that
        `stream_events` would give for that frame, without building it (the per-delta hot
        path).

        None for any other shape, malformed data included: `stream_events` then decides, and
        raises what it raises."""
        ...

    def snapshot_id(self, data: str) -> str | None:
        """The id of the object in the `data` of a frame named in `snapshot_events`, read
        without decoding it; None when it cannot be read so (the frame is decoded at once)."""
        ...

    def uses_builtin_tools(self, run: Run) -> bool:
        """Whether the run may use tools the service runs itself (their steps are listed)."""
        ...

    async def latest_run(self, call: Call, thread_id: str) -> Run | None:
        """The newest run of `thread_id`, or None (finds the run of a create cut short)."""
        ...

    def messages(self, call: Call, thread_id: str, run_id: str | None) -> AsyncIterator[Message]:
        """The messages of run `run_id` (all of the thread when None), oldest first."""
        ...

    async def steps(self, call: Call, thread_id: str, run_id: str) -> list[RunStep]:
        """The steps of run `run_id`, oldest first."""
        ...
