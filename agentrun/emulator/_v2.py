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

The code: `_v2` (this module: `V2Service`, the routes), `_v2_engine` (`V2State`: the state
and the task that runs a response), `_v2_http` (error shape, validation, input items) and
`_v2_store` (records and their JSON). None of it touches the classic emulator's state.

Errors use the Responses shape ``{"error": {"code", "message", "param", "type", "details"?}}``;
agent-owned parameters sent with an ``agent_reference`` are rejected with HTTP 400
``invalid_payload`` and one ``details`` entry per parameter ("Not allowed when agent is
specified."), as the service does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ._settings import V2_AGENT_NAME_RE
from ._util import dumps
from ._v2_engine import V2State
from ._v2_http import (
    AGENT_OWNED_PARAMS,
    MAX_ITEMS_PER_CALL,
    V2Error,
    bad,
    body,
    normalize_items,
    not_found,
    output_text,
    page,
    parse_metadata,
    retry_after_both,
    vkey,
    wait_or_disconnect,
)
from ._v2_store import AgentVersionRec, ConversationRec, ResponseRec, new_v2_id, now

__all__ = ["AGENT_OWNED_PARAMS", "V2Error", "V2Service"]

JSON = dict[str, Any]
BASE = "/api/projects/{project}"
OPENAI = f"{BASE}/openai/v1"


class V2Service(V2State):
    """The v2 part of one emulator: `V2State` plus its aiohttp routes."""

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
        app.on_response_prepare.append(retry_after_both)

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
        latest = versions[max(versions, key=vkey)]
        return {
            "object": "agent",
            "id": name,
            "name": name,
            "versions": {"latest": latest.to_json()},
        }

    def _versions(self, name: str) -> dict[str, AgentVersionRec]:
        versions = self.agents.get(name)
        if not versions:
            raise not_found("Agent", name)
        return versions

    def _new_version(self, name: str, data: JSON) -> AgentVersionRec:
        if not V2_AGENT_NAME_RE.fullmatch(name):
            raise bad(
                "Invalid agent name: up to 63 letters, digits and hyphens, starting and ending "
                "with a letter or digit.",
                "agent_name",
            )
        definition = data.get("definition")
        if not isinstance(definition, dict):
            raise bad("Missing required parameter: 'definition'.", "definition")
        kind = definition.get("kind", "prompt")
        if kind != "prompt":
            raise bad(f"Unsupported agent kind {kind!r} (the emulator has prompt agents).")
        model = definition.get("model")
        if not isinstance(model, str) or not model:
            raise bad("Missing required parameter: 'definition.model'.", "definition.model")
        instructions = definition.get("instructions") or ""
        if not isinstance(instructions, str):
            raise bad("Invalid 'definition.instructions'.", "definition.instructions")
        tools = definition.get("tools") or []
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
        ):
            raise bad("Invalid 'definition.tools'.", "definition.tools")
        for i, t in enumerate(tools):
            if t["type"] == "function" and not isinstance(t.get("name"), str):
                raise bad("A function tool needs a 'name'.", f"definition.tools[{i}].name")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise bad("Invalid 'description'.", "description")
        extra = {
            k: v
            for k, v in definition.items()
            if k not in ("kind", "model", "instructions", "tools")
        }
        versions = self.agents.get(name, {})
        number = str(max((vkey(v) for v in versions), default=0) + 1)
        rec = AgentVersionRec(
            name=name,
            version=number,
            created_at=now(),
            model=model,
            instructions=instructions,
            description=description,
            tools=[dict(t) for t in tools],
            metadata=parse_metadata(data) or {},
            definition_extra=extra,
        )
        self.agents.setdefault(name, {})[number] = rec
        self.agent_created.setdefault(name, rec.created_at)
        return rec

    async def list_agents(self, request: web.Request) -> web.Response:
        names = sorted(self.agents, key=lambda n: (self.agent_created.get(n, 0), n))
        return self.ok(page([self._agent_json(n) for n in names], request))

    async def create_agent(self, request: web.Request) -> web.Response:
        data = await body(request)
        name = data.get("name")
        if not isinstance(name, str):
            raise bad("Missing required parameter: 'name'.", "name")
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
        ordered = [versions[v].to_json() for v in sorted(versions, key=vkey)]
        return self.ok(page(ordered, request))

    async def create_version(self, request: web.Request) -> web.Response:
        data = await body(request)
        rec = self._new_version(request.match_info["agent_name"], data)
        return self.ok(rec.to_json())

    def _version(self, request: web.Request) -> AgentVersionRec:
        name = request.match_info["agent_name"]
        version = request.match_info["version"]
        rec = self._versions(name).get(version)
        if rec is None:
            raise not_found("Agent version", f"{name}:{version}")
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
            raise not_found("Conversation", ident, param)
        return conv

    def _items_in(self, data: JSON, *, required: bool) -> list[JSON]:
        raw = data.get("items")
        if raw is None:
            if required:
                raise bad("Missing required parameter: 'items'.", "items")
            return []
        if not isinstance(raw, list):
            raise bad("Invalid 'items': expected an array.", "items")
        if len(raw) > MAX_ITEMS_PER_CALL:
            raise bad(f"Invalid 'items': at most {MAX_ITEMS_PER_CALL} items.", "items")
        return normalize_items(raw, "items")

    async def create_conversation(self, request: web.Request) -> web.Response:
        data = await body(request)
        items = self._items_in(data, required=False)
        conv = ConversationRec(new_v2_id("conv"), now(), parse_metadata(data) or {}, items)
        self.conversations[conv.id] = conv
        return self.ok(conv.to_json())

    async def get_conversation(self, request: web.Request) -> web.Response:
        return self.ok(self._conversation(request.match_info["conversation_id"]).to_json())

    async def update_conversation(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        data = await body(request)
        metadata = parse_metadata(data)
        if metadata is None:
            raise bad("Missing required parameter: 'metadata'.", "metadata")
        conv.metadata = metadata
        return self.ok(conv.to_json())

    async def delete_conversation(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        del self.conversations[conv.id]
        return self.ok({"id": conv.id, "object": "conversation.deleted", "deleted": True})

    async def list_items(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        return self.ok(page(conv.items, request))

    async def create_items(self, request: web.Request) -> web.Response:
        conv = self._conversation(request.match_info["conversation_id"])
        items = self._items_in(await body(request), required=True)
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
        raise not_found("Item", ident)

    # -- responses ------------------------------------------------------------------------

    def _resolve_agent(self, ref: Any) -> AgentVersionRec:
        if not isinstance(ref, dict):
            raise bad("Invalid 'agent_reference': expected an object.", "agent_reference")
        if ref.get("type", "agent_reference") != "agent_reference":
            raise bad("Invalid 'agent_reference.type'.", "agent_reference.type")
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise bad("Missing required parameter: 'agent_reference.name'.", "agent_reference.name")
        version = ref.get("version")
        if version is not None and not isinstance(version, str):
            raise bad("Invalid 'agent_reference.version'.", "agent_reference.version")
        versions = self.agents.get(name)
        if not versions:
            raise not_found("Agent", name, "agent_reference")
        if version is None:
            return versions[max(versions, key=vkey)]
        rec = versions.get(version)
        if rec is None:
            raise not_found("Agent version", f"{name}:{version}", "agent_reference")
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
        data = await body(request)
        if "agent" in data:
            raise V2Error(
                400,
                "invalid_payload",
                "The 'agent' property is deprecated. Use 'agent_reference' instead.",
                param="agent",
            )
        if "agent_reference" not in data:
            raise bad(
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
            raise bad("Invalid type for 'stream': expected a boolean.", "stream")
        if not isinstance(background, bool):
            raise bad("Invalid type for 'background': expected a boolean.", "background")
        store = data.get("store", True)
        if not isinstance(store, bool):
            raise bad("Invalid type for 'store': expected a boolean.", "store")
        if not store and background:
            raise bad("Background mode requires 'store' to be true.", "background")
        max_output = data.get("max_output_tokens")
        if max_output is not None and (
            isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 16
        ):
            raise bad(
                "Invalid 'max_output_tokens': an integer of at least 16.", "max_output_tokens"
            )
        conversation = data.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if conversation is not None and not isinstance(conversation, str):
            raise bad("Invalid 'conversation': expected an id.", "conversation")
        previous = data.get("previous_response_id")
        if previous is not None and not isinstance(previous, str):
            raise bad("Invalid 'previous_response_id'.", "previous_response_id")
        if conversation is not None and previous is not None:
            raise bad(
                "Mutually exclusive parameters: 'conversation' and 'previous_response_id'. "
                "Ensure you are only providing one of these parameters.",
                "previous_response_id",
                code="mutually_exclusive_parameters",
            )
        metadata = parse_metadata(data) or {}
        input_items = normalize_items(data.get("input", []))
        conv = self._conversation(conversation, "conversation") if conversation else None
        if previous is not None and previous not in self.responses:
            raise not_found("Previous response", previous, "previous_response_id")
        history = list(conv.items) if conv is not None else self._history(previous)
        calls = {i["call_id"]: i for i in history if i.get("type") == "function_call"}
        outputs: list[tuple[str, str, str]] = []
        for i, item in enumerate(input_items):
            if item["type"] == "function_call_output":
                call = calls.get(item["call_id"])
                if call is None:
                    raise bad(
                        f"No tool call found for function call output with call_id "
                        f"{item['call_id']}.",
                        f"input[{i}]",
                    )
                outputs.append((call["name"], call["arguments"], output_text(item["output"])))
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
            store=store,
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
            # "stream_cut" (a network cut), "stream_error" (a top-level `error` event; the
            # response fails) and "stall" (silence) after `after_events` frames.
            rule = self.faults.stream_cut(route)
            fault = (rule.kind, rule.after_events, rule.code) if rule is not None else None
            return await self._stream(request, rec, -1, fault)
        if background:
            return self.ok(rec.to_json())
        await rec.done.wait()
        return self.ok(rec.to_json())

    async def _stream(
        self,
        request: web.Request,
        rec: ResponseRec,
        after: int,
        fault: tuple[str, int, str | None] | None,
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
                    if fault is not None and sent >= max(0, fault[1]):
                        if fault[0] == "stream_error":
                            await self._stream_error(resp, rec, fault[2] or "server_error")
                            return resp
                        if fault[0] == "stall":
                            await self._stall(request)
                        # An injected network cut (or the end of a stall): the service sees its
                        # client go away.
                        if request.transport is not None:
                            request.transport.abort()
                        raise ConnectionResetError(f"stream ended by a {fault[0]} fault rule")
                    event = rec.events[index]
                    frame = f"event: {event['type']}\ndata: {dumps(event)}\n\n"
                    await resp.write(frame.encode())
                    index += 1
                    sent += 1
                if rec.done.is_set():
                    break
                await wait_or_disconnect(request, rec.changed)
            await resp.write_eof()
        except ConnectionError:
            # The client went away. Without background mode that cancels the response, as
            # on the service; a background response goes on.
            if not rec.background and rec.active:
                self.cancel_task(rec)
        return resp

    async def _stream_error(self, resp: web.StreamResponse, rec: ResponseRec, code: str) -> None:
        """A "stream_error" fault: the response fails, and the stream sends the top-level
        ``error`` event (the shape openai-python raises on) and ends."""
        message = "The server had an error while processing your request."
        if rec.active:
            rec.error = {"code": code, "message": message}
            self._set_status(rec, "failed")
            self.cancel_task(rec)
        rec.emit("error", code=code, message=message, param=None)
        event = rec.events[-1]
        await resp.write(f"event: error\ndata: {dumps(event)}\n\n".encode())
        await resp.write_eof()

    async def _stall(self, request: web.Request) -> None:
        """A "stall" fault: send nothing more until the client leaves or `stall_limit`
        seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.stall_limit
        while loop.time() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def get_response(self, request: web.Request) -> web.StreamResponse:
        rec = self._response(request)
        if request.query.get("stream") == "true":
            if not (rec.stream and rec.background):
                raise bad(
                    "Only responses created with 'background': true and 'stream': true can "
                    "be streamed again.",
                    "stream",
                )
            raw = request.query.get("starting_after", "-1")
            try:
                after = int(raw)
            except ValueError:
                raise bad(
                    "Invalid 'starting_after': expected an integer.", "starting_after"
                ) from None
            return await self._stream(request, rec, after, None)
        return self.ok(rec.to_json())

    def _response(self, request: web.Request) -> ResponseRec:
        ident = request.match_info["response_id"]
        rec = self.responses.get(ident)
        if rec is None:
            raise not_found("Response", ident)
        return rec

    async def delete_response(self, request: web.Request) -> web.Response:
        rec = self._response(request)
        self.cancel_task(rec)
        del self.responses[rec.id]
        return self.ok({"id": rec.id, "object": "response", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.Response:
        rec = self._response(request)
        await request.read()
        if not rec.background:
            raise bad("Only responses created with background=true can be cancelled.")
        if rec.status == "cancelled":
            return self.ok(rec.to_json())
        if not rec.active:
            raise bad(f"Cannot cancel a response with status '{rec.status}'.")
        self.cancel_task(rec)
        await rec.done.wait()
        return self.ok(rec.to_json())
