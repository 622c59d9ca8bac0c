"""Foundry Agents v2: the Responses API, conversations and agent versions, emulated.

Routes (under ``/api/projects/{project}``; see ``docs/v2.md`` and ``reference/agents-v2-api.md``):

* data plane, OpenAI-compatible, ``api-version`` optional (the ``openai`` client sends none):
  ``POST /openai/v1/responses`` (plain, ``stream``, ``background``),
  ``GET|DELETE /openai/v1/responses/{id}`` (GET with ``?stream=true&starting_after=N``
  replays a streamed response's events), ``POST /openai/v1/responses/{id}/cancel``,
  ``POST /openai/v1/conversations``, ``GET|POST|DELETE /openai/v1/conversations/{id}``,
  ``GET|POST /openai/v1/conversations/{id}/items``,
  ``GET /openai/v1/conversations/{id}/items/{item_id}``;
* agent management, ``?api-version=v1``: ``GET|POST /agents``, ``GET|DELETE /agents/{name}``,
  ``GET|POST /agents/{name}/versions``, ``GET|DELETE /agents/{name}/versions/{version}``.

A response runs as one asyncio task: ``queued`` (background only, for ``queue_delay``),
``in_progress`` (``run_duration``, or ``[emulator:sleep=S]``), then the scripted model's reply
(`_model.respond`, read-only reuse) streams in sub-word deltas every ``delta_interval``, and the
response ends ``completed``, ``failed`` (``[emulator:fail=CODE]``, run-failure fault rules),
``incomplete`` (``[emulator:incomplete]``, ``[emulator:content_filter]``) or ``cancelled``.
Two v2-only directives: ``[emulator:cite=URL]`` adds a ``url_citation`` annotation, and
``[emulator:stream_error]`` ends the stream with a top-level ``error`` event (the response
fails). Function tools give ``function_call`` output items (status ``completed``); their
results come back as ``function_call_output`` input items with ``previous_response_id`` or in
the same conversation.

Errors use the Responses shape ``{"error": {"code", "message", "param", "type", "details"?}}``;
agent-owned parameters sent with an ``agent_reference`` are rejected with HTTP 400
``invalid_payload`` and one ``details`` entry per parameter ("Not allowed when agent is
specified."), as the service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from . import _model
from ._settings import V2_AGENT_NAME_RE, EmulatorSettings, Timing
from ._util import Stats, dumps
from ._v2_store import AgentVersionRec, ConversationRec, ResponseRec, new_v2_id, now

__all__ = ["AGENT_OWNED_PARAMS", "V2Error", "V2Service"]

JSON = dict[str, Any]
BASE = "/api/projects/{project}"
OPENAI = f"{BASE}/openai/v1"

#: Request fields the agent version owns; sent with an ``agent_reference`` they are a 400.
AGENT_OWNED_PARAMS = (
    "instructions",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "text",
    "reasoning",
)

_CITE_RE = re.compile(r"\[emulator:cite=([^\]]+)\]")
_STREAM_ERROR_RE = re.compile(r"\[emulator:stream_error\]")
_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
_MAX_ITEMS_PER_CALL = 20


class _FaultSource(Protocol):
    def run_fault(self, route: str) -> str | None: ...

    def stream_cut(self, route: str) -> int | None: ...


class V2Error(Exception):
    """An error answer in the Responses error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        details: list[JSON] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.details = details

    def response(self) -> web.Response:
        error: JSON = {
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "type": self.type,
        }
        if self.details is not None:
            error["details"] = self.details
        return web.Response(
            status=self.status, text=dumps({"error": error}), content_type="application/json"
        )


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> V2Error:
    return V2Error(400, code, message, param=param)


def _not_found(kind: str, ident: str, param: str | None = None) -> V2Error:
    return V2Error(404, "not_found", f"{kind} with id '{ident}' not found.", param=param)


async def _body(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.", code="invalid_json")
    return data


def _metadata(data: Mapping[str, Any]) -> dict[str, str] | None:
    value = data.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise _bad("Invalid 'metadata': an object of at most 16 pairs.", "metadata")
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise _bad("Invalid 'metadata': string values (keys <= 64, values <= 512).", "metadata")
    return dict(value)


def _paging(request: web.Request) -> tuple[int, str, str | None, str | None]:
    q = request.query
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise _bad("Invalid 'limit': expected an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise _bad("Invalid 'limit': must be between 1 and 100.", "limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _bad("Invalid 'order': must be 'asc' or 'desc'.", "order")
    return limit, order, q.get("after") or None, q.get("before") or None


def _page(items: list[JSON], request: web.Request, *, key: str = "id") -> JSON:
    """OpenAI/Foundry paging over items in creation order: ``{object, data, first_id,
    last_id, has_more}``."""
    limit, order, after, before = _paging(request)
    seq = list(items) if order == "asc" else list(reversed(items))
    ids = [str(i[key]) for i in seq]
    if after is not None:
        seq = seq[ids.index(after) + 1 :] if after in ids else []
    elif before is not None:
        seq = seq[: ids.index(before)][-limit:] if before in ids else []
    data = seq[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0][key] if data else None,
        "last_id": data[-1][key] if data else None,
        "has_more": len(seq) > limit,
    }


# -- input items ---------------------------------------------------------------------------


def _text_parts(content: Any, where: str, role: str) -> list[JSON]:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: JSON = {"type": kind, "text": content}
        if kind == "output_text":
            part["annotations"] = []
        return [part]
    if not isinstance(content, list):
        raise _bad(f"Invalid '{where}': expected a string or an array of parts.", where)
    parts = []
    for i, p in enumerate(content):
        w = f"{where}[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("type"), str):
            raise _bad(f"Invalid '{w}': expected an object with a 'type'.", w)
        if p["type"] in ("input_text", "output_text"):
            if not isinstance(p.get("text"), str):
                raise _bad(f"Invalid '{w}.text': expected a string.", f"{w}.text")
            out = {"type": p["type"], "text": p["text"]}
            if p["type"] == "output_text":
                out["annotations"] = list(p.get("annotations") or [])
            parts.append(out)
        elif p["type"] in ("input_image", "input_file", "refusal"):
            parts.append(dict(p))
        else:
            raise _bad(f"Invalid '{w}.type': unknown content type {p['type']!r}.", f"{w}.type")
    return parts


def normalize_items(value: Any, where: str = "input") -> list[JSON]:
    """Input (a string or an array of items) as stored items, each with a fresh id."""
    if isinstance(value, str):
        if not value:
            return []  # "" = the input is already in the conversation (Microsoft's samples)
        return [
            {
                "type": "message",
                "id": new_v2_id("msg"),
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_text", "text": value}],
            }
        ]
    if not isinstance(value, list):
        raise _bad(f"Invalid '{where}': expected a string or an array of items.", where)
    items: list[JSON] = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"Invalid '{w}': expected an object.", w)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise _bad(f"Invalid '{w}.role': must be one of {_MESSAGE_ROLES}.", f"{w}.role")
            items.append(
                {
                    "type": "message",
                    "id": new_v2_id("msg"),
                    "status": "completed",
                    "role": role,
                    "content": _text_parts(item.get("content"), f"{w}.content", role),
                }
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            output = item.get("output")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"Missing required parameter: '{w}.call_id'.", f"{w}.call_id")
            if not isinstance(output, (str, list)):
                raise _bad(f"Invalid '{w}.output': expected a string.", f"{w}.output")
            items.append(
                {
                    "type": "function_call_output",
                    "id": new_v2_id("fco"),
                    "status": "completed",
                    "call_id": call_id,
                    "output": output,
                }
            )
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise _bad(f"Missing required parameter: '{w}.{key}'.", f"{w}.{key}")
            items.append(
                {
                    "type": "function_call",
                    "id": new_v2_id("fc"),
                    "status": "completed",
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
        else:
            raise _bad(f"Invalid '{w}.type': unsupported item type {kind!r}.", f"{w}.type")
    return items


def _item_text(item: Mapping[str, Any]) -> str:
    parts = item.get("content") or []
    return "".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p
    ).strip()


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))


def _sub_word_deltas(text: str) -> list[str]:
    """Deltas smaller than words, as a tokenizer's are: words of more than 6 characters are
    split in two, so a client that assumed word boundaries would be caught."""
    out: list[str] = []
    for word in _model.split_deltas(text):
        if len(word.strip()) > 6:
            cut = len(word) - len(word.strip()) + (len(word.strip()) + 1) // 2
            out.extend((word[:cut], word[cut:]))
        else:
            out.append(word)
    return out


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# -- the service ---------------------------------------------------------------------------


class V2Service:
    """The v2 part of one emulator: state, routes and the response engine."""

    def __init__(self, settings: EmulatorSettings, stats: Stats, faults: _FaultSource) -> None:
        self.settings = settings
        self.stats = stats
        self.faults = faults
        self.agents: dict[str, dict[str, AgentVersionRec]] = {}
        self.agent_created: dict[str, int] = {}
        self.conversations: dict[str, ConversationRec] = {}
        self.responses: dict[str, ResponseRec] = {}
        self.responses_created = 0
        self.responses_by_status: Counter[str] = Counter()
        self.peak_active_responses = 0
        self._load_agents()

    # -- lifecycle ------------------------------------------------------------------------

    def _load_agents(self) -> None:
        created = now()
        for spec in self.settings.all_v2_agents():
            rec = AgentVersionRec.from_spec(spec, created)
            self.agents.setdefault(spec.name, {})[spec.version] = rec
            self.agent_created.setdefault(spec.name, created)

    def _abandon_all(self) -> list[asyncio.Task[None]]:
        tasks = []
        for rec in self.responses.values():
            if rec.task is not None and not rec.task.done():
                rec.task.cancel()
                tasks.append(rec.task)
        return tasks

    def reset(self) -> None:
        self._abandon_all()
        self.agents.clear()
        self.agent_created.clear()
        self.conversations.clear()
        self.responses.clear()
        self.responses_created = 0
        self.responses_by_status.clear()
        self.peak_active_responses = 0
        self._load_agents()

    async def shutdown(self) -> None:
        tasks = self._abandon_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats_json(self) -> JSON:
        active = sum(
            n for s, n in self.responses_by_status.items() if s in ("queued", "in_progress")
        )
        return {
            "responses_created": self.responses_created,
            "responses_by_status": dict(sorted(self.responses_by_status.items())),
            "active_responses": active,
            "peak_active_responses": self.peak_active_responses,
        }

    def _set_status(self, rec: ResponseRec, status: str) -> None:
        old = rec.status
        if old == status:
            return
        if self.responses.get(rec.id) is not rec:  # deleted or reset: no longer counted
            rec.status = status
            return
        self.responses_by_status[old] -= 1
        if self.responses_by_status[old] <= 0:
            del self.responses_by_status[old]
        self.responses_by_status[status] += 1
        rec.status = status

    # -- routes ---------------------------------------------------------------------------

    def register(self, app: web.Application) -> None:
        r = app.router
        w = self._wrap
        r.add_post(f"{OPENAI}/responses", w(self.create_response))
        r.add_get(f"{OPENAI}/responses/{{response_id}}", w(self.get_response))
        r.add_delete(f"{OPENAI}/responses/{{response_id}}", w(self.delete_response))
        r.add_post(f"{OPENAI}/responses/{{response_id}}/cancel", w(self.cancel_response))
        r.add_post(f"{OPENAI}/conversations", w(self.create_conversation))
        r.add_get(f"{OPENAI}/conversations/{{conversation_id}}", w(self.get_conversation))
        r.add_post(f"{OPENAI}/conversations/{{conversation_id}}", w(self.update_conversation))
        r.add_delete(f"{OPENAI}/conversations/{{conversation_id}}", w(self.delete_conversation))
        r.add_get(f"{OPENAI}/conversations/{{conversation_id}}/items", w(self.list_items))
        r.add_post(f"{OPENAI}/conversations/{{conversation_id}}/items", w(self.create_items))
        r.add_get(f"{OPENAI}/conversations/{{conversation_id}}/items/{{item_id}}", w(self.get_item))
        r.add_get(f"{BASE}/agents", w(self.list_agents))
        r.add_post(f"{BASE}/agents", w(self.create_agent))
        r.add_get(f"{BASE}/agents/{{agent_name}}", w(self.get_agent))
        r.add_delete(f"{BASE}/agents/{{agent_name}}", w(self.delete_agent))
        r.add_get(f"{BASE}/agents/{{agent_name}}/versions", w(self.list_versions))
        r.add_post(f"{BASE}/agents/{{agent_name}}/versions", w(self.create_version))
        r.add_get(f"{BASE}/agents/{{agent_name}}/versions/{{version}}", w(self.get_version))
        r.add_delete(f"{BASE}/agents/{{agent_name}}/versions/{{version}}", w(self.delete_version))
        app.on_response_prepare.append(_retry_after_both)

    @staticmethod
    def _wrap(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except V2Error as exc:
                return exc.response()

        return wrapped

    @staticmethod
    def ok(data: Any) -> web.Response:
        return web.Response(text=dumps(data), content_type="application/json")

    # -- agents ---------------------------------------------------------------------------

    def _agent_json(self, name: str) -> JSON:
        versions = self.agents[name]
        latest = versions[max(versions, key=_vkey)]
        return {
            "object": "agent",
            "id": name,
            "name": name,
            "versions": {"latest": latest.to_json()},
        }

    def _versions(self, name: str) -> dict[str, AgentVersionRec]:
        versions = self.agents.get(name)
        if not versions:
            raise _not_found("Agent", name)
        return versions

    def _new_version(self, name: str, data: JSON) -> AgentVersionRec:
        if not V2_AGENT_NAME_RE.fullmatch(name):
            raise _bad(
                "Invalid agent name: up to 63 letters, digits and hyphens, starting and ending "
                "with a letter or digit.",
                "agent_name",
            )
        definition = data.get("definition")
        if not isinstance(definition, dict):
            raise _bad("Missing required parameter: 'definition'.", "definition")
        kind = definition.get("kind", "prompt")
        if kind != "prompt":
            raise _bad(f"Unsupported agent kind {kind!r} (the emulator has prompt agents).")
        model = definition.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("Missing required parameter: 'definition.model'.", "definition.model")
        instructions = definition.get("instructions") or ""
        if not isinstance(instructions, str):
            raise _bad("Invalid 'definition.instructions'.", "definition.instructions")
        tools = definition.get("tools") or []
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
        ):
            raise _bad("Invalid 'definition.tools'.", "definition.tools")
        for i, t in enumerate(tools):
            if t["type"] == "function" and not isinstance(t.get("name"), str):
                raise _bad("A function tool needs a 'name'.", f"definition.tools[{i}].name")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise _bad("Invalid 'description'.", "description")
        extra = {
            k: v
            for k, v in definition.items()
            if k not in ("kind", "model", "instructions", "tools")
        }
        versions = self.agents.get(name, {})
        number = str(max((_vkey(v) for v in versions), default=0) + 1)
        rec = AgentVersionRec(
            name=name,
            version=number,
            created_at=now(),
            model=model,
            instructions=instructions,
            description=description,
            tools=[dict(t) for t in tools],
            metadata=_metadata(data) or {},
            definition_extra=extra,
        )
        self.agents.setdefault(name, {})[number] = rec
        self.agent_created.setdefault(name, rec.created_at)
        return rec

    async def list_agents(self, request: web.Request) -> web.Response:
        names = sorted(self.agents, key=lambda n: (self.agent_created.get(n, 0), n))
        return self.ok(_page([self._agent_json(n) for n in names], request))

    async def create_agent(self, request: web.Request) -> web.Response:
        data = await _body(request)
        name = data.get("name")
        if not isinstance(name, str):
            raise _bad("Missing required parameter: 'name'.", "name")
        if name in self.agents:
            raise V2Error(409, "conflict", f"Agent '{name}' already exists.", param="name")
        self._new_version(name, data)
        return self.ok(self._agent_json(name))

    async def get_agent(self, request: web.Request) -> web.Response:
        name = request.match_info["agent_name"]
        self._versions(name)
        return self.ok(self._agent_json(name))

    async def delete_agent(self, request: web.Request) -> web.Response:
        name = request.match_info["agent_name"]
        self._versions(name)
        del self.agents[name]
        self.agent_created.pop(name, None)
        return self.ok({"object": "agent.deleted", "name": name, "id": name, "deleted": True})

    async def list_versions(self, request: web.Request) -> web.Response:
        versions = self._versions(request.match_info["agent_name"])
        ordered = [versions[v].to_json() for v in sorted(versions, key=_vkey)]
        return self.ok(_page(ordered, request))

    async def create_version(self, request: web.Request) -> web.Response:
        data = await _body(request)
        rec = self._new_version(request.match_info["agent_name"], data)
        return self.ok(rec.to_json())

    def _version(self, request: web.Request) -> AgentVersionRec:
        name = request.match_info["agent_name"]
        version = request.match_info["version"]
        rec = self._versions(name).get(version)
        if rec is None:
            raise _not_found("Agent version", f"{name}:{version}")
        return rec

    async def get_version(self, request: web.Request) -> web.Response:
        return self.ok(self._version(request).to_json())

    async def delete_version(self, request: web.Request) -> web.Response:
        rec = self._version(request)
        versions = self.agents[rec.name]
        del versions[rec.version]
        if not versions:
            del self.agents[rec.name]
            self.agent_created.pop(rec.name, None)
        return self.ok(
            {
                "object": "agent.version.deleted",
                "name": rec.name,
                "version": rec.version,
                "deleted": True,
            }
        )

    # -- conversations --------------------------------------------------------------------

    def _conversation(self, ident: str, param: str | None = None) -> ConversationRec:
        conv = self.conversations.get(ident)
        if conv is None:
            raise _not_found("Conversation", ident, param)
        return conv

    def _items_in(self, data: JSON, *, required: bool) -> list[JSON]:
        raw = data.get("items")
        if raw is None:
            if required:
                raise _bad("Missing required parameter: 'items'.", "items")
            return []
        if not isinstance(raw, list):
            raise _bad("Invalid 'items': expected an array.", "items")
        if len(raw) > _MAX_ITEMS_PER_CALL:
            raise _bad(f"Invalid 'items': at most {_MAX_ITEMS_PER_CALL} items.", "items")
        return normalize_items(raw, "items")

    async def create_conversation(self, request: web.Request) -> web.Response:
        data = await _body(request)
        items = self._items_in(data, required=False)
        conv = ConversationRec(new_v2_id("conv"), now(), _metadata(data) or {}, items)
        self.conversations[conv.id] = conv
        return self.ok(conv.to_json())

    async def get_conversation(self, request: web.Request) -> web.Response:
        return self.ok(self._conversation(request.match_info["conversation_id"]).to_json())

    async def update_conversation(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        data = await _body(request)
        metadata = _metadata(data)
        if metadata is None:
            raise _bad("Missing required parameter: 'metadata'.", "metadata")
        conv.metadata = metadata
        return self.ok(conv.to_json())

    async def delete_conversation(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        del self.conversations[conv.id]
        return self.ok({"id": conv.id, "object": "conversation.deleted", "deleted": True})

    async def list_items(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        return self.ok(_page(conv.items, request))

    async def create_items(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        items = self._items_in(await _body(request), required=True)
        conv.items.extend(items)
        return self.ok(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            }
        )

    async def get_item(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        ident = request.match_info["item_id"]
        for item in conv.items:
            if item["id"] == ident:
                return self.ok(item)
        raise _not_found("Item", ident)

    # -- responses ------------------------------------------------------------------------

    def _resolve_agent(self, ref: Any) -> AgentVersionRec:
        if not isinstance(ref, dict):
            raise _bad("Invalid 'agent_reference': expected an object.", "agent_reference")
        if ref.get("type", "agent_reference") != "agent_reference":
            raise _bad("Invalid 'agent_reference.type'.", "agent_reference.type")
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(
                "Missing required parameter: 'agent_reference.name'.", "agent_reference.name"
            )
        version = ref.get("version")
        if version is not None and not isinstance(version, str):
            raise _bad("Invalid 'agent_reference.version'.", "agent_reference.version")
        versions = self.agents.get(name)
        if not versions:
            raise _not_found("Agent", name, "agent_reference")
        if version is None:
            return versions[max(versions, key=_vkey)]
        rec = versions.get(version)
        if rec is None:
            raise _not_found("Agent version", f"{name}:{version}", "agent_reference")
        return rec

    def _history(self, rec_id: str | None) -> list[JSON]:
        """Every item of a previous_response_id chain, oldest first."""
        chain: list[ResponseRec] = []
        seen: set[str] = set()
        while rec_id is not None and rec_id not in seen:
            seen.add(rec_id)
            prev = self.responses.get(rec_id)
            if prev is None:
                break
            chain.append(prev)
            rec_id = prev.previous_response_id
        items: list[JSON] = []
        for prev in reversed(chain):
            items.extend(prev.input_items)
            items.extend(prev.output)
        return items

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        if "agent" in data:
            raise V2Error(
                400,
                "invalid_payload",
                "The 'agent' property is deprecated. Use 'agent_reference' instead.",
                param="agent",
            )
        if "agent_reference" not in data:
            raise _bad(
                "Missing required parameter: 'agent_reference' (the emulator serves agents).",
                "agent_reference",
                code="missing_required_parameter",
            )
        owned = [k for k in AGENT_OWNED_PARAMS if data.get(k) is not None]
        if owned:
            raise V2Error(
                400,
                "invalid_payload",
                "Invalid payload",
                details=[
                    {
                        "code": "ValidationError",
                        "message": "Not allowed when agent is specified.",
                        "param": k,
                        "type": "error",
                    }
                    for k in owned
                ],
            )
        agent = self._resolve_agent(data["agent_reference"])
        stream = data.get("stream") or False
        background = data.get("background") or False
        if not isinstance(stream, bool):
            raise _bad("Invalid type for 'stream': expected a boolean.", "stream")
        if not isinstance(background, bool):
            raise _bad("Invalid type for 'background': expected a boolean.", "background")
        if data.get("store") is False and background:
            raise _bad("Background mode requires 'store' to be true.", "background")
        max_output = data.get("max_output_tokens")
        if max_output is not None and (
            isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 16
        ):
            raise _bad(
                "Invalid 'max_output_tokens': an integer of at least 16.", "max_output_tokens"
            )
        conversation = data.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if conversation is not None and not isinstance(conversation, str):
            raise _bad("Invalid 'conversation': expected an id.", "conversation")
        previous = data.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise _bad("Invalid 'previous_response_id'.", "previous_response_id")
        if conversation is not None and previous is not None:
            raise _bad(
                "Mutually exclusive parameters: 'conversation' and 'previous_response_id'. "
                "Ensure you are only providing one of these parameters.",
                "previous_response_id",
                code="mutually_exclusive_parameters",
            )
        metadata = _metadata(data) or {}
        input_items = normalize_items(data.get("input", []))
        conv = self._conversation(conversation, "conversation") if conversation else None
        if previous is not None and previous not in self.responses:
            raise _not_found("Previous response", previous, "previous_response_id")
        history = list(conv.items) if conv is not None else self._history(previous)
        calls = {i["call_id"]: i for i in history if i.get("type") == "function_call"}
        outputs: list[tuple[str, str, str]] = []
        for i, item in enumerate(input_items):
            if item["type"] == "function_call_output":
                call = calls.get(item["call_id"])
                if call is None:
                    raise _bad(
                        f"No tool call found for function call output with call_id "
                        f"{item['call_id']}.",
                        f"input[{i}]",
                    )
                outputs.append((call["name"], call["arguments"], _output_text(item["output"])))
        route = f"POST {OPENAI[len(BASE) :]}/responses"
        rec = ResponseRec(
            id=new_v2_id("resp"),
            created_at=now(),
            agent=agent,
            background=background,
            stream=stream,
            conversation_id=conv.id if conv else None,
            previous_response_id=previous,
            input_items=input_items,
            metadata=metadata,
            max_output_tokens=max_output,
            status="queued" if background else "in_progress",
        )
        rec.forced_fault = self.faults.run_fault(route)
        self.responses[rec.id] = rec
        self.responses_created += 1
        self.responses_by_status[rec.status] += 1
        active = sum(
            n for s, n in self.responses_by_status.items() if s in ("queued", "in_progress")
        )
        self.peak_active_responses = max(self.peak_active_responses, active)
        rec.emit("response.created", response=rec.to_json())
        if background:
            rec.emit("response.queued", response=rec.to_json())
        else:
            rec.emit("response.in_progress", response=rec.to_json())
        rec.task = asyncio.get_running_loop().create_task(
            self._run(rec, history, outputs), name=f"emulator-v2-{rec.id}"
        )
        if stream:
            return await self._stream(request, rec, -1, self.faults.stream_cut(route))
        if background:
            return self.ok(rec.to_json())
        await rec.done.wait()
        return self.ok(rec.to_json())

    async def _stream(
        self, request: web.Request, rec: ResponseRec, after: int, cut_after: int | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        index = after + 1
        sent = 0
        try:
            await resp.prepare(request)
            while True:
                while index < len(rec.events):
                    if cut_after is not None and sent >= cut_after:
                        # An injected network cut: the service sees its client go away.
                        if request.transport is not None:
                            request.transport.abort()
                        raise ConnectionResetError("stream cut by a fault rule")
                    event = rec.events[index]
                    frame = f"event: {event['type']}\ndata: {dumps(event)}\n\n"
                    await resp.write(frame.encode())
                    index += 1
                    sent += 1
                if rec.done.is_set():
                    break
                await _wait_or_disconnect(request, rec.changed)
            await resp.write_eof()
        except ConnectionError:
            # The client went away. Without background mode that cancels the response, as
            # on the service; a background response goes on.
            if not rec.background and rec.active and rec.task is not None:
                rec.task.cancel()
        return resp

    async def get_response(self, request: web.Request) -> web.StreamResponse:
        rec = self._response(request)
        if request.query.get("stream") == "true":
            if not rec.stream:
                raise _bad(
                    "This response was not created with 'stream': true and cannot be streamed.",
                    "stream",
                )
            raw = request.query.get("starting_after", "-1")
            try:
                after = int(raw)
            except ValueError:
                raise _bad(
                    "Invalid 'starting_after': expected an integer.", "starting_after"
                ) from None
            return await self._stream(request, rec, after, None)
        return self.ok(rec.to_json())

    def _response(self, request: web.Request) -> ResponseRec:
        ident = request.match_info["response_id"]
        rec = self.responses.get(ident)
        if rec is None:
            raise _not_found("Response", ident)
        return rec

    async def delete_response(self, request: web.Request) -> web.Response:
        rec = self._response(request)
        if rec.task is not None and not rec.task.done():
            self._set_status(rec, "cancelled")
            rec.task.cancel()
        del self.responses[rec.id]
        return self.ok({"id": rec.id, "object": "response", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.Response:
        rec = self._response(request)
        await request.read()
        if not rec.background:
            raise _bad("Only responses created with background=true can be cancelled.")
        if rec.status == "cancelled":
            return self.ok(rec.to_json())
        if not rec.active:
            raise _bad(f"Cannot cancel a response with status '{rec.status}'.")
        if rec.task is not None:
            rec.task.cancel()
            await rec.done.wait()
        return self.ok(rec.to_json())

    # -- the engine -----------------------------------------------------------------------

    def _timing(self, rec: ResponseRec) -> Timing:
        return rec.agent.timing or self.settings.timing

    async def _run(
        self, rec: ResponseRec, history: list[JSON], outputs: list[tuple[str, str, str]]
    ) -> None:
        try:
            await self._work(rec, history, outputs)
        except asyncio.CancelledError:
            if rec.active:
                self._set_status(rec, "cancelled")
                rec.completed_at = None
        finally:
            rec.finish()

    async def _work(
        self, rec: ResponseRec, history: list[JSON], outputs: list[tuple[str, str, str]]
    ) -> None:
        timing = self._timing(rec)
        agent = rec.agent
        messages: list[tuple[str, str]] = []
        for item in [*history, *rec.input_items]:
            if item.get("type") == "message":
                role = "user" if item.get("role") == "user" else str(item.get("role"))
                messages.append((role, _item_text(item)))
        last_user = next((t for r, t in reversed(messages) if r == "user"), "")
        directives = _model.parse_directives(last_user)
        if rec.background:
            await asyncio.sleep(timing.queue_delay)
            self._set_status(rec, "in_progress")
            rec.emit("response.in_progress", response=rec.to_json())
        await asyncio.sleep(
            directives.sleep if directives.sleep is not None else timing.run_duration
        )
        model_tools = tuple(
            {"type": "function", "function": t} for t in agent.tools if t.get("type") == "function"
        )
        inp = _model.ModelInput(
            instructions=agent.instructions,
            messages=tuple(messages),
            tools=model_tools,
            tool_outputs=tuple(outputs),
            agent_name=agent.name,
        )
        fault = rec.forced_fault or ""
        if directives.fail or fault.startswith("run_failed"):
            code = directives.fail or fault.partition(":")[2] or "server_error"
            self._fail(rec, code)
            return
        if _STREAM_ERROR_RE.search(last_user):
            rec.emit(
                "error",
                code="server_error",
                message="The server had an error while processing your request.",
                param=None,
            )
            self._set_status(rec, "failed")
            rec.error = {
                "code": "server_error",
                "message": "The server had an error while processing your request.",
            }
            return
        reply = _model.respond(inp)
        input_tokens = _model.prompt_tokens(inp)
        if reply.tool_calls:
            await self._function_calls(rec, reply, timing)
        else:
            cite = _CITE_RE.search(last_user)
            await self._message(
                rec, reply.text, directives, cite.group(1) if cite else None, timing
            )
        output_tokens = reply.completion_tokens
        if rec.status == "incomplete":
            output_tokens = sum(_model.count_tokens(_item_text(i)) for i in rec.output)
        rec.usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if rec.status != "incomplete":
            self._set_status(rec, "completed")
            rec.completed_at = now()
        if rec.conversation_id is not None:
            conv = self.conversations.get(rec.conversation_id)
            if conv is not None:
                conv.items.extend(rec.input_items)
                conv.items.extend(rec.output)
        terminal = "response.completed" if rec.status == "completed" else "response.incomplete"
        rec.emit(terminal, response=rec.to_json())

    def _fail(self, rec: ResponseRec, code: str) -> None:
        message = (
            "Rate limit is exceeded. Try again later."
            if code == "rate_limit_exceeded"
            else "The server had an error while processing your request."
        )
        rec.error = {"code": code, "message": message}
        self._set_status(rec, "failed")
        rec.emit("response.failed", response=rec.to_json())

    async def _function_calls(self, rec: ResponseRec, reply: _model.Reply, timing: Timing) -> None:
        for call in reply.tool_calls:
            index = len(rec.output)
            item: JSON = {
                "type": "function_call",
                "id": new_v2_id("fc"),
                "status": "in_progress",
                "arguments": "",
                "call_id": new_v2_id("call")[:29],
                "name": call.name,
            }
            rec.output.append(item)
            rec.emit("response.output_item.added", output_index=index, item=dict(item))
            for piece in _chunks(call.arguments, 8):
                await asyncio.sleep(timing.delta_interval)
                rec.emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            item["arguments"] = call.arguments
            item["status"] = "completed"
            rec.emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=call.arguments,
            )
            rec.emit("response.output_item.done", output_index=index, item=dict(item))

    async def _message(
        self,
        rec: ResponseRec,
        text: str,
        directives: _model.Directives,
        cite: str | None,
        timing: Timing,
    ) -> None:
        index = len(rec.output)
        item: JSON = {
            "type": "message",
            "id": new_v2_id("msg"),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        rec.output.append(item)
        rec.emit("response.output_item.added", output_index=index, item=_json_copy(item))
        part: JSON = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        item["content"].append(part)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        rec.emit("response.content_part.added", **where, part=_json_copy(part))
        deltas = _sub_word_deltas(text)
        reason = None
        if directives.content_filter:
            reason = "content_filter"
            deltas = deltas[: len(deltas) // 2]
        elif directives.incomplete or (
            rec.max_output_tokens is not None and _model.count_tokens(text) > rec.max_output_tokens
        ):
            reason = "max_output_tokens"
            deltas = deltas[: len(deltas) // 2]
        for delta in deltas:
            await asyncio.sleep(timing.delta_interval)
            part["text"] += delta
            rec.emit("response.output_text.delta", **where, delta=delta, logprobs=[])
        if cite is not None and reason is None:
            annotation = {
                "type": "url_citation",
                "url": cite.strip(),
                "title": "Source",
                "start_index": 0,
                "end_index": len(part["text"]),
            }
            part["annotations"].append(annotation)
            rec.emit(
                "response.output_text.annotation.added",
                **where,
                annotation_index=0,
                annotation=dict(annotation),
            )
        rec.emit("response.output_text.done", **where, text=part["text"], logprobs=[])
        rec.emit("response.content_part.done", **where, part=_json_copy(part))
        item["status"] = "incomplete" if reason else "completed"
        rec.emit("response.output_item.done", output_index=index, item=_json_copy(item))
        if reason is not None:
            rec.incomplete_details = {"reason": reason}
            self._set_status(rec, "incomplete")


async def _wait_or_disconnect(request: web.Request, event: asyncio.Event) -> None:
    """Wait for `event`; raise ConnectionResetError as soon as the client has gone (checked
    every 0.1 s), so a dropped stream is noticed before the next event is written."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=0.1)
            transport = request.transport
            if not waiter.done() and (transport is None or transport.is_closing()):
                raise ConnectionResetError("the client closed the stream")
    finally:
        waiter.cancel()


def _json_copy(value: Any) -> Any:
    result: Any = json.loads(dumps(value))
    return result


def _vkey(version: str) -> int:
    return int(version) if version.isdigit() else 0


async def _retry_after_both(request: web.Request, response: web.StreamResponse) -> None:
    """On v2 routes a throttling answer carries both ``retry-after-ms`` and ``Retry-After``
    (what openai-python and Azure Core read), whichever one the fault rule set."""
    if response.status not in (429, 503) or "/openai/v1/" not in request.path:
        return
    headers = response.headers
    if "Retry-After" in headers and "retry-after-ms" not in headers:
        with contextlib.suppress(ValueError):
            headers["retry-after-ms"] = str(round(float(headers["Retry-After"]) * 1000))
    elif "retry-after-ms" in headers and "Retry-After" not in headers:
        with contextlib.suppress(ValueError):
            seconds = float(headers["retry-after-ms"]) / 1000
            headers["Retry-After"] = f"{max(1, round(seconds + 0.499))}"
