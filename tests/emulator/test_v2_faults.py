"""The classic fault kinds applied to the emulator's v2 routes, over real sockets: `stall`,
`html`, `permission_denied`, `stream_error` and `fail_after_text` on
`POST /openai/v1/responses`, with the response's fate checked in the stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

ROUTE = "POST /openai/v1/responses"
GENERAL = {"type": "agent_reference", "name": "general-assistant"}
SETTINGS = EmulatorSettings(
    timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=0.001, cancel_delay=0.01),
    stall_limit=30.0,
)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(SETTINGS) as emulator:
        yield emulator


@pytest.fixture
async def session(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as client:
        yield client


def frames(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(f.split("data: ", 1)[1]) for f in raw.decode().strip().split("\n\n")]


async def _read_into(resp: aiohttp.ClientResponse, chunks: list[bytes]) -> None:
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)


async def settled(emu: Emulator) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 10
    while emu.stats()["active_responses"]:
        assert asyncio.get_running_loop().time() < deadline, emu.stats()
        await asyncio.sleep(0.02)
    return emu.stats()


async def test_html_and_permission_denied_on_the_responses_route(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """An `html` rule answers a gateway page (text/html, the rule's status) and a
    `permission_denied` rule a 401 PermissionDenied JSON error, before any response exists."""
    body = {"agent_reference": GENERAL, "input": "hi"}
    emu.inject(FaultRule(route=ROUTE, kind="html", status=502))
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        assert resp.status == 502
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "<html>" in await resp.text()
    emu.inject(FaultRule(route=ROUTE, kind="permission_denied"))
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        assert resp.status == 401
        assert "PermissionDenied" in await resp.text()
    assert emu.stats()["responses_created"] == 0


async def test_stall_before_any_byte_and_in_a_stream(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A `stall` rule without `after_events` sends nothing at all (the client times out); with
    `after_events` it sends that many frames and then nothing, and a foreground response whose
    client gives up is cancelled."""
    body = {"agent_reference": GENERAL, "input": "hi [emulator:sleep=5]", "stream": True}
    emu.inject(FaultRule(route=ROUTE, kind="stall"))
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            emu.endpoint + "/openai/v1/responses",
            json=body,
            timeout=aiohttp.ClientTimeout(total=0.5),
        ) as resp:
            await resp.read()
    emu.inject(FaultRule(route=ROUTE, kind="stall", after_events=2))
    got: list[bytes] = []
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        assert resp.status == 200
        with pytest.raises(TimeoutError), anyio.fail_after(1.0):
            await _read_into(resp, got)
        resp.close()
    assert [f["type"] for f in frames(b"".join(got))] == [
        "response.created",
        "response.in_progress",
    ]
    stats = await settled(emu)
    assert stats["responses_by_status"] == {"cancelled": 1}


async def test_stream_error_rule_sends_a_top_level_error_and_fails_the_response(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A `stream_error` rule sends, after N frames, the top-level `error` event with the rule's
    code and ends the stream; the response is `failed` with that code."""
    emu.inject(FaultRule(route=ROUTE, kind="stream_error", after_events=2, code="server_error"))
    body = {"agent_reference": GENERAL, "input": "hi", "stream": True}
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        raw = await resp.read()
    events = frames(raw)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error"]
    assert events[-1]["code"] == "server_error" and events[-1]["message"]
    rid = events[0]["response"]["id"]
    async with session.get(emu.endpoint + f"/openai/v1/responses/{rid}") as resp:
        final = await resp.json()
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert (await settled(emu))["responses_by_status"] == {"failed": 1}


async def test_fail_after_text_streams_part_of_the_reply_then_fails(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A `fail_after_text` rule streams some text deltas, then `response.failed` with the
    rule's code."""
    emu.inject(FaultRule(route=ROUTE, kind="fail_after_text", code="rate_limit_exceeded"))
    body = {"agent_reference": GENERAL, "input": "Tell me about Oslo", "stream": True}
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        events = frames(await resp.read())
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert "response.completed" not in kinds


async def test_responses_listing_names_agent_mode_and_metadata(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """`Emulator.responses()` lists the stored responses with their agent, conversation,
    mode and metadata (what tests use to see which items ran)."""
    body = {
        "agent_reference": {**GENERAL, "version": "1"},
        "input": "hi",
        "background": True,
        "metadata": {"custom_id": "k1"},
    }
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        created = await resp.json()
    [listed] = emu.responses()
    assert listed["id"] == created["id"]
    assert listed["agent"] == {"name": "general-assistant", "version": "1"}
    assert (listed["background"], listed["stream"], listed["conversation_id"]) == (
        True,
        False,
        None,
    )
    assert listed["metadata"] == {"custom_id": "k1"}
    await settled(emu)


async def test_a_cut_before_any_event_still_cancels_the_foreground_response(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A `stream_cut` after 0 frames (before the response's task ever ran) cancels the
    foreground response all the same: nothing stays `in_progress`."""
    emu.inject(FaultRule(route=ROUTE, kind="stream_cut", after_events=0))
    body = {"agent_reference": GENERAL, "input": "Tell me a long story", "stream": True}
    async with session.post(emu.endpoint + "/openai/v1/responses", json=body) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    stats = await settled(emu)
    assert stats["responses_by_status"] == {"cancelled": 1}
