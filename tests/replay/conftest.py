"""A replay server: serves the recorded-shape fixtures of `fixtures/` over real HTTP.

Only the routes agentrun calls, under ``/api/projects/replay``: create thread and run (streamed
or not), create run on a thread, get run, list runs, list messages (``order``, ``after``,
``limit``, ``run_id``), cancel, submit tool outputs, create thread, add message. A scenario is
one fixture (see `build_fixtures.py`): phase 0 answers the create, phase 1 the tool outputs.
Polled runs are already finished at the first ``GET`` (the fixture's final run object).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "/api/projects/replay"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


async def _body(request: web.Request) -> Any:
    raw = await request.read()  # cached by aiohttp: every handler may read it again
    return json.loads(raw) if raw else None


class ReplayServer:
    """One scenario at a time (`use`); `requests` logs ``(method, path, query, body)``."""

    def __init__(self) -> None:
        self.scenario: dict[str, Any] = {"phases": []}
        self.phase = 0
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.endpoint = ""
        self._runner: web.AppRunner | None = None

    def use(self, name: str, *, cut_after: int | None = None) -> dict[str, Any]:
        """Serve fixture `name`; `cut_after` drops each stream's connection after N events."""
        self.scenario = load(name)
        self.phase = 0
        self.cut_after = cut_after
        self.requests.clear()
        return self.scenario

    @property
    def agent_id(self) -> str:
        return str(self.scenario["agent_id"])

    def _phase(self) -> dict[str, Any]:
        phases = self.scenario["phases"]
        return dict(phases[min(self.phase, len(phases) - 1)])

    def _queued(self) -> dict[str, Any]:
        run = copy.deepcopy(self._phase()["run"])
        run.update(
            status="queued",
            started_at=None,
            completed_at=None,
            failed_at=None,
            required_action=None,
            last_error=None,
            usage=None,
        )
        return run

    async def start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_post(f"{BASE}/threads/runs", self._create)
        r.add_post(f"{BASE}/threads", self._thread)
        r.add_post(f"{BASE}/threads/{{t}}/runs", self._create)
        r.add_get(f"{BASE}/threads/{{t}}/runs", self._list_runs)
        r.add_get(f"{BASE}/threads/{{t}}/runs/{{r}}", self._get_run)
        r.add_post(f"{BASE}/threads/{{t}}/runs/{{r}}/cancel", self._cancel)
        r.add_post(f"{BASE}/threads/{{t}}/runs/{{r}}/submit_tool_outputs", self._submit)
        r.add_get(f"{BASE}/threads/{{t}}/runs/{{r}}/steps", self._steps)
        r.add_get(f"{BASE}/threads/{{t}}/messages", self._messages)
        r.add_post(f"{BASE}/threads/{{t}}/messages", self._add_message)
        app.middlewares.append(self._log)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}{BASE}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path[len(BASE) :]
        self.requests.append((request.method, path, dict(request.query), await _body(request)))
        response: web.StreamResponse = await handler(request)
        return response

    async def _sse(self, request: web.Request, events: list[Any]) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "x-request-id": "rp1"}
        )
        await response.prepare(request)
        for n, (name, data) in enumerate(events):
            if self.cut_after is not None and n >= self.cut_after:
                assert request.transport is not None
                request.transport.close()  # a connection that breaks mid-stream
                return response
            text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            await response.write(f"event: {name}\ndata: {text}\n\n".encode())
        await response.write_eof()
        return response

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request) or {}
        self.phase = 0
        events = self._phase()["events"]
        if "t" in request.match_info:  # a run on an existing thread: no thread.created
            events = [e for e in events if e[0] != "thread.created"]
        if body.get("stream"):
            return await self._sse(request, events)
        return web.json_response(self._queued())

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        self.phase = 1
        if (await _body(request) or {}).get("stream"):
            return await self._sse(request, self._phase()["events"])
        return web.json_response(self._queued())

    async def _get_run(self, request: web.Request) -> web.Response:
        return web.json_response(self._phase()["run"])

    async def _list_runs(self, request: web.Request) -> web.Response:
        run = self._phase()["run"]
        return web.json_response(
            {
                "object": "list",
                "data": [run],
                "first_id": run["id"],
                "last_id": run["id"],
                "has_more": False,
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        run = copy.deepcopy(self._phase()["run"])
        run["status"] = "cancelled"
        return web.json_response(run)

    async def _messages(self, request: web.Request) -> web.Response:
        q = request.query
        items = list(self._phase()["messages"])
        if "run_id" in q:
            items = [m for m in items if m["run_id"] == q["run_id"]]
        if q.get("order", "desc") == "desc":
            items.reverse()
        if "after" in q:
            ids = [m["id"] for m in items]
            items = items[ids.index(q["after"]) + 1 :] if q["after"] in ids else []
        limit = int(q.get("limit", "20"))
        page = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    async def _steps(self, request: web.Request) -> web.Response:
        # The run's steps so far, oldest first: each step's last state in the events of the
        # phases served up to now (the service lists steps without `metadata`, like events).
        steps: dict[str, Any] = {}
        for phase in self.scenario["phases"][: self.phase + 1]:
            for name, data in phase["events"]:
                if name.startswith("thread.run.step.") and name != "thread.run.step.delta":
                    steps[data["id"]] = data
        items = list(steps.values())
        if request.query.get("order", "desc") == "desc":
            items.reverse()
        return web.json_response(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": False,
            }
        )

    async def _thread(self, request: web.Request) -> web.Response:
        run = self._phase()["run"]
        return web.json_response(
            {
                "id": run["thread_id"],
                "object": "thread",
                "created_at": run["created_at"],
                "metadata": {},
                "tool_resources": {},
            }
        )

    async def _add_message(self, request: web.Request) -> web.Response:
        body = await _body(request) or {}
        return web.json_response(
            {
                "id": "msg_rpUser0000000000000000001",
                "object": "thread.message",
                "created_at": 1764400000,
                "assistant_id": None,
                "thread_id": request.match_info["t"],
                "run_id": None,
                "role": body.get("role", "user"),
                "content": [
                    {"type": "text", "text": {"value": str(body.get("content")), "annotations": []}}
                ],
                "attachments": [],
                "metadata": {},
            }
        )


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
