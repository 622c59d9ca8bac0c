"""The reply of one invocation: what its run produced, and the result and errors built from it.

`Reply` gathers the run snapshot, the assistant messages, the run steps and the text already
handed out as deltas, from stream events, polls and listings alike; it builds the `RunResult`,
the deltas a stream consumer has not seen yet, and `run_error` the `RunError` of a run that did
not complete. Neutral to the protocol (it sees only `agentrun._model` values and the seam's
events).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any, Literal

from agentrun._errors import (
    RunCancelledError,
    RunError,
    RunExpiredError,
    RunFailedError,
    RunIncompleteError,
)
from agentrun._machine import RunMachine, State
from agentrun._model import Message, Run, RunStep, TextPart
from agentrun._protocol import Event, TextDelta, ToolCallDelta
from agentrun._results import RunResult, StateChanged, StreamEvent
from agentrun._results import TextDelta as PublicTextDelta
from agentrun._results import ToolCallDelta as PublicToolCallDelta

__all__ = ["Reply", "run_error"]

logger = logging.getLogger("agentrun")

#: No messages written before this invocation (shared: most invocations submit no outputs).
_NO_IDS: frozenset[str] = frozenset()
#: No text delivered, no tool call typed yet: one shared, read-only empty map until a reply
#: writes its first (a polled run delivers nothing until it ends; issue 15: memory per run in
#: flight). Read-only, so a write that bypasses `_delivered` fails loudly instead of sharing.
_NOTHING: Mapping[tuple[str, int], Any] = MappingProxyType({})


class Reply:
    """What a run produced, gathered from stream events, polls and message listings."""

    __slots__ = (
        "call_types",
        "delivered",
        "earlier",
        "last_active_at",
        "messages",
        "pending",
        "request_id",
        "requests",
        "run",
        "steps",
    )

    def __init__(self) -> None:
        self.run: Run | None = None
        # In the service's order: first sight in the event stream, or a list's own order
        # (a dict keeps the position of a key's first insertion when it is updated).
        self.messages: dict[str, Message] = {}
        # Messages the run wrote before this invocation (before the tool outputs it submits).
        self.earlier: AbstractSet[str] = _NO_IDS
        self.steps: dict[str, RunStep] = {}
        # The type of each tool call of a step, from its first delta (later ones may omit it).
        self.call_types: Mapping[tuple[str, int], str] = _NOTHING
        # Text handed to the caller as deltas, per (message id, content index): the fragments
        # in order (joined only when needed, not once per delta).
        self.delivered: Mapping[tuple[str, int], list[str]] = _NOTHING
        self.requests = 0
        self.pending: list[StateChanged] = []
        self.last_active_at: float | None = None
        self.request_id: str | None = None

    def result(self, agent: str, m: RunMachine, mode: Literal["stream", "poll"]) -> RunResult:
        """The invocation's result as of now (`m` says where the invocation is)."""
        col = self
        run = col.run
        msgs = [msg for mid, msg in col.messages.items() if mid not in col.earlier]
        return RunResult(
            agent_id=agent,
            state=m.state,
            thread_id=m.thread_id or "",
            run_id=m.run_id or "",
            messages=tuple(msgs),
            usage=run.usage if run else None,
            tool_calls=run.required_tool_calls if run and m.state is State.REQUIRES_ACTION else (),
            history=tuple(m.history),
            mode=mode,
            requests=col.requests,
            run=run,
            last_error=run.last_error if run else None,
            incomplete_reason=run.incomplete_reason if run else None,
            request_id=col.request_id,
            steps=tuple(col.steps.values()),
        )

    def undelivered(self, result: RunResult) -> list[StreamEvent]:
        """Deltas for the reply text the caller has not seen yet, in reply order."""
        out: list[StreamEvent] = []
        for msg in result.messages:
            for index, part in enumerate(msg.content):
                if type(part) is not TextPart or not part.text:
                    continue
                key = (msg.id, index)
                seen = "".join(self.delivered.get(key, ()))
                if part.text.startswith(seen) and len(part.text) > len(seen):
                    self._delivered()[key] = [part.text]
                    out.append(PublicTextDelta(part.text[len(seen) :], msg.id, index))
                elif not part.text.startswith(seen):
                    logger.debug("streamed text of message %s differs from its final text", msg.id)
        return out

    def _delivered(self) -> dict[tuple[str, int], list[str]]:
        """`delivered`, made this reply's own before its first write."""
        delivered = self.delivered
        if not isinstance(delivered, dict):
            delivered = self.delivered = {}
        return delivered

    def text_delta(self, message_id: str, index: int, text: str) -> PublicTextDelta | None:
        """The caller's event for a plain text delta (`RunProtocol.plain_delta`), noted as
        delivered; None for a message the run wrote before this invocation."""
        if message_id in self.earlier:
            return None
        key = (message_id, index)
        parts = self.delivered.get(key)
        if parts is None:
            self._delivered()[key] = [text]
        else:
            parts.append(text)
        return PublicTextDelta(text, message_id, index)

    def delivered_texts(self, message_id: str, index: int) -> list[str] | None:
        """The list the texts of (message id, content index) are noted in as delivered, for
        a caller that notes them itself (the driver's delta template); None for a message
        the run wrote before this invocation."""
        if message_id in self.earlier:
            return None
        return self._delivered().setdefault((message_id, index), [])

    def public_delta(self, ev: Event) -> StreamEvent | None:
        """The caller's event for a delta of the stream (None: nothing to hand out)."""
        col = self
        if type(ev) is TextDelta or isinstance(ev, TextDelta):
            message_id = ev.message_id
            if message_id in col.earlier:
                return None
            key = (message_id, ev.index)
            parts = col.delivered.get(key)
            if parts is None:
                col._delivered()[key] = [ev.text]
            else:
                parts.append(ev.text)
            return PublicTextDelta(ev.text, message_id, ev.index, ev.annotations)
        if isinstance(ev, ToolCallDelta):
            # Later deltas of a call may omit its type: the first one's holds for the call.
            key = (ev.step_id, ev.index)
            kind = col.call_types.get(key)
            if kind is None:
                calls = col.call_types
                if not isinstance(calls, dict):
                    calls = col.call_types = {}
                kind = calls[key] = ev.type or "function"
            return PublicToolCallDelta(ev.index, ev.id, ev.name, ev.arguments, kind)
        return None


def run_error(result: RunResult) -> RunError:
    """The `RunError` for a result that ended failed, cancelled, expired or incomplete."""
    code = result.last_error.code if result.last_error else None
    message = result.last_error.message if result.last_error else None
    if result.state is State.INCOMPLETE:
        code = result.incomplete_reason or code
    cls: type[RunError] = {
        State.FAILED: RunFailedError,
        State.CANCELLED: RunCancelledError,
        State.EXPIRED: RunExpiredError,
        State.INCOMPLETE: RunIncompleteError,
    }[result.state]
    detail = f": {code}" if code else ""
    if message:
        detail += f" ({message})"
    return cls(
        f"run {result.run_id} on thread {result.thread_id} ended {result.state.value}{detail}",
        status=result.state.value,
        thread_id=result.thread_id,
        run_id=result.run_id,
        code=code,
        error_message=message,
        history=result.history,
        result=result,
    )
