"""The values a run produces, neutral to the service protocol that carried them.

Pure code (stdlib, attrs and `agentrun._machine`): a `Run` snapshot, `Message` with its
content parts and annotations, `RunStep` with its `StepToolCall`s, the `ToolCall`s a run waits
for, `Usage` and `LastError`. Each protocol's wire module (`agentrun._classic.wire`, and the
Responses API's) parses its own JSON and converts into these; the driver and `RunResult` use
only these. Field names follow the Agents API (and OpenAI's) terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

from agentrun._machine import STATUS_TO_STATE, TERMINAL_STATES

__all__ = [
    "TERMINAL_STATUSES",
    "TEXT_PART_SEPARATOR",
    "ImageFilePart",
    "ImageUrlPart",
    "LastError",
    "Message",
    "Part",
    "Run",
    "RunStep",
    "StepToolCall",
    "TextPart",
    "ToolCall",
    "UnknownPart",
    "Usage",
]

#: Run statuses after which a run never changes again (derived from the machine's table).
TERMINAL_STATUSES: frozenset[str] = frozenset(
    status for status, state in STATUS_TO_STATE.items() if state in TERMINAL_STATES
)

#: How `Message.text` joins the text of several text parts. Separate parts are separate
#: blocks of the reply (a paragraph break in Markdown); joining with "" would glue the last
#: word of one part to the first of the next. Stream consumers that assemble `TextDelta`s
#: should insert the same separator when the part index changes.
TEXT_PART_SEPARATOR = "\n\n"


@attrs.frozen
class Usage:
    """Token counts of a run (``null`` on the wire until the run is terminal)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    #: ``usage.prompt_token_details.cached_tokens`` (Azure sends it on runs and steps; the
    #: recordings in Azure/azure-sdk-assets show ``{"cached_tokens": 0}``), None when absent.
    cached_tokens: int | None = None


@attrs.frozen
class LastError:
    """Why a run failed, e.g. ``code="rate_limit_exceeded"`` or ``"server_error"``."""

    code: str | None
    message: str | None


@attrs.frozen
class ToolCall:
    """One tool call the run waits for. For non-function tools `name` is None, `arguments` "";
    `raw` is the call object as received (e.g. an ``mcp`` approval request)."""

    id: str
    type: str
    name: str | None
    arguments: str
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class Run:
    """A ThreadRun. `raw` is the decoded JSON object as received (read it, do not mutate it).

    `required_tool_calls` holds the calls of ``required_action`` (whatever its ``type``:
    ``submit_tool_outputs``, or ``submit_tool_approval`` in preview versions; the type itself is
    in ``raw["required_action"]["type"]``), empty when no action is required.
    """

    id: str
    thread_id: str
    assistant_id: str
    status: str
    created_at: int
    started_at: int | None
    completed_at: int | None
    failed_at: int | None
    cancelled_at: int | None
    expires_at: int | None
    last_error: LastError | None
    usage: Usage | None
    required_tool_calls: tuple[ToolCall, ...]
    incomplete_reason: str | None
    metadata: Mapping[str, str]
    model: str | None
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)

    @property
    def is_terminal(self) -> bool:
        """Whether the run reached a status it never leaves."""
        return self.status in TERMINAL_STATUSES


@attrs.frozen
class TextPart:
    """A text content item; annotation indices are relative to this part's `text`."""

    text: str
    annotations: tuple[Mapping[str, Any], ...] = ()


@attrs.frozen
class ImageFilePart:
    file_id: str


@attrs.frozen
class ImageUrlPart:
    url: str


@attrs.frozen
class UnknownPart:
    """A content item of a type this version does not know; `raw` is the item as received."""

    type: str
    raw: Mapping[str, Any] = attrs.field(eq=False)


Part: TypeAlias = TextPart | ImageFilePart | ImageUrlPart | UnknownPart


@attrs.frozen
class Message:
    """A ThreadMessage. `raw` is the decoded JSON object as received.

    Only ``id``, ``thread_id``, ``role`` and ``content`` are required: the service sends message
    objects outside a stream without ``status``, ``completed_at``, ``incomplete_at`` and
    ``incomplete_details`` (azure-sdk-assets recordings, 2025-05-15-preview), and
    ``thread.message.created`` with ``content: []``.
    """

    id: str
    thread_id: str
    run_id: str | None
    assistant_id: str | None
    role: str
    #: ``in_progress``/``completed``/``incomplete`` in stream events; None in message objects
    #: outside a stream (create, get, list), where the service leaves the key out.
    status: str | None
    #: Unix seconds (whole seconds: two messages of one run often share it; never sort on it).
    created_at: int
    content: tuple[Part, ...]
    incomplete_reason: str | None
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)

    @property
    def text(self) -> str:
        """The text parts joined with `TEXT_PART_SEPARATOR` ("" when there is none)."""
        return TEXT_PART_SEPARATOR.join(p.text for p in self.content if type(p) is TextPart)

    @property
    def annotations(self) -> tuple[Mapping[str, Any], ...]:
        """All text parts' annotations, with ``start_index``/``end_index`` shifted to `text`."""
        result: list[Mapping[str, Any]] = []
        offset = 0
        first = True
        for part in self.content:
            if type(part) is not TextPart:
                continue
            if not first:
                offset += len(TEXT_PART_SEPARATOR)
            first = False
            for ann in part.annotations:
                if offset:
                    ann = dict(ann)
                    for key in ("start_index", "end_index"):
                        if type(ann.get(key)) is int:
                            ann[key] += offset
                result.append(ann)
            offset += len(part.text)
        return tuple(result)


@attrs.frozen
class StepToolCall:
    """One call of a ``tool_calls`` run step: a `function` call, or a built-in tool the service
    ran itself (``code_interpreter``, ``bing_grounding``, ``file_search``, ``azure_ai_search``,
    ``connected_agent``, ``openapi``, ``mcp``, or any type this version does not know).

    `name`, `arguments` and `output` are read from the type's own object where it has them:
    ``function`` and ``connected_agent``/``openapi``/``mcp`` -> ``name``, ``arguments``,
    ``output``; ``code_interpreter`` -> ``input`` as `arguments`, ``outputs`` (a list) as
    `output`; ``bing_grounding`` -> ``requesturl`` as `arguments`; ``file_search`` and
    ``azure_ai_search`` -> ``results``/``output`` as `output`. Everything else is in `raw`,
    the call object as received.
    """

    id: str | None
    type: str
    name: str | None
    arguments: str | None
    output: Any
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)


@attrs.frozen
class RunStep:
    """A RunStep (``thread.run.step`` object): ``message_creation`` (with `message_id`) or
    ``tool_calls`` (with `tool_calls`). Only ``id`` is required; the service sends steps
    without ``metadata``, and unknown step or call types are kept (``raw``)."""

    id: str
    type: str
    status: str | None
    message_id: str | None
    tool_calls: tuple[StepToolCall, ...]
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)
