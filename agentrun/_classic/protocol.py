"""The classic threads/runs API behind the protocol seam (`agentrun._protocol.RunProtocol`).

Ops become the routes of ``reference/agents-rest-api.md``: ``POST /threads/runs``
(`CREATE_THREAD_AND_RUN`), ``POST /threads`` (`CREATE_THREAD`), ``POST /threads/{t}/runs``
(`CREATE_RUN`, the caller's messages as ``additional_messages``), ``POST .../submit_tool_outputs``,
``GET /threads/{t}/runs/{r}``, ``POST .../cancel``; the reply is listed with
``GET /threads/{t}/messages?run_id=`` and the steps with ``GET .../runs/{r}/steps``, both paged
with ``after``. Stream events (``thread.run.*``, ``thread.message.*``, ``thread.run.step.*``,
``error``, ``done``) become the seam's neutral events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agentrun._classic import wire
from agentrun._errors import ConfigurationError
from agentrun._machine import Op
from agentrun._model import Message, Run, RunStep
from agentrun._protocol import (
    ApiRequest,
    Call,
    Event,
    Invocation,
    MessageSeen,
    RunUpdated,
    StepSeen,
    StreamEnded,
    StreamFailed,
    TextDelta,
    ThreadStarted,
    ToolCallDelta,
)
from agentrun._sse import SSEEvent

__all__ = ["ClassicProtocol"]


class ClassicProtocol:
    """`RunProtocol` for the classic Foundry Agents API (threads, messages, runs)."""

    name = "classic"
    #: The reply arrives whole in ``thread.message.completed``, so a caller without an event
    #: stream needs neither its deltas nor the step bookkeeping (``thread.run.step.completed``
    #: is decoded: it holds a step whole, for `RunResult.steps`).
    quiet_events = frozenset(
        {
            "thread.message.delta",
            "thread.message.created",
            "thread.message.in_progress",
            "thread.run.step.created",
            "thread.run.step.in_progress",
            "thread.run.step.delta",
        }
    )

    #: Most of a stream; `plain_delta` takes the usual one-part text delta whole.
    delta_event = "thread.message.delta"
    #: The usual text delta's values from its frame's data (`RunProtocol.plain_delta`).
    plain_delta = staticmethod(wire.text_delta_of)

    #: A message's and a step's events each carry its whole object; the latest replaces the
    #: earlier (created, in_progress, then completed), so only that one is decoded.
    snapshot_events = wire.SNAPSHOT_EVENTS
    #: The object's id from the start of its frame (`RunProtocol.snapshot_id`).
    snapshot_id = staticmethod(wire.snapshot_id)

    #: Tool outputs resume the thread's waiting run.
    new_run_per_invocation = False

    def __repr__(self) -> str:
        return "ClassicProtocol()"

    def creates_thread_first(self, inv: Invocation) -> bool:
        # /threads/runs takes no additional_instructions: create the thread first then.
        return inv.thread_id is None and inv.options.additional_instructions is not None

    def reply_of(self, run: Run) -> tuple[Message, ...] | None:
        return None  # the reply is listed: GET /threads/{t}/messages?run_id=

    def request(
        self,
        op: Op,
        inv: Invocation,
        thread_id: str | None,
        run_id: str | None,
        *,
        stream: bool,
    ) -> ApiRequest:
        if op is Op.CREATE_THREAD_AND_RUN:
            return wire.create_thread_and_run(inv.agent, inv.messages, inv.options, stream=stream)
        if op is Op.CREATE_THREAD:
            return wire.create_thread(inv.messages)
        assert thread_id is not None
        if op is Op.CREATE_RUN:
            # Messages go with the run on a caller's thread; on a thread we just created they
            # were posted with it.
            extra = inv.messages if inv.thread_id is not None else ()
            return wire.create_run(
                thread_id, inv.agent, inv.options, additional_messages=extra, stream=stream
            )
        if run_id is None:
            raise ConfigurationError("tool_outputs need run_id")  # resolved before driving
        if op is Op.SUBMIT_TOOL_OUTPUTS:
            return wire.submit_tool_outputs(thread_id, run_id, inv.tool_outputs, stream=stream)
        if op is Op.GET_RUN:
            return wire.get_run(thread_id, run_id)
        if op is Op.CANCEL_RUN:
            return wire.cancel_run(thread_id, run_id)
        raise AssertionError(f"no single request for {op}")  # pragma: no cover

    def parse_run(self, data: Any) -> Run:
        return wire.parse_run(data)

    def parse_thread_id(self, data: Any) -> str:
        return wire.parse_thread(data).id

    def stream_events(self, sse: SSEEvent) -> list[Event]:
        name = sse.event
        if name == "thread.message.delta":
            # Most of a stream: one text part, straight to the neutral event.
            plain = wire.plain_text_delta(sse)
            if plain is not None:
                return [TextDelta(*plain)]
        elif name in wire.RUN_EVENTS:
            # The rest of a stream is mostly the run's own events: straight to the neutral one.
            return [RunUpdated(wire.parse_run_event(sse))]
        # A step event without a parseable step changes nothing the driver keeps: dropped.
        return [
            _neutral(ev)
            for ev in wire.parse_stream_event(sse)
            if not (isinstance(ev, wire.StepEvent) and ev.step is None)
        ]

    def uses_builtin_tools(self, run: Run) -> bool:
        # The run's ``tools`` echo names the tools it may use.
        tools = run.raw.get("tools")
        return isinstance(tools, list) and any(
            isinstance(t, dict) and t.get("type") != "function" for t in tools
        )

    async def latest_run(self, call: Call, thread_id: str) -> Run | None:
        page = wire.parse_run_page(await call(wire.list_runs(thread_id, limit=1)))
        return page.data[0] if page.data else None

    async def messages(
        self, call: Call, thread_id: str, run_id: str | None
    ) -> AsyncIterator[Message]:
        after: str | None = None
        while True:
            req = wire.list_messages(thread_id, run_id=run_id, order="asc", after=after)
            page = wire.parse_message_page(await call(req))
            for msg in page.data:
                yield msg
            if not page.has_more or not page.last_id or not page.data:
                return
            after = page.last_id

    async def steps(self, call: Call, thread_id: str, run_id: str) -> list[RunStep]:
        steps: list[RunStep] = []
        after: str | None = None
        while True:
            page = wire.parse_run_step_page(
                await call(wire.list_run_steps(thread_id, run_id, after=after))
            )
            steps.extend(page.data)
            if not page.has_more or not page.last_id or not page.data:
                return steps
            after = page.last_id


def _neutral(ev: wire.StreamEvent) -> Event:
    """A classic stream event as the seam's neutral event."""
    if isinstance(ev, wire.RunEvent):
        return RunUpdated(ev.run)
    if isinstance(ev, wire.TextDelta):
        return TextDelta(ev.message_id, ev.index, ev.text, ev.annotations)
    if isinstance(ev, wire.ToolCallDelta):
        return ToolCallDelta(ev.step_id, ev.index, ev.id, ev.type, ev.name, ev.arguments)
    if isinstance(ev, wire.MessageEvent):
        return MessageSeen(ev.message)
    if isinstance(ev, wire.StepEvent):
        assert ev.step is not None  # filtered by `stream_events`
        return StepSeen(ev.step, _run_id_of(ev.raw))
    if isinstance(ev, wire.ThreadCreated):
        return ThreadStarted(ev.thread.id)
    if isinstance(ev, wire.StreamDone):
        return StreamEnded()
    return StreamFailed(ev.code, ev.message)


def _run_id_of(raw: Any) -> str | None:
    value = raw.get("run_id") if hasattr(raw, "get") else None
    return value if isinstance(value, str) else None
