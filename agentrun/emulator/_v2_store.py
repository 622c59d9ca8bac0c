"""Foundry Agents v2 records: agent versions, conversations and responses, and their JSON.

The shapes follow ``reference/agents-v2-api.md`` and the ``azure-ai-projects`` 2.x test
recordings (``agent.version``, ``conversation``, ``response`` objects, conversation items).
Pure data: the service logic is in `_v2`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs

from ._settings import Timing, V2AgentSpec

__all__ = [
    "ACTIVE",
    "AgentVersionRec",
    "ConversationRec",
    "ResponseRec",
    "new_v2_id",
]

JSON = dict[str, Any]

#: Response statuses in which work is still going on.
ACTIVE = frozenset({"queued", "in_progress"})


def new_v2_id(prefix: str) -> str:
    """An id in the service's style: ``resp_``/``conv_``/``msg_``/``fc_`` + 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def now() -> int:
    return int(time.time())


@attrs.define
class AgentVersionRec:
    """One immutable version of a prompt agent (``object: "agent.version"``)."""

    name: str
    version: str
    created_at: int
    model: str
    instructions: str = ""
    description: str = ""
    tools: list[JSON] = attrs.field(factory=list)
    metadata: dict[str, str] = attrs.field(factory=dict)
    definition_extra: JSON = attrs.field(factory=dict)  # temperature, top_p, ... as sent
    timing: Timing | None = None

    @classmethod
    def from_spec(cls, spec: V2AgentSpec, created_at: int) -> AgentVersionRec:
        return cls(
            name=spec.name,
            version=spec.version,
            created_at=created_at,
            model=spec.model,
            instructions=spec.instructions,
            description=spec.description,
            tools=[dict(t) for t in spec.tools],
            metadata=dict(spec.metadata),
            timing=spec.timing,
        )

    def definition(self) -> JSON:
        d: JSON = {"kind": "prompt", "model": self.model}
        if self.instructions:
            d["instructions"] = self.instructions
        if self.tools:
            d["tools"] = [dict(t) for t in self.tools]
        d.update(self.definition_extra)
        return d

    def to_json(self) -> JSON:
        return {
            "metadata": dict(self.metadata),
            "object": "agent.version",
            "id": f"{self.name}:{self.version}",
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "created_at": self.created_at,
            "definition": self.definition(),
            "status": "active",
        }

    def reference(self) -> JSON:
        return {"type": "agent_reference", "name": self.name, "version": self.version}


@attrs.define
class ConversationRec:
    id: str
    created_at: int
    metadata: dict[str, str] = attrs.field(factory=dict)
    items: list[JSON] = attrs.field(factory=list)

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
        }


@attrs.define(eq=False)
class ResponseRec:
    """One response: its request, its state, and every stream event it produced so far."""

    id: str
    created_at: int
    agent: AgentVersionRec
    background: bool
    stream: bool
    conversation_id: str | None
    previous_response_id: str | None
    input_items: list[JSON]
    metadata: dict[str, str] = attrs.field(factory=dict)
    max_output_tokens: int | None = None
    store: bool = True
    status: str = "queued"
    output: list[JSON] = attrs.field(factory=list)
    usage: JSON | None = None
    error: JSON | None = None
    incomplete_details: JSON | None = None
    completed_at: int | None = None
    # stream events (dicts with type and sequence_number), for live and resumed streams
    events: list[JSON] = attrs.field(factory=list)
    changed: asyncio.Event = attrs.field(factory=asyncio.Event)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    forced_fault: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def emit(self, event_type: str, **fields: Any) -> None:
        event: JSON = {"type": event_type, "sequence_number": len(self.events)}
        event.update(fields)
        self.events.append(event)
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def finish(self) -> None:
        self.done.set()
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def to_json(self) -> JSON:
        agent = self.agent
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "content_filters": None,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "error": dict(self.error) if self.error else None,
            "incomplete_details": dict(self.incomplete_details)
            if self.incomplete_details
            else None,
            "instructions": agent.instructions or None,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": None,
            "model": agent.model,
            "output": [_copy(item) for item in self.output],
            "parallel_tool_calls": True,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.store,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [dict(t) for t in agent.tools],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": dict(self.usage) if self.usage else None,
            "user": None,
            "metadata": dict(self.metadata),
            "agent_reference": agent.reference(),
        }


def _copy(item: Mapping[str, Any]) -> JSON:
    out = dict(item)
    if isinstance(out.get("content"), list):
        out["content"] = [
            {**p, "annotations": list(p["annotations"])} if "annotations" in p else dict(p)
            for p in out["content"]
        ]
    return out
