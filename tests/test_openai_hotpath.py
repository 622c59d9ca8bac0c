"""The streamed text chunks of `acompletion(stream=True)` (issue 15): made on the hot path
without their JSON, they read, compare, serialise, copy and pickle exactly as chunks built
from their JSON do. Against the real emulator."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from collections.abc import AsyncIterator
from typing import Any

import openai.types.chat as oai
import pytest

import agentrun
from agentrun import _openai
from agentrun._openai import ChatCompletionChunk
from agentrun.emulator import Emulator, EmulatorSettings, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
MODEL = "azure_ai/agents/asst_abc123"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e
        await _openai.aclose_clients()


def kw(emu: Emulator) -> dict[str, Any]:
    return {"api_base": emu.endpoint, "api_key": emu.api_key}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _has_json(obj: object) -> bool:
    try:
        object.__getattribute__(obj, "_data")
    except AttributeError:
        return False
    return True


async def _read(stream: Any) -> list[ChatCompletionChunk]:
    """Every chunk, read as LiteLLM callers read them: `chunk.choices[0].delta.content`."""
    chunks = []
    async with stream:
        async for chunk in stream:
            choice = chunk.choices[0] if chunk.choices else None
            if choice is not None:
                assert choice.delta.content is None or isinstance(choice.delta.content, str)
            chunks.append(chunk)
    return chunks


async def test_text_chunks_build_their_json_on_first_use(emu: Emulator) -> None:
    """After the first text chunk of a part, a text chunk and its choice and delta are made
    without their JSON: reading `chunk.choices[0].delta.content` builds none of it, nor do
    `to_dict()` and `to_json()` (they write theirs directly); the first use that needs it
    (item access, an envelope field) builds it once, and the chunk keeps it."""
    stream = await agentrun.acompletion(MODEL, user("Tell me about rivers"), stream=True, **kw(emu))
    chunks = await _read(stream)
    lazy = [c for c in chunks if not _has_json(c)]
    texts = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 5
    # The role chunk, the first text chunk (it starts the part) and the finish chunk are built
    # whole; every other text chunk is lazy.
    assert lazy == texts[1:]
    for chunk in lazy:
        choice = chunk.choices[0]
        assert not _has_json(choice) and not _has_json(choice.delta)
    chunk = lazy[0]
    data, text = chunk.to_dict(), chunk.to_json(separators=(",", ":"))
    assert not _has_json(chunk)
    assert chunk.id == data["id"]
    assert _has_json(chunk) and _has_json(chunk.choices[0]) and _has_json(chunk.choices[0].delta)
    kept = object.__getattribute__(chunk, "_data")
    assert kept["choices"][0] is object.__getattribute__(chunk.choices[0], "_data")
    assert chunk.to_dict() == data and chunk.to_json(separators=(",", ":")) == text
    assert object.__getattribute__(chunk, "_data") is kept


async def test_lazy_text_chunks_read_like_chunks_built_from_their_json(emu: Emulator) -> None:
    """Every streamed chunk equals `ChatCompletionChunk(chunk.to_dict())` in every way a
    caller reads one: attributes, item access, `get`, `in`, `len`, key order, `to_dict()` /
    `model_dump()`, `to_json()` / `model_dump_json()`, repr, `_hidden_params`, absent
    optional fields as None; and validates as the openai package's `ChatCompletionChunk`."""
    stream = await agentrun.acompletion(
        MODEL,
        user("Tell me about rivers"),
        stream=True,
        stream_options={"include_usage": True},
        **kw(emu),
    )
    chunks = await _read(stream)
    assert any(not _has_json(c) for c in chunks)
    text = ""
    for chunk in chunks:
        lazy = not _has_json(chunk)
        # What a lazy chunk writes without its JSON, against what its JSON gives.
        written = (
            chunk.to_dict(),
            chunk.model_dump(),
            chunk.to_json(),
            chunk.model_dump_json(),
            chunk.to_json(separators=(",", ":")),
        )
        assert _has_json(chunk) is not lazy
        whole = object.__getattribute__(chunk, "_data") if not lazy else chunk._data
        assert written[0] == written[1] == whole and written[0] is not whole
        assert written[2] == written[3] == json.dumps(whole)
        assert written[4] == json.dumps(whole, separators=(",", ":"))
        twin = ChatCompletionChunk(json.loads(json.dumps(chunk.to_dict())))
        assert chunk == twin and twin == chunk
        assert list(chunk.keys()) == list(twin.keys()) and len(chunk) == len(twin)
        assert chunk.to_dict() == twin.to_dict() == chunk.model_dump()
        assert chunk.to_json() == twin.to_json() == chunk.model_dump_json()
        assert chunk.to_json(separators=(",", ":")) == twin.to_json(separators=(",", ":"))
        assert repr(chunk) == repr(twin)
        assert chunk._hidden_params == twin._hidden_params
        assert chunk.run_result is None
        oai.ChatCompletionChunk.model_validate(chunk.to_dict())
        for name in ("id", "object", "created", "model", "system_fingerprint"):
            assert getattr(chunk, name) == getattr(twin, name) == chunk[name]
        assert chunk.thread_id == stream.thread_id and chunk.run_id == twin.run_id
        assert chunk.get("usage") == twin.get("usage") and ("usage" in chunk) == ("usage" in twin)
        if not chunk.choices:
            continue
        choice, other = chunk.choices[0], twin.choices[0]
        assert choice == other and choice.to_dict() == chunk["choices"][0].to_dict()
        assert choice.index == 0 and choice["index"] == 0
        assert choice.finish_reason == other.finish_reason
        assert choice.logprobs is None and "logprobs" in choice
        assert choice.delta == other.delta and choice.delta.to_dict() == other.delta.to_dict()
        assert choice.delta.content == other.delta.content == choice.delta.get("content")
        assert choice.delta.role == other.delta.role
        assert choice.delta.tool_calls is None
        assert ("role" in choice.delta) == ("role" in other.delta)
        assert list(choice.delta.keys()) == list(other.delta.keys())
        assert repr(choice) == repr(other) and repr(choice.delta) == repr(other.delta)
        if lazy:
            assert choice.delta.to_dict() == {"content": choice.delta.content}
            assert choice.to_dict() == {
                "index": 0,
                "delta": {"content": choice.delta.content},
                "finish_reason": None,
                "logprobs": None,
            }
        text += choice.delta.content or ""
    assert stream.result is not None and text == stream.result.text


async def test_lazy_text_chunks_copy_deepcopy_and_pickle(emu: Emulator) -> None:
    """A lazy text chunk (its JSON not built yet) and one whose JSON was built both survive
    `copy.copy`, `copy.deepcopy` and a pickle round trip: the twin is a `ChatCompletionChunk`
    equal to the original, with the same text and JSON."""
    stream = await agentrun.acompletion(MODEL, user("Tell me about rivers"), stream=True, **kw(emu))
    chunks = await _read(stream)
    lazy = [c for c in chunks if not _has_json(c)]
    assert len(lazy) >= 2
    built = lazy[1]
    built.to_dict()
    for original in (lazy[0], built):
        for copier in (copy.copy, copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))):
            twin = copier(original)
            assert type(twin) is ChatCompletionChunk
            assert twin.choices[0].delta.content == original.choices[0].delta.content
            assert twin == original
            assert twin.to_dict() == original.to_dict()
            assert twin.to_json() == original.to_json()


async def test_a_new_text_part_still_starts_with_the_separator(emu: Emulator) -> None:
    """A reply of two messages: the first text chunk of the second message (a new part) is
    not taken for a later chunk of the first; it starts with the separator, so the chunks'
    texts join to `result.text`; and `stream_chunk_builder` adds them up to the same text."""
    stream = await agentrun.acompletion(
        MODEL, user("[emulator:script=two_messages] hi"), stream=True, **kw(emu)
    )
    chunks = await _read(stream)
    assert stream.result is not None and len(stream.result.messages) == 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == stream.result.text
    assert text.count(_openai.TEXT_PART_SEPARATOR) >= 1
    built = agentrun.stream_chunk_builder(chunks)
    assert built is not None and built.choices[0].message.content == stream.result.text


def test_sync_completion_stream_gives_the_same_chunks() -> None:
    """`completion(stream=True)` (the sync layer) hands out the same lazy text chunks: their
    texts join to the reply, and each equals its JSON rebuilt."""
    with Emulator(EmulatorSettings(timing=FAST)).in_thread() as emu:
        chunks = list(agentrun.completion(MODEL, user("What is 2 * 3?"), stream=True, **kw(emu)))
    assert any(not _has_json(c) for c in chunks)
    for chunk in chunks:
        assert chunk == ChatCompletionChunk(chunk.to_dict())
    assert "6" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_get_client_remembers_its_arguments_under_their_environment(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get_client` (every `acompletion`) gives the same client for the same arguments without
    making their settings again, but the environment counts as it did: a changed connection
    variable chooses other settings; `verify=1` is not taken for `verify=True` (it is refused);
    the secret is remembered as its digest; after `aclose_clients()` a new client is made."""
    monkeypatch.delenv("AZURE_AI_API_BASE", raising=False)
    one = _openai.get_client(api_key=emu.api_key, api_base=emu.endpoint)
    assert _openai.get_client(api_key=emu.api_key, api_base=emu.endpoint) is one
    assert _openai.get_client(api_key=emu.api_key, api_base=emu.endpoint, verify=True) is one
    with pytest.raises(agentrun.ConfigurationError, match="verify"):
        _openai.get_client(api_key=emu.api_key, api_base=emu.endpoint, verify=1)
    # The api_base from the environment: each value its own settings.
    monkeypatch.setenv("AZURE_AI_API_BASE", emu.endpoint)
    from_env = _openai.get_client(api_key=emu.api_key)
    assert from_env.settings.api_base == emu.endpoint
    other_base = emu.endpoint.replace("/projects/emulator", "/projects/other")
    monkeypatch.setenv("AZURE_AI_API_BASE", other_base)
    moved = _openai.get_client(api_key=emu.api_key)
    assert moved is not from_env and moved.settings.api_base == other_base
    monkeypatch.setenv("AZURE_AI_API_BASE", emu.endpoint)
    assert _openai.get_client(api_key=emu.api_key) is from_env
    # What it remembers keys on the secret's digest, never the secret (docs/openai-format.md).
    entry = _openai._REGISTRY._by_loop[asyncio.get_running_loop()]
    assert entry.by_arguments and not any(emu.api_key in repr(k) for k in entry.by_arguments)
    await _openai.aclose_clients()
    again = _openai.get_client(api_key=emu.api_key, api_base=emu.endpoint)
    assert again is not one
    await _openai.aclose_clients()


@pytest.mark.parametrize(
    "text", ["plain ", 'a "quoted" word', "caf\u00e9 \u2019 \U0001f600", "line\nbreak\t\\", "\x00"]
)
@pytest.mark.parametrize(
    "model", [MODEL, 'odd "model" caf\u00e9', "azure_ai/agents/x\x00agentrun-content\x00"]
)
def test_text_chunk_json_is_the_json_of_its_fields(text: str, model: str) -> None:
    """A text chunk's `to_json()` (any `separators`, or other json.dumps options) and
    `to_dict()`, written without its JSON, equal `json.dumps` / a deep copy of the JSON it
    builds, whatever the text and the envelope's strings hold (quotes, escapes, non-ASCII,
    the text that stands for the content while the envelope's JSON text is split)."""
    base = {
        "id": "chatcmpl-run_1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": None,
        "system_fingerprint": None,
        "thread_id": "thread_1",
        "run_id": "run_1",
    }
    envelope = _openai._Envelope(base)
    options: list[dict[str, Any]] = [
        {},
        {"separators": (",", ":")},
        {"separators": (", ", ": ")},
        {"separators": [",", ":"]},
        {"ensure_ascii": False},
        {"indent": 2},
    ]
    for kwargs in options:
        chunk = _openai._text_chunk(envelope, text)
        written, data = chunk.to_json(**kwargs), chunk.to_dict()
        assert json.loads(written)["choices"][0]["delta"]["content"] == text
        assert written == json.dumps(chunk._data, **kwargs)
        assert data == chunk._data and data["model"] == model
    assert base["choices"] is None  # the envelope is never changed
