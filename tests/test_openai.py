"""The OpenAI chat-completions format (agentrun._openai) against the real emulator."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai.types.chat as oai
import pytest

import agentrun
from agentrun import _openai
from agentrun._classic.wire import list_messages, parse_message
from agentrun._machine import State
from agentrun._results import RunResult
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
MODEL = "azure_ai/agents/asst_abc123"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ASK = "What is the weather in Paris? Use get_weather"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e
        await _openai.aclose_clients()


def kw(emu: Emulator) -> dict[str, Any]:
    return {"api_base": emu.endpoint, "api_key": emu.api_key}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def thread_messages(emu: Emulator, thread_id: str) -> dict[str, Any]:
    req = list_messages(thread_id, order="asc")
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        data: dict[str, Any] = await client._transport.request_json(
            req.method, req.path, params=req.params
        )
    return data


def last_run(emu: Emulator) -> dict[str, Any]:
    return dict(emu.runs()[-1])


async def test_completion_shape_validates_as_openai(emu: Emulator) -> None:
    """A completion has attribute and item access, and to_dict() validates as OpenAI's model."""
    resp = await agentrun.acompletion(MODEL, user("What is 25 * 4?"), **kw(emu))
    assert "100" in resp.choices[0].message.content
    assert resp["choices"][0]["message"]["content"] == resp.choices[0].message.content
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].finish_reason == "stop"
    parsed = oai.ChatCompletion.model_validate(resp.to_dict())
    assert parsed.choices[0].message.content == resp.choices[0].message.content
    assert parsed.choices[0].message.role == "assistant"
    d = resp.to_dict()
    d["choices"][0]["message"]["content"] = "changed"
    assert resp.choices[0].message.content != "changed"  # to_dict() is a deep copy


async def test_usage_is_the_runs_real_usage(emu: Emulator) -> None:
    """usage is the run's own token counts, as the service reported them (not an estimate)."""
    resp = await agentrun.acompletion(MODEL, user("Tell me about rivers"), **kw(emu))
    run = resp.run_result.run
    assert run is not None and run.usage is not None
    assert resp.usage.prompt_tokens == run.usage.prompt_tokens
    assert resp.usage.completion_tokens == run.usage.completion_tokens
    assert resp.usage.total_tokens == run.usage.total_tokens
    assert resp.usage.completion_tokens > 0
    raw = run.raw["usage"]
    assert {k: raw[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
        k: resp.to_dict()["usage"][k]
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    # Azure's prompt_token_details becomes OpenAI's prompt_tokens_details.
    assert (
        resp.usage.prompt_tokens_details.cached_tokens
        == raw["prompt_token_details"]["cached_tokens"]
    )


async def test_thread_and_run_ids_on_object_and_hidden_params(emu: Emulator) -> None:
    """thread_id and run_id are on the object, in _hidden_params and in the JSON."""
    resp = await agentrun.acompletion(MODEL, user("Hello"), **kw(emu))
    run = last_run(emu)
    assert resp.thread_id == run["thread_id"] == resp._hidden_params["thread_id"]
    assert resp.run_id == run["id"] == resp._hidden_params["run_id"]
    assert resp.to_dict()["thread_id"] == run["thread_id"]
    assert resp.id == f"chatcmpl-{run['id']}"


async def test_messages_become_thread_messages_in_order(emu: Emulator) -> None:
    """Without thread_id, user and assistant messages (text and parts) seed the new thread."""
    resp = await agentrun.acompletion(
        MODEL,
        [
            {"role": "user", "content": [{"type": "text", "text": "My name is Carol"}]},
            {"role": "assistant", "content": "Hello Carol"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's my name?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
        ],
        **kw(emu),
    )
    assert "Carol" in resp.choices[0].message.content
    data = await thread_messages(emu, resp.thread_id)
    roles = [m["role"] for m in data["data"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    first = data["data"][0]["content"][0]["text"]["value"]
    assert first == "My name is Carol"
    kinds = [c["type"] for c in data["data"][2]["content"]]
    assert kinds[0] == "text" and len(kinds) == 2


async def test_system_message_is_additional_instructions(emu: Emulator) -> None:
    """system/developer messages become additional_instructions, shaping the reply."""
    q = "Tell me about the history of the river Thames"
    plain = await agentrun.acompletion(MODEL, user(q), **kw(emu))
    concise = await agentrun.acompletion(
        MODEL,
        [{"role": "system", "content": "Be concise."}, {"role": "user", "content": q}],
        **kw(emu),
    )
    dev = await agentrun.acompletion(
        MODEL,
        [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, *user(q)],
        **kw(emu),
    )
    assert len(concise.choices[0].message.content) < len(plain.choices[0].message.content)
    assert len(dev.choices[0].message.content) < len(plain.choices[0].message.content)


async def test_instructions_override(emu: Emulator) -> None:
    """instructions= replaces the agent's instructions for the run."""
    q = "Tell me about the history of the river Thames"
    plain = await agentrun.acompletion(MODEL, user(q), **kw(emu))
    short = await agentrun.acompletion(
        MODEL, user(q), instructions="Be concise and focus on key insights", **kw(emu)
    )
    assert len(short.choices[0].message.content) < len(plain.choices[0].message.content)


async def test_thread_id_adds_only_messages_after_last_assistant(emu: Emulator) -> None:
    """With thread_id, a resent full history adds only what follows the last assistant turn."""
    first = await agentrun.acompletion(MODEL, user("My name is Alice"), **kw(emu))
    history = [
        *user("My name is Alice"),
        {"role": "assistant", "content": first.choices[0].message.content},
        *user("What's my name?"),
    ]
    second = await agentrun.acompletion(MODEL, history, thread_id=first.thread_id, **kw(emu))
    assert "Alice" in second.choices[0].message.content
    assert second.thread_id == first.thread_id
    data = await thread_messages(emu, first.thread_id)
    assert [m["role"] for m in data["data"]] == ["user", "assistant", "user", "assistant"]


async def _tool_round_trip(emu: Emulator, *, pass_thread: bool) -> None:
    messages: list[dict[str, Any]] = user(WEATHER_ASK)
    first = await agentrun.acompletion(MODEL, messages, tools=[WEATHER_TOOL], **kw(emu))
    oai.ChatCompletion.model_validate(first.to_dict())
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert '"Paris"' in call.function.arguments
    messages.append(choice.message.to_dict())
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    extra = {"thread_id": first.thread_id} if pass_thread else {}
    final = await agentrun.acompletion(MODEL, messages, tools=[WEATHER_TOOL], **extra, **kw(emu))
    assert final.choices[0].finish_reason == "stop"
    assert "sunny, 21 C" in final.choices[0].message.content
    assert final.thread_id == first.thread_id and final.run_id == first.run_id
    assert emu.stats()["requests"]["POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs"]


async def test_function_calling_round_trip_with_thread_id(emu: Emulator) -> None:
    """tools -> tool_calls; tool messages with thread_id are submitted as the run's outputs."""
    await _tool_round_trip(emu, pass_thread=True)


async def test_function_calling_round_trip_without_thread_id(emu: Emulator) -> None:
    """A plain OpenAI client resending the history finds the thread by its tool call ids."""
    await _tool_round_trip(emu, pass_thread=False)


async def test_unknown_tool_call_id_without_thread_is_clear_error(emu: Emulator) -> None:
    """Tool messages nobody asked for, without thread_id: BadRequestError, nothing sent."""
    before = emu.stats()["requests_total"]
    with pytest.raises(agentrun.BadRequestError, match="thread_id"):
        await agentrun.acompletion(
            MODEL,
            [*user("hi"), {"role": "tool", "tool_call_id": "call_nobody", "content": "x"}],
            **kw(emu),
        )
    assert emu.stats()["requests_total"] == before


async def test_tool_call_memory_is_per_client(emu: Emulator) -> None:
    """A tool call id one client handed out resolves its thread on that client only: another
    client (another endpoint, or other credentials) refuses the same tool messages without
    thread_id (BadRequestError, nothing sent), while the first continues the run."""
    messages: list[dict[str, Any]] = user(WEATHER_ASK)
    async with (
        agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as mine,
        agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as other,
    ):
        first = await _openai.chat(mine, model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        assert isinstance(first, _openai.ChatCompletion)
        call = first.choices[0].message.tool_calls[0]
        messages.append(first.choices[0].message.to_dict())
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
        before = emu.stats()["requests_total"]
        with pytest.raises(agentrun.BadRequestError, match="thread_id"):
            await _openai.chat(other, model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        assert emu.stats()["requests_total"] == before
        final = await _openai.chat(mine, model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        assert isinstance(final, _openai.ChatCompletion)
        assert final.thread_id == first.thread_id
        assert "sunny, 21 C" in final.choices[0].message.content


@pytest.mark.parametrize(
    ("directive", "reason"),
    [("[emulator:incomplete]", "length"), ("[emulator:content_filter]", "content_filter")],
)
async def test_incomplete_runs_finish_with_reason(
    emu: Emulator, directive: str, reason: str
) -> None:
    """An incomplete run returns its partial text with finish_reason length/content_filter."""
    resp = await agentrun.acompletion(MODEL, user(f"{directive} Say hello there"), **kw(emu))
    assert resp.choices[0].finish_reason == reason
    assert resp.run_result.state is State.INCOMPLETE
    assert resp.usage.completion_tokens > 0
    oai.ChatCompletion.model_validate(resp.to_dict())


async def test_failed_run_raises_typed_error(emu: Emulator) -> None:
    """A failed run raises RunFailedError with its code, never a completion."""
    with pytest.raises(agentrun.RunFailedError) as info:
        await agentrun.acompletion(MODEL, user("[emulator:fail=server_error] hi"), **kw(emu))
    assert info.value.code == "server_error"
    assert info.value.thread_id


async def test_stream_chunk_sequence(emu: Emulator) -> None:
    """Streaming: role first, content deltas, finish_reason chunk, usage chunk; all valid."""
    stream = await agentrun.acompletion(
        MODEL,
        user("What is 25 * 4?"),
        stream=True,
        stream_options={"include_usage": True},
        **kw(emu),
    )
    chunks = [c async for c in stream]
    for c in chunks:
        oai.ChatCompletionChunk.model_validate(c.to_dict())
        assert c.object == "chat.completion.chunk"
        assert c.thread_id and c.thread_id == stream.thread_id
        assert c._hidden_params["thread_id"] == c.thread_id
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all("role" not in c.choices[0].delta for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.get("content") or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert chunks[-2] is finals[0]
    assert stream.result is not None
    assert text == stream.result.text and "100" in text
    usage = stream.result.usage
    assert usage is not None and chunks[-1].usage.completion_tokens == usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


async def test_stream_chunks_are_independent_json_objects(emu: Emulator) -> None:
    """Chunks built from one per-stream envelope: each has the OpenAI key order, its own
    choices (reading them twice gives the same values), no run result, and `to_dict()` copies
    that changing does not change the chunk or its neighbours."""
    stream = await agentrun.acompletion(MODEL, user("Hello there"), stream=True, **kw(emu))
    chunks = [c async for c in stream]
    keys = ["id", "object", "created", "model", "choices", "system_fingerprint"]
    assert all(list(c.keys())[:6] == keys for c in chunks)
    assert all(c.run_result is None for c in chunks)
    first, second = chunks[0].to_dict(), chunks[1].to_dict()
    assert first["choices"] is not second["choices"]
    assert chunks[1].choices[0].delta.content == chunks[1].choices[0].delta.content
    second["choices"][0]["delta"]["content"] = "changed"
    second["id"] = "changed"
    assert chunks[1].to_dict() != second and chunks[1].id == chunks[0].id
    assert chunks[1].choices[0].delta.content != "changed"


async def test_stream_without_include_usage_has_no_usage_chunk(emu: Emulator) -> None:
    """Without stream_options.include_usage the last chunk is the finish_reason chunk."""
    stream = await agentrun.acompletion(MODEL, user("Hello"), stream=True, **kw(emu))
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all("usage" not in c for c in chunks)


async def test_stream_tool_call_deltas(emu: Emulator) -> None:
    """Streamed tool calls arrive as OpenAI tool_calls deltas, then finish_reason tool_calls."""
    stream = await agentrun.acompletion(
        MODEL, user(WEATHER_ASK), tools=[WEATHER_TOOL], stream=True, **kw(emu)
    )
    chunks = [c async for c in stream]
    for c in chunks:
        oai.ChatCompletionChunk.model_validate(c.to_dict())
    calls = [tc for c in chunks for tc in (c.choices[0].delta.get("tool_calls") or [])]
    assert calls[0].id.startswith("call_") and calls[0].function.name == "get_weather"
    assert calls[0].index == 0
    args = "".join(tc.function.arguments for tc in calls)
    assert '"Paris"' in args
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # The round trip goes on from the stream's thread.
    final = await agentrun.acompletion(
        MODEL,
        [
            *user(WEATHER_ASK),
            {"role": "assistant", "content": None, "tool_calls": [calls[0].to_dict()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "rain"},
        ],
        thread_id=stream.thread_id,
        **kw(emu),
    )
    assert "rain" in final.choices[0].message.content


async def test_stream_failure_mid_run_raises(emu: Emulator) -> None:
    """A run that fails while streaming raises RunFailedError from the iterator."""
    stream = await agentrun.acompletion(
        MODEL, user("[emulator:fail=server_error] hi there"), stream=True, **kw(emu)
    )
    seen: list[Any] = []

    async def drain() -> None:
        async for chunk in stream:
            seen.append(chunk)

    with pytest.raises(agentrun.RunFailedError) as info:
        await drain()
    assert info.value.code == "server_error"
    assert all(not c.choices or c.choices[0].finish_reason is None for c in seen)


async def test_stream_incomplete_ends_with_length(emu: Emulator) -> None:
    """An incomplete streamed run ends with finish_reason length, after its partial text."""
    stream = await agentrun.acompletion(
        MODEL, user("[emulator:incomplete] Say hello there"), stream=True, **kw(emu)
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert any(c.choices[0].delta.get("content") for c in chunks)


async def test_stream_early_close_cancels_run(emu: Emulator) -> None:
    """Leaving a stream early through `async with` cancels the remote run."""
    stream = await agentrun.acompletion(
        MODEL, user("[emulator:sleep=5] hi"), stream=True, **kw(emu)
    )
    async with stream:
        async for _ in stream:
            break
    assert last_run(emu)["status"] in ("cancelled", "cancelling")


@pytest.mark.parametrize(
    ("param", "value"),
    [("n", 3), ("stop", ["x"]), ("seed", 7), ("logit_bias", {"1": 2}), ("foo", 1)],
)
async def test_unsupported_param_is_bad_request_naming_it(
    emu: Emulator, param: str, value: Any
) -> None:
    """An OpenAI parameter the service can't honour: BadRequestError naming it, nothing sent."""
    before = emu.stats()["requests_total"]
    with pytest.raises(agentrun.BadRequestError, match=repr(param)):
        await agentrun.acompletion(MODEL, user("hi"), **{param: value}, **kw(emu))
    assert emu.stats()["requests_total"] == before


async def test_drop_params_and_neutral_values(emu: Emulator) -> None:
    """drop_params=True drops what can't be sent; OpenAI defaults (n=1, ...) pass anyway."""
    resp = await agentrun.acompletion(
        MODEL, user("hi"), seed=7, stop=["x"], tool_choice="required", drop_params=True, **kw(emu)
    )
    assert resp.choices[0].finish_reason == "stop"
    resp = await agentrun.acompletion(
        MODEL, user("hi"), n=1, presence_penalty=0, frequency_penalty=0.0, user="u1", **kw(emu)
    )
    assert resp.choices[0].finish_reason == "stop"


async def test_supported_params_reach_the_run(emu: Emulator) -> None:
    """temperature, top_p, max_tokens and metadata are sent with the run."""
    await agentrun.acompletion(
        MODEL,
        user("hi"),
        temperature=0.2,
        top_p=0.5,
        max_tokens=300,
        metadata={"k": "v"},
        **kw(emu),
    )
    assert last_run(emu)["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    ("model", "messages", "match"),
    [
        ("gpt-4o", [{"role": "user", "content": "hi"}], "azure_ai/agents/"),
        ("azure_ai/agents/", [{"role": "user", "content": "hi"}], "agent id"),
        ("azure_ai/agents/a b", [{"role": "user", "content": "hi"}], "agent id"),
        (MODEL, [], "empty"),
        (MODEL, "hi", "list"),
        (MODEL, [{"role": "robot", "content": "hi"}], "robot"),
        (MODEL, [{"role": "system", "content": "only system"}], "no user"),
    ],
)
async def test_bad_input_fails_before_any_request(
    emu: Emulator, model: str, messages: Any, match: str
) -> None:
    """A malformed model string or messages is a ConfigurationError before anything is sent."""
    before = emu.stats()
    with pytest.raises(agentrun.ConfigurationError, match=match):
        await agentrun.acompletion(model, messages, **kw(emu))
    after = emu.stats()
    assert after["requests_total"] == before["requests_total"]
    assert after["connections_opened"] == before["connections_opened"]


async def test_extra_body_thread_id_and_instructions(emu: Emulator) -> None:
    """thread_id and instructions also work inside extra_body, as OpenAI clients send them."""
    first = await agentrun.acompletion(MODEL, user("My name is Dora"), **kw(emu))
    second = await agentrun.acompletion(
        MODEL,
        user("What's my name?"),
        extra_body={"thread_id": first.thread_id, "instructions": "Be brief."},
        **kw(emu),
    )
    assert second.thread_id == first.thread_id
    assert "Dora" in second.choices[0].message.content


async def test_module_level_calls_share_one_client_and_token() -> None:
    """Two acompletion calls with a service principal: one token request, one shared pool."""
    async with Emulator(EmulatorSettings(timing=FAST), tls=True) as emu:
        sp: dict[str, Any] = {
            "api_base": emu.endpoint,
            "tenant_id": emu.tenant_id,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "authority": emu.authority,
            "verify": str(emu.ca_path),
        }
        a = await agentrun.acompletion(MODEL, user("one"), **sp)
        b = await agentrun.acompletion(MODEL, user("two"), **sp)
        assert a.thread_id != b.thread_id
        clients = _openai._REGISTRY.clients_for_current_loop()
        assert len(clients) == 1
        stats = clients[0].statistics()
        assert stats.token_requests == 1 and stats.connections_opened == 1
        assert emu.stats()["tokens_issued"] == 1
        assert emu.stats()["connections_opened"] == 2  # one token, one API connection
        assert _openai.get_client(**sp) is clients[0]
        other = _openai.get_client(api_base=emu.endpoint, api_key=emu.api_key)
        assert other is not clients[0]
        await _openai.aclose_clients()
        assert _openai._REGISTRY.clients_for_current_loop() == []


async def test_chat_with_own_client_and_response_model(emu: Emulator) -> None:
    """chat() runs on a caller's client and reports response_model as the model."""
    async with agentrun.AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        resp = await _openai.chat(
            client, model=MODEL, messages=user("hi"), response_model="azure-agent-1"
        )
    assert isinstance(resp, _openai.ChatCompletion)
    assert resp.model == "azure-agent-1"


def _result_with_annotations() -> RunResult:
    def msg(mid: str, created: int, value: str, anns: list[dict[str, Any]]) -> Any:
        return parse_message(
            {
                "id": mid,
                "object": "thread.message",
                "created_at": created,
                "thread_id": "thread_1",
                "run_id": "run_1",
                "assistant_id": "asst_abc123",
                "role": "assistant",
                "status": "completed",
                "incomplete_details": None,
                "attachments": [],
                "metadata": {},
                "content": [{"type": "text", "text": {"value": value, "annotations": anns}}],
            }
        )

    url = {
        "type": "url_citation",
        "text": "[1]",
        "start_index": 5,
        "end_index": 8,
        "url_citation": {"url": "https://example.com", "title": "Example"},
    }
    file_ann = {
        "type": "file_citation",
        "text": "[2]",
        "start_index": 4,
        "end_index": 7,
        "file_citation": {"file_id": "file_1", "quote": "q"},
    }
    return RunResult(
        agent_id="asst_abc123",
        state=State.COMPLETED,
        thread_id="thread_1",
        run_id="run_1",
        messages=(msg("msg_1", 1, "Hello[1]", [url]), msg("msg_2", 2, "Bye [2]", [file_ann])),
        usage=None,
        tool_calls=(),
        history=(),
        mode="poll",
        requests=1,
    )


def test_annotations_kept_in_openai_and_service_shape() -> None:
    """url_citations map to OpenAI's shape; every annotation is also kept as sent, with indices
    shifted to the joined text. (Pure mapping test: the emulator produces no annotations.)"""
    resp = _openai.completion_from_result(_result_with_annotations(), MODEL)
    message = resp.choices[0].message
    assert message.content == "Hello[1]\n\nBye [2]"
    assert message.annotations[0].to_dict() == {
        "type": "url_citation",
        "url_citation": {
            "url": "https://example.com",
            "title": "Example",
            "start_index": 5,
            "end_index": 8,
        },
    }
    raw = message.agent_annotations
    assert [a.type for a in raw] == ["url_citation", "file_citation"]
    assert message.content[raw[1].start_index : raw[1].end_index] == "[2]"
    parsed = oai.ChatCompletion.model_validate(resp.to_dict())
    assert parsed.choices[0].message.annotations is not None
    assert parsed.choices[0].message.annotations[0].url_citation.url == "https://example.com"


def test_parse_model() -> None:
    """parse_model returns the agent id and rejects anything that is not an agent model."""
    assert _openai.parse_model("azure_ai/agents/asst_abc123") == "asst_abc123"
    for bad in ("azure_ai/asst_abc123", "azure_ai/agents/x/y", 3):
        with pytest.raises(agentrun.ConfigurationError):
            _openai.parse_model(bad)  # type: ignore[arg-type]


def test_reprs_hold_no_secrets() -> None:
    """A shared client's registry key (its ConnectionSettings) shows no secret in its repr."""
    key = agentrun.ConnectionSettings(api_base="https://x.example", api_key="s3cret", env={})
    assert "s3cret" not in repr(key)
    resp = _openai.completion_from_result(_result_with_annotations(), MODEL)
    assert "ChatCompletion(" in repr(resp) and "thread_1" in repr(resp)


async def test_absent_optional_fields_read_as_none(emu: Emulator) -> None:
    """Like OpenAI's models, delta.content on the final chunk (delta {}) is None, not an error;
    unknown attributes still raise AttributeError."""
    stream = await agentrun.acompletion(MODEL, user("hi"), stream=True, **kw(emu))
    chunks = [c async for c in stream]
    last = chunks[-1].choices[0]
    assert last.delta.to_dict() == {} and last.delta.content is None
    assert last.delta.tool_calls is None
    with pytest.raises(AttributeError):
        _ = last.delta.no_such_field


DOC = Path(__file__).resolve().parent.parent / "docs" / "openai-format.md"


@pytest.mark.parametrize(
    "block", re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S), ids=lambda b: b[:0]
)
def test_docs_examples_run(block: str, tmp_path: Path) -> None:
    """Every Python example in docs/openai-format.md runs as written (-W error) on the emulator."""
    script = tmp_path / "example.py"
    script.write_text(block)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
