"""agentrun against the service's recorded shapes, replayed over real HTTP on 127.0.0.1.

Each test drives `acompletion` (streamed and not), `AsyncClient.run` in stream, poll and auto
mode, or the OpenAI proxy against one fixture of `fixtures/` (see `build_fixtures.py` for
what each holds and which recordings it is modelled on).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from conftest import ReplayServer, load

import agentrun
from agentrun import RunFailedError
from agentrun._openai import chat
from agentrun._proxy import ProxyServer
from agentrun._proxy_config import parse_config

pytestmark = pytest.mark.anyio
KEY = "sk-replay"
MODES = ("stream", "poll", "auto")
Q = [{"role": "user", "content": "Tell me."}]


def model(replay: ReplayServer) -> str:
    return f"azure_ai/agents/{replay.agent_id}"


@contextlib.asynccontextmanager
async def client(replay: ReplayServer) -> AsyncIterator[agentrun.AsyncClient]:
    async with agentrun.AsyncClient(replay.endpoint, api_key="token") as c:
        yield c


@contextlib.asynccontextmanager
async def proxy(replay: ReplayServer) -> AsyncIterator[ProxyServer]:
    text = (
        "model_list:\n  - model_name: agent\n    litellm_params:\n"
        f"      model: {model(replay)}\n      api_base: {replay.endpoint}\n"
        "      api_key: token\n      max_retries: 0\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    server = ProxyServer(parse_config(text, env={}), host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def post(server: ProxyServer, body: Any) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            server.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r,
    ):
        return r.status, dict(r.headers), json.loads(await r.text())


async def chunks_of(stream: Any) -> tuple[str, list[Any], str | None, dict[str, Any]]:
    """Concatenated content, tool_call deltas, finish_reason and the final chunk's delta."""
    text, calls, finish, last = "", [], None, {}
    async with stream:
        async for ch in stream:
            if not ch.choices:
                continue
            d = ch.to_dict()["choices"][0]
            text += d["delta"].get("content") or ""
            calls += d["delta"].get("tool_calls") or []
            if d["finish_reason"]:
                finish, last = d["finish_reason"], d["delta"]
    return text, calls, finish, last


def final_text(name: str, phase: int = 0) -> str:
    msgs = load(name)["phases"][phase]["messages"]
    return "\n\n".join(
        p["text"]["value"] for m in msgs for p in m["content"] if p["type"] == "text"
    )


# -- several messages per run, in the service's order ----------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_two_messages_same_second_keep_service_order(replay: ReplayServer, mode: str) -> None:
    """case15: two messages of one second, the second's id sorting first: the reply is
    "Part one.\\n\\nPart two." in every mode (RunResult.text and messages order)."""
    replay.use("two_messages")
    async with client(replay) as c:
        result = await c.run(replay.agent_id, "Tell me two things", mode=mode)
    assert result.text == "Part one.\n\nPart two."
    assert [m.text for m in result.messages] == ["Part one.", "Part two."]


async def test_two_messages_streamed_and_through_proxy(replay: ReplayServer) -> None:
    """case15 in the OpenAI format: streamed chunks, the non-streamed reply and the proxy's
    JSON all give "Part one.\\n\\nPart two."."""
    replay.use("two_messages")
    want = "Part one.\n\nPart two."
    async with client(replay) as c:
        text, _, finish, _ = await chunks_of(
            await chat(c, model=model(replay), messages=Q, stream=True)
        )
        assert (text, finish) == (want, "stop")
        resp = await chat(c, model=model(replay), messages=Q, mode="poll")
        assert resp.choices[0].message.content == want
    async with proxy(replay) as srv:
        status, _, body = await post(srv, {"model": "agent", "messages": Q})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == want


async def test_poll_mode_reads_messages_without_status(replay: ReplayServer) -> None:
    """Listed messages have no status/completed_at/incomplete_details (as Azure sends them):
    poll mode parses them, and their status reads None."""
    replay.use("two_messages")
    async with client(replay) as c:
        result = await c.run(replay.agent_id, "hi", mode="poll")
    assert result.text == "Part one.\n\nPart two."
    assert all(m.status is None for m in result.messages)
    assert ("GET", "/threads/thread_rpTwo0000000000000000001/messages") in {
        (r[0], r[1]) for r in replay.requests
    }
    listed = [r for r in replay.requests if r[1].endswith("/messages")]
    assert all(r[2]["order"] == "asc" for r in listed)
    # An agent without built-in tools costs no step listing.
    assert not [r for r in replay.requests if r[1].endswith("/steps")]


# -- text before a function call -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_text_before_function_call(replay: ReplayServer, mode: str) -> None:
    """case16: the tool_calls response holds the text written before the call plus the call;
    the response after the tool output holds only the new text; same in stream and poll mode,
    streamed chunks and non-streamed replies alike."""
    replay.use("function_call")
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    async with client(replay) as c:
        if mode == "poll":
            first = await chat(c, model=model(replay), messages=msgs, mode="poll")
            m = first.choices[0].message
            content, calls = m.content, [dict(t.to_dict()) for t in m.tool_calls]
            finish, thread = first.choices[0].finish_reason, first.thread_id
        else:
            s = await chat(c, model=model(replay), messages=msgs, stream=True)
            content, deltas, finish, _ = await chunks_of(s)
            assert deltas[0]["id"] == "call_rpFunc000000000000000001"
            args = "".join(d["function"]["arguments"] for d in deltas)
            calls = [
                {
                    "id": deltas[0]["id"],
                    "type": "function",
                    "function": {"name": deltas[0]["function"]["name"], "arguments": args},
                }
            ]
            thread = s.thread_id
        assert content == "Let me look up the weather in Paris."
        assert finish == "tool_calls"
        assert calls == [
            {
                "id": "call_rpFunc000000000000000001",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ]
        msgs.append({"role": "assistant", "content": content, "tool_calls": calls})
        msgs.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny, 21 C"})
        if mode == "poll":
            second = await chat(
                c, model=model(replay), messages=msgs, thread_id=thread, mode="poll"
            )
            text2 = second.choices[0].message.content
            assert second.choices[0].message.tool_calls is None
        else:
            s2 = await chat(c, model=model(replay), messages=msgs, thread_id=thread, stream=True)
            text2, calls2, finish2, _ = await chunks_of(s2)
            assert (calls2, finish2) == ([], "stop")
    assert text2 == "It is sunny in Paris, 21 C."
    submits = [r for r in replay.requests if r[1].endswith("/submit_tool_outputs")]
    assert [r[3]["tool_outputs"] for r in submits] == [
        [{"tool_call_id": "call_rpFunc000000000000000001", "output": "sunny, 21 C"}]
    ]


# -- built-in tools --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_code_interpreter_text_before_and_after(replay: ReplayServer, mode: str) -> None:
    """Text, a code_interpreter step, more text with an image: both texts in order in every
    mode, the image as an ImageFilePart, no tool calls; the step is in `steps` with its input
    and logs output (from the events, or listed in poll mode: the run has built-in tools)."""
    replay.use("code_interpreter")
    async with client(replay) as c:
        result = await c.run(replay.agent_id, "5!?", mode=mode)
    assert result.text == "I will compute that with Python first.\n\n5! is 120. Here is a chart."
    assert result.tool_calls == ()
    assert [i.file_id for i in result.images] == ["assistant-rpChart00000000001"]
    (call,) = result.builtin_tool_calls
    assert (call.type, call.arguments) == (
        "code_interpreter",
        "import math\nprint(math.factorial(5))",
    )
    assert call.output == [{"type": "logs", "logs": "120\n"}]
    assert [s.type for s in result.steps] == [
        "message_creation",
        "tool_calls",
        "message_creation",
    ]


async def test_code_interpreter_is_not_a_tool_call_in_openai_format(replay: ReplayServer) -> None:
    """case17: a code_interpreter step gives no tool_calls deltas and finish_reason stop,
    streamed and not, through the library and the proxy; it is reported in `agent_steps`, the
    image in `agent_images`."""
    replay.use("code_interpreter")
    want = final_text("code_interpreter")
    s = await agentrun.acompletion(
        model=model(replay), messages=Q, stream=True, api_base=replay.endpoint, api_key="t"
    )
    text, calls, finish, last = await chunks_of(s)
    assert (text, calls, finish) == (want, [], "stop")
    assert [st["type"] for st in last["agent_steps"]] == ["code_interpreter"]
    assert last["agent_images"] == [
        {"type": "image_file", "image_file": {"file_id": "assistant-rpChart00000000001"}}
    ]
    async with proxy(replay) as srv:
        oa = openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        try:
            st = await oa.chat.completions.create(model="agent", messages=Q, stream=True)  # type: ignore[arg-type]
            seen, fin = [], None
            async for ch in st:
                if ch.choices:
                    seen += ch.choices[0].delta.tool_calls or []
                    fin = ch.choices[0].finish_reason or fin
            assert (seen, fin) == ([], "stop")
            r = await oa.chat.completions.create(model="agent", messages=Q)  # type: ignore[arg-type]
            assert r.choices[0].message.tool_calls is None
            assert r.choices[0].finish_reason == "stop"
            assert r.choices[0].message.content == want
        finally:
            await oa.close()
    await agentrun.aclose_clients()


@pytest.mark.parametrize("how", ["chunks", "stream", "poll"])
async def test_connected_agent_step(replay: ReplayServer, how: str) -> None:
    """A connected_agent step: not a tool call; its name, arguments and output (and the sub-run
    ids in raw) are in `agent_steps` of the OpenAI reply, streamed or not, in every mode."""
    replay.use("connected_agent")
    async with client(replay) as c:
        if how == "chunks":
            text, calls, finish, extra = await chunks_of(
                await chat(c, model=model(replay), messages=Q, stream=True)
            )
        else:
            resp = await chat(c, model=model(replay), messages=Q, mode=how)
            msg = resp.to_dict()["choices"][0]["message"]
            text, calls, finish = msg["content"], msg.get("tool_calls") or [], "stop"
            extra = msg
    assert (text, calls, finish) == ("Microsoft's stock closed at 512.10 USD.", [], "stop")
    (step,) = extra["agent_steps"]
    assert step["type"] == "connected_agent"
    assert (step["name"], step["arguments"], step["output"]) == (
        "stock_price_bot",
        '{"ticker":"MSFT"}',
        "MSFT closed at 512.10 USD.",
    )
    assert step["raw"]["connected_agent"]["run_id"] == "run_rpConnSub00000000000000001"


# -- annotations -----------------------------------------------------------------------------


def _check_citations(content: str, annotations: list[dict[str, Any]]) -> None:
    assert [a["url_citation"]["url"] for a in annotations] == [
        "https://example.org/lisbon/towers",
        "https://example.org/vasco-da-gama",
    ]
    for a, marker in zip(annotations, ("【3:0†source】", "【3:1†source】"), strict=True):
        assert a["type"] == "url_citation"
        cit = a["url_citation"]
        assert content[cit["start_index"] : cit["end_index"]] == marker
        assert cit["title"]


@pytest.mark.parametrize("mode", MODES)
async def test_bing_citations_non_streamed(replay: ReplayServer, mode: str) -> None:
    """Bing grounding: the reply keeps the 【n:m†source】 markers; `annotations` are OpenAI
    url_citations whose indexes point at the markers in the returned content; the
    bing_grounding step is no tool call."""
    replay.use("bing_citations")
    async with client(replay) as c:
        resp = await chat(c, model=model(replay), messages=Q, mode=mode)
    msg = resp.to_dict()["choices"][0]["message"]
    assert msg["content"] == final_text("bing_citations")
    assert "tool_calls" not in msg
    _check_citations(msg["content"], msg["annotations"])
    assert [s["type"] for s in msg["agent_steps"]] == ["bing_grounding"]
    assert msg["agent_steps"][0]["arguments"].startswith("https://api.bing.microsoft.com/")


async def test_bing_citations_streamed_and_proxy(replay: ReplayServer) -> None:
    """Streamed: the final chunk's `annotations` index into the concatenated content;
    acompletion's non-streamed reply and the proxy's JSON reply carry the same url_citations."""
    replay.use("bing_citations")
    s = await agentrun.acompletion(
        model=model(replay), messages=Q, stream=True, api_base=replay.endpoint, api_key="t"
    )
    text, calls, finish, last = await chunks_of(s)
    assert (calls, finish) == ([], "stop")
    _check_citations(text, last["annotations"])
    assert [st["type"] for st in last["agent_steps"]] == ["bing_grounding"]
    resp = await agentrun.acompletion(
        model=model(replay), messages=Q, api_base=replay.endpoint, api_key="t"
    )
    msg = resp.to_dict()["choices"][0]["message"]
    assert msg["content"] == text
    _check_citations(msg["content"], msg["annotations"])
    async with proxy(replay) as srv:
        status, _, body = await post(srv, {"model": "agent", "messages": Q})
    assert status == 200
    msg = body["choices"][0]["message"]
    _check_citations(msg["content"], msg["annotations"])
    await agentrun.aclose_clients()


# -- broken streams and failures -------------------------------------------------------------


async def test_midstream_error_event_recovers_whole_reply(replay: ReplayServer) -> None:
    """An `event: error` after three deltas: the run is finished by polling and the stream
    delivers the whole reply exactly once (streamed part, then the rest)."""
    replay.use("midstream_error")
    want = "The answer to the question is forty-two."
    async with client(replay) as c:
        text, _, finish, _ = await chunks_of(
            await chat(c, model=model(replay), messages=Q, stream=True)
        )
        result = await c.run(replay.agent_id, "q", mode="stream")
    assert (text, finish) == (want, "stop")
    assert result.text == want


@pytest.mark.parametrize("cut", [10, 16, 19])
async def test_stream_cut_delivers_rest_once(replay: ReplayServer, cut: int) -> None:
    """r1 on recorded shapes: a connection that breaks after `cut` events (inside the first
    message, between messages, inside the second): the chunks still hold the whole reply,
    each part once."""
    replay.use("two_messages", cut_after=cut)
    async with client(replay) as c:
        text, _, finish, _ = await chunks_of(
            await chat(c, model=model(replay), messages=Q, stream=True)
        )
    assert (text, finish) == ("Part one.\n\nPart two.", "stop")


async def test_poll_mode_stream_yields_text(replay: ReplayServer) -> None:
    """n2b on recorded shapes: chat(stream=True) in poll mode yields the reply as chunks."""
    replay.use("code_interpreter")
    async with client(replay) as c:
        text, calls, finish, _ = await chunks_of(
            await chat(c, model=model(replay), messages=Q, stream=True, mode="poll")
        )
    assert (text, calls, finish) == (final_text("code_interpreter"), [], "stop")


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_failure_after_partial_text(replay: ReplayServer, mode: str) -> None:
    """A run failing with rate_limit_exceeded after some text raises RunFailedError (code
    and message kept); through the proxy it is a 429 with Retry-After 60 from "Try again in
    60 seconds", and x-should-retry: false."""
    replay.use("failed_after_text")
    async with client(replay) as c:
        with pytest.raises(RunFailedError) as info:
            await c.run(replay.agent_id, "q", mode=mode)
    assert info.value.code == "rate_limit_exceeded"
    async with proxy(replay) as srv:
        status, headers, body = await post(srv, {"model": "agent", "messages": Q})
    assert status == 429
    assert headers["Retry-After"] == "60"
    assert headers["x-should-retry"] == "false"
    assert body["error"]["code"] == "rate_limit_exceeded"


async def test_failure_after_partial_text_streamed(replay: ReplayServer) -> None:
    """Streamed, the partial text arrives as chunks, then the iterator raises RunFailedError
    (never a silent finish_reason stop)."""
    replay.use("failed_after_text")
    seen: list[str] = []

    async def consume(stream: Any) -> None:
        async for ch in stream:
            assert not (ch.choices and ch.choices[0].finish_reason)
            if ch.choices:
                seen.append(ch.choices[0].delta.content or "")

    async with client(replay) as c:
        stream = await chat(c, model=model(replay), messages=Q, stream=True)
        with pytest.raises(RunFailedError) as info:
            await consume(stream)
    assert "".join(seen) == "Working on it"
    assert info.value.code == "rate_limit_exceeded"
