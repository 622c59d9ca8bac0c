"""agentrun's own per-event work on the streaming hot path, without network (issue 15).

Two measurements in one process, CPU time (`time.process_time()`), on a service-shaped stream
(one `thread.run.created`, then 49 one-part text deltas, one SSE frame per chunk):

* ``parse``: SSE decoding + classic event parsing + the caller's delta, as the driver does it
  (`SSEDecoder.frame_data`, the stream's delta template or `RunProtocol.plain_delta`, and
  `Reply.text_delta` where the tree has them, else
  `stream_events` + `Reply.public_delta`), in microseconds per event;
* ``chunks``: building an OpenAI chunk (`CompletionStream`) and reading
  ``chunk.choices[0].delta.content`` as `benchmarks/runners/run_agentrun.py` does, in
  microseconds per chunk;
* ``openai``: what `acompletion(stream=True)` adds per chunk over `stream()`: a
  `CompletionStream` iterated with `async for` over a stand-in for `RunStream` (its
  `__anext__` shaped like the driver's: the buffer, then the next event), one `StateChanged`
  and 49 `TextDelta`s, each chunk read as ``chunk.choices[0].delta.content`` as the runner
  does, minus the same events read straight from the stand-in (``ev.text``), in
  microseconds per chunk, with the function calls it adds and the proxy's relay of a chunk
  (`to_json`) (`openai_rows`); and what it costs once per call (`openai_call_rows`: the
  emulator in a thread, for a client and a finished run);
* ``burst``: the other events of one streamed call (thread, run, message and step events with
  objects of the emulator's shape, 12 in all, one SSE frame each) decoded and parsed, in
  microseconds per call.

Compare two trees by running it with each on ``PYTHONPATH`` (alternate them; the machine is
shared). Used for the before/after figures in benchmarks/analysis.md.
"""

from __future__ import annotations

import collections
import cProfile
import json
import pstats
import time
import types
from typing import Any

from agentrun import _driver
from agentrun._classic.protocol import ClassicProtocol
from agentrun._machine import State
from agentrun._openai import CompletionStream
from agentrun._reply import Reply
from agentrun._results import StateChanged, TextDelta
from agentrun._sse import SSEDecoder

RUN = {
    "id": "run_1",
    "object": "thread.run",
    "thread_id": "thread_1",
    "status": "queued",
    "assistant_id": "asst_1",
    "created_at": 1,
    "tools": [],
    "metadata": {},
}


def _delta(i: int) -> dict[str, Any]:
    text = {"index": 0, "type": "text", "text": {"value": f"word{i} "}}
    return {"id": "msg_1", "object": "thread.message.delta", "delta": {"content": [text]}}


def _run(status: str) -> dict[str, Any]:
    return RUN | {
        "status": status,
        "started_at": None,
        "expires_at": 1700000600,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": 2 if status == "completed" else None,
        "required_action": None,
        "last_error": None,
        "model": "gpt-4o",
        "instructions": "You are a helpful agent.",
        "tool_resources": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "max_completion_tokens": None,
        "max_prompt_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "incomplete_details": None,
        "usage": {"prompt_tokens": 9, "completion_tokens": 49, "total_tokens": 58}
        if status == "completed"
        else None,
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }


def _message(status: str, text: str) -> dict[str, Any]:
    content = [{"type": "text", "text": {"value": text, "annotations": []}}] if text else []
    return {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1,
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "run_id": "run_1",
        "status": status,
        "incomplete_details": None,
        "completed_at": 2 if status == "completed" else None,
        "incomplete_at": None,
        "role": "assistant",
        "content": content,
        "attachments": [],
        "metadata": {},
    }


def _step(status: str) -> dict[str, Any]:
    return {
        "id": "step_1",
        "object": "thread.run.step",
        "created_at": 1,
        "run_id": "run_1",
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "type": "message_creation",
        "status": status,
        "cancelled_at": None,
        "completed_at": 2 if status == "completed" else None,
        "expires_at": None,
        "failed_at": None,
        "last_error": None,
        "step_details": {"type": "message_creation", "message_creation": {"message_id": "msg_1"}},
        "usage": None,
    }


THREAD = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
TEXT = "".join(f"word{i} " for i in range(49))
BURST = [
    f"event: {e}\ndata: {json.dumps(d)}\n\n".encode()
    for e, d in [
        ("thread.created", THREAD),
        ("thread.run.created", _run("queued")),
        ("thread.run.queued", _run("queued")),
        ("thread.run.in_progress", _run("in_progress")),
        ("thread.run.step.created", _step("in_progress")),
        ("thread.run.step.in_progress", _step("in_progress")),
        ("thread.message.created", _message("in_progress", "")),
        ("thread.message.in_progress", _message("in_progress", "")),
        ("thread.message.completed", _message("completed", TEXT)),
        ("thread.run.step.completed", _step("completed")),
        ("thread.run.completed", _run("completed")),
    ]
] + [b"event: done\ndata: [DONE]\n\n"]

FRAMES = [("thread.run.created", RUN)] + [("thread.message.delta", _delta(i)) for i in range(49)]
CHUNKS = [f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in FRAMES]


def parse_once(protocol: ClassicProtocol) -> int:
    decoder, reply, n = SSEDecoder(), Reply(), 0
    # As the driver's `_on_chunk` does: the usual text delta straight from the frame to the
    # caller's event where the tree has that path (`RunProtocol.plain_delta`), else through
    # the neutral event.
    plain = getattr(protocol, "plain_delta", None)
    learn = getattr(_driver, "_delta_template", None)
    head = b"event: thread.message.delta\ndata: "
    tpl: Any = None
    for chunk in CHUNKS:
        if plain is not None:
            data = decoder.frame_data(chunk, head)
            if data is not None:
                if tpl:
                    text = _driver._template_text(tpl, data)
                    if text is not None:
                        n += reply.text_delta(tpl[2], tpl[3], text) is not None
                        continue
                got = plain(data)
                if got is not None:
                    if tpl is None and learn is not None:
                        tpl = learn(data, got, plain)
                    n += reply.text_delta(*got) is not None
                    continue
        for sse in decoder.feed(chunk):
            for ev in protocol.stream_events(sse):
                n += reply.public_delta(ev) is not None
    return n


def burst_once(protocol: ClassicProtocol) -> int:
    decoder, n = SSEDecoder(), 0
    for chunk in BURST:
        for sse in decoder.feed(chunk):
            n += len(protocol.stream_events(sse))
    return n


def chunks_once(deltas: list[TextDelta]) -> int:
    events = types.SimpleNamespace(
        run_id="run_1", thread_id="thread_1", _buffer=collections.deque(), _abandon=lambda: None
    )
    stream = CompletionStream(events, "agent", False)  # type: ignore[arg-type]
    chars = 0
    for d in deltas:
        stream._on_event(d)
        chunk = stream._queue.popleft()
        choice = chunk.choices[0] if chunk.choices else None
        content = choice.delta.content if choice is not None else None
        chars += len(content or "")
    return chars


class _Machine:
    run_id = "run_1"
    thread_id = "thread_1"


class _Events:
    """A stand-in for `RunStream` in its streaming phase: the same properties and an
    `__anext__` shaped like the driver's (the buffer first, then the next event)."""

    def __init__(self, events: list[Any]) -> None:
        self._machine = _Machine()
        self._buffer: collections.deque[Any] = collections.deque()
        self._it = iter(events)

    @property
    def run_id(self) -> str | None:
        return self._machine.run_id if self._machine else None

    @property
    def thread_id(self) -> str | None:
        return self._machine.thread_id if self._machine else None

    def _abandon(self) -> None:
        pass

    async def __anext__(self) -> Any:
        buffer = self._buffer
        if buffer:
            return buffer.popleft()
        for ev in self._it:
            return ev
        raise StopAsyncIteration


def _step(coro: Any) -> Any:
    """Run a coroutine that never suspends (the stand-in's events are all there)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("suspended")


def openai_once(events: list[Any]) -> int:
    stream = CompletionStream(_Events(events), "agent", False)  # type: ignore[arg-type]
    anext = type(stream).__anext__
    chars = 0
    for _ in events:
        chunk = _step(anext(stream))
        choice = chunk.choices[0] if chunk.choices else None
        content = choice.delta.content if choice is not None else None
        chars += len(content or "")
    return chars


def passthrough_once(events: list[Any]) -> int:
    source = _Events(events)
    anext = type(source).__anext__
    chars = 0
    for _ in events:
        ev = _step(anext(source))
        if type(ev) is TextDelta:
            chars += len(ev.text)
    return chars


def relay_once(events: list[Any]) -> int:
    """As the proxy relays a stream: every chunk's compact JSON (`to_json(separators=...)`)."""
    stream = CompletionStream(_Events(events), "agent", False)  # type: ignore[arg-type]
    anext = type(stream).__anext__
    size = 0
    for _ in events:
        size += len(_step(anext(stream)).to_json(separators=(",", ":")))
    return size


def _calls_per_event(fn: Any, events: list[Any], reps: int = 100) -> float:
    """Function calls (Python and builtin, as cProfile counts them) per event of `fn`."""
    fn(events)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        fn(events)
    prof.disable()
    return float(pstats.Stats(prof).total_calls) / reps / len(events)  # type: ignore[attr-defined]


def openai_rows(reps: int = 3000) -> None:
    """The OpenAI layer's cost per chunk: `openai_once` minus `passthrough_once` (CPU time,
    and function calls as cProfile counts them), and the proxy's relay of a chunk."""
    events: list[Any] = [StateChanged(State.RUN_QUEUED, State.PENDING, 0.0, "thread_1", "run_1")]
    events += [TextDelta(f"word{i} ", "msg_1", 0) for i in range(49)]
    got = {}
    for name, fn in (
        ("passthrough", passthrough_once),
        ("openai", openai_once),
        ("relay", relay_once),
    ):
        fn(events)
        t = time.process_time()
        for _ in range(reps):
            fn(events)
        got[name] = (time.process_time() - t) / reps / len(events) * 1e6
    calls = {fn: _calls_per_event(fn, events) for fn in (passthrough_once, openai_once)}
    print(
        f"openai: {got['openai']:.2f} us per chunk ({got['passthrough']:.2f} passthrough, "
        f"{got['openai'] - got['passthrough']:.2f} added by the OpenAI layer; "
        f"{calls[openai_once] - calls[passthrough_once]:.1f} function calls added)"
    )
    print(f"relay: {got['relay']:.2f} us per chunk (CompletionStream to compact JSON)")


def openai_call_rows(reps: int = 3000) -> None:
    """What the OpenAI layer costs once per call, on the emulator (in a thread; nothing is
    timed over the network): `acompletion(stream=True)` up to the stream it returns (nothing
    is sent until it is read), `get_client`, and `completion_from_result` (the non-streamed
    `ChatCompletion` of a finished run); microseconds per call."""
    import asyncio

    import agentrun
    from agentrun import _openai
    from agentrun.emulator import Emulator, EmulatorSettings, Timing

    model = "azure_ai/agents/asst_abc123"
    messages = [{"role": "user", "content": "Tell me about rivers"}]

    def timed(label: str, fn: Any) -> None:
        fn()
        t = time.process_time()
        for _ in range(reps):
            fn()
        print(f"{label}: {(time.process_time() - t) / reps * 1e6:.1f} us per call")

    async def measure(emu: Any) -> None:
        kw = {"api_base": emu.endpoint, "api_key": emu.api_key}
        client = _openai.get_client(**kw)
        result = await client.run("asst_abc123", messages[0]["content"], mode="stream")

        def setup() -> Any:
            return _step(agentrun.acompletion(model, messages, stream=True, **kw))

        timed("acompletion(stream=True) to its stream", setup)
        timed("get_client", lambda: _openai.get_client(**kw))
        timed("completion_from_result", lambda: _openai.completion_from_result(result, model))
        await _openai.aclose_clients()

    timing = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001)
    with Emulator(EmulatorSettings(timing=timing)).in_thread() as emu:
        asyncio.run(measure(emu))


def main() -> None:
    protocol = ClassicProtocol()
    deltas = [TextDelta(f"word{i} ", "msg_1", 0) for i in range(49)]
    for name, fn, reps, per in (
        ("parse", lambda: parse_once(protocol), 2000, len(CHUNKS)),
        ("chunks", lambda: chunks_once(deltas), 3000, len(deltas)),
        ("burst", lambda: burst_once(protocol), 2000, 1),
    ):
        fn()
        t = time.process_time()
        for _ in range(reps):
            fn()
        unit = "call" if name == "burst" else "event"
        print(f"{name}: {(time.process_time() - t) / reps / per * 1e6:.2f} us per {unit}")
    openai_rows()
    openai_call_rows()


if __name__ == "__main__":
    main()
