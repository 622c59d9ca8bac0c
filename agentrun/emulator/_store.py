"""In-memory records of agents, threads, messages, runs and run steps, with paging and TTL.

Records are mutable attrs classes owned by the event loop thread; `to_json` gives the wire
shape of the reference, field for field.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs

__all__ = [
    "TERMINAL",
    "AgentRec",
    "MessageRec",
    "RunRec",
    "StepRec",
    "Store",
    "ThreadRec",
    "new_id",
    "page",
]

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})

JSON = dict[str, Any]


def new_id(prefix: str) -> str:
    """An id like the service's: a prefix and 24 random alphanumerics."""
    return f"{prefix}_{secrets.token_hex(12)}"


@attrs.define(eq=False)
class AgentRec:
    id: str
    created_at: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[JSON] = attrs.Factory(list)
    tool_resources: JSON | None = None
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    response_format: Any = "auto"
    metadata: dict[str, str] = attrs.Factory(dict)
    # emulator-only: per-agent timing override and scripted behaviour
    timing: Any = None
    script: str | None = None

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "assistant",
            "created_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_resources": self.tool_resources if self.tool_resources is not None else {},
            "temperature": self.temperature,
            "top_p": self.top_p,
            "response_format": self.response_format,
            "metadata": self.metadata,
        }


@attrs.define(eq=False)
class MessageRec:
    id: str
    created_at: int
    thread_id: str
    role: str
    content: list[JSON]
    status: str = "completed"
    incomplete_details: JSON | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[JSON] = attrs.Factory(list)
    metadata: dict[str, str] = attrs.Factory(dict)

    def text(self) -> str:
        parts = []
        for item in self.content:
            if item.get("type") == "text":
                text = item.get("text")
                if isinstance(text, dict):
                    parts.append(str(text.get("value", "")))
        return "\n".join(parts)

    def to_json(self) -> JSON:
        """The message as the service returns it outside a stream (create, get, list).

        The real service leaves out `status`, `completed_at`, `incomplete_at` and
        `incomplete_details` here (azure-sdk-assets recordings, real-service.md H1); only
        the `thread.message.*` stream events carry them (`to_event_json`).
        """
        return {
            "id": self.id,
            "object": "thread.message",
            "created_at": self.created_at,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "role": self.role,
            "content": self.content,
            "attachments": self.attachments,
            "metadata": self.metadata,
        }

    def to_event_json(self, *, content: list[JSON] | None = None) -> JSON:
        """The data of a `thread.message.*` event: with `status` and the related fields.

        `content` replaces the message's content (``[]`` on `created` / `in_progress`, as the
        service sends them).
        """
        return {
            "id": self.id,
            "object": "thread.message",
            "created_at": self.created_at,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "status": self.status,
            "incomplete_details": self.incomplete_details,
            "completed_at": self.completed_at,
            "incomplete_at": self.incomplete_at,
            "role": self.role,
            "content": self.content if content is None else content,
            "attachments": self.attachments,
            "metadata": self.metadata,
        }


@attrs.define(eq=False)
class StepRec:
    id: str
    type: str
    assistant_id: str
    thread_id: str
    run_id: str
    created_at: int
    step_details: JSON
    status: str = "in_progress"
    last_error: JSON | None = None
    expires_at: int | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    usage: JSON | None = None

    def to_json(self) -> JSON:
        """The run step; like the service's, it has no `metadata` key (real-service.md L7)."""
        return {
            "id": self.id,
            "object": "thread.run.step",
            "created_at": self.created_at,
            "run_id": self.run_id,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "type": self.type,
            "status": self.status,
            "cancelled_at": self.cancelled_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "failed_at": self.failed_at,
            "last_error": self.last_error,
            "step_details": self.step_details,
            "usage": self.usage,
        }


class Listener(Protocol):
    def put_nowait(self, item: bytes | None, /) -> None: ...


@attrs.define(eq=False)
class RunRec:
    id: str
    thread_id: str
    assistant_id: str
    created_at: int
    model: str
    instructions: str
    tools: list[JSON]
    status: str = "queued"
    required_action: JSON | None = None
    last_error: JSON | None = None
    expires_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    incomplete_details: JSON | None = None
    usage: JSON | None = None
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: JSON | None = attrs.Factory(
        lambda: {"type": "auto", "last_messages": None}
    )
    tool_choice: Any = "auto"
    response_format: Any = "auto"
    metadata: dict[str, str] = attrs.Factory(dict)
    tool_resources: JSON | None = None
    parallel_tool_calls: bool = True
    # -- emulator-only state, never on the wire
    steps: list[StepRec] = attrs.Factory(list)
    stream: bool = False
    created_at_ms: float = 0.0
    started_at_ms: float | None = None
    first_delta_at_ms: float | None = None
    completed_at_ms: float | None = None
    listeners: list[Listener] = attrs.Factory(list)
    task: asyncio.Task[None] | None = None
    tool_outputs: asyncio.Future[list[JSON]] | None = None
    pending_calls: list[JSON] = attrs.Factory(list)
    answered_calls: list[tuple[str, str, str]] = attrs.Factory(list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forced_fault: str | None = None  # "run_failed:<code>", "fail_after_text:<code>", "run_expired"
    timing: Any = None
    script: str | None = None  # the agent's scripted behaviour (AgentSpec.script)
    script_phase: int = 0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": self.created_at,
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "status": self.status,
            "started_at": self.started_at,
            "expires_at": self.expires_at,
            "cancelled_at": self.cancelled_at,
            "failed_at": self.failed_at,
            "completed_at": self.completed_at,
            "required_action": self.required_action,
            "last_error": self.last_error,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_resources": self.tool_resources if self.tool_resources is not None else {},
            "metadata": self.metadata,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_completion_tokens": self.max_completion_tokens,
            "max_prompt_tokens": self.max_prompt_tokens,
            "truncation_strategy": self.truncation_strategy,
            "incomplete_details": self.incomplete_details,
            "usage": self.usage,
            "response_format": self.response_format,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
        }

    def summary(self) -> JSON:
        """The `/_emulator/runs` entry."""
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "assistant_id": self.assistant_id,
            "status": self.status,
            "metadata": self.metadata,
            "stream": self.stream,
            "created_at_ms": self.created_at_ms,
            "started_at_ms": self.started_at_ms,
            "first_delta_at_ms": self.first_delta_at_ms,
            "completed_at_ms": self.completed_at_ms,
        }


@attrs.define(eq=False)
class ThreadRec:
    id: str
    created_at: int
    last_activity: float
    metadata: dict[str, str] = attrs.Factory(dict)
    tool_resources: JSON | None = None
    messages: list[MessageRec] = attrs.Factory(list)
    message_index: dict[str, MessageRec] = attrs.Factory(dict)
    runs: list[RunRec] = attrs.Factory(list)
    run_index: dict[str, RunRec] = attrs.Factory(dict)
    active_run: RunRec | None = None

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": self.metadata,
            "tool_resources": self.tool_resources if self.tool_resources is not None else {},
        }


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)


def page(
    items: Sequence[T],
    *,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
    render: Callable[[T], JSON],
) -> JSON:
    """One page of a list in the service's envelope; `items` are in creation order."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after:
        idx = next((i for i, it in enumerate(ordered) if it.id == after), None)
        ordered = [] if idx is None else ordered[idx + 1 :]
    if before:
        idx = next((i for i, it in enumerate(ordered) if it.id == before), None)
        ordered = [] if idx is None else ordered[:idx]
    chosen = ordered[:limit]
    data = [render(it) for it in chosen]
    return {
        "object": "list",
        "data": data,
        "first_id": chosen[0].id if chosen else None,
        "last_id": chosen[-1].id if chosen else None,
        "has_more": len(ordered) > limit,
    }


class Store:
    """All emulator state, with time-based expiry of idle threads."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.agents: dict[str, AgentRec] = {}
        self.threads: dict[str, ThreadRec] = {}
        self.runs: dict[str, RunRec] = {}

    def now(self) -> int:
        return int(self.clock())

    def clear(self) -> None:
        self.agents.clear()
        self.threads.clear()
        self.runs.clear()

    def new_thread(self, metadata: dict[str, str], tool_resources: JSON | None) -> ThreadRec:
        thread = ThreadRec(
            id=new_id("thread"),
            created_at=self.now(),
            last_activity=self.clock(),
            metadata=metadata,
            tool_resources=tool_resources,
        )
        self.threads[thread.id] = thread
        return thread

    def add_message(
        self,
        thread: ThreadRec,
        role: str,
        content: list[JSON],
        *,
        attachments: list[JSON] | None = None,
        metadata: dict[str, str] | None = None,
        status: str = "completed",
        assistant_id: str | None = None,
        run_id: str | None = None,
    ) -> MessageRec:
        now = self.now()
        msg = MessageRec(
            id=new_id("msg"),
            created_at=now,
            thread_id=thread.id,
            role=role,
            content=content,
            status=status,
            completed_at=now if status == "completed" else None,
            assistant_id=assistant_id,
            run_id=run_id,
            attachments=attachments or [],
            metadata=metadata or {},
        )
        thread.messages.append(msg)
        thread.message_index[msg.id] = msg
        thread.last_activity = self.clock()
        return msg

    def add_run(self, thread: ThreadRec, run: RunRec) -> None:
        thread.runs.append(run)
        thread.run_index[run.id] = run
        thread.active_run = run
        thread.last_activity = self.clock()
        self.runs[run.id] = run

    def delete_thread(self, thread: ThreadRec) -> None:
        self.threads.pop(thread.id, None)
        for run in thread.runs:
            self.runs.pop(run.id, None)

    def sweep(self, ttl: float) -> int:
        """Drop threads idle for longer than `ttl` seconds (and their runs and messages)."""
        cutoff = self.clock() - ttl
        expired = [
            t
            for t in self.threads.values()
            if t.last_activity < cutoff and (t.active_run is None or not t.active_run.active)
        ]
        for thread in expired:
            self.delete_thread(thread)
        return len(expired)
