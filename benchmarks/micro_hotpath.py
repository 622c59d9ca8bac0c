"""agentrun's own per-event work on the streaming hot path, without network (issue 15).

Two measurements in one process, CPU time (`time.process_time()`), on a service-shaped stream
(one `thread.run.created`, then 49 one-part text deltas, one SSE frame per chunk):

* ``parse``: SSE decoding + classic event parsing + the caller's delta (`Reply.public_delta`),
  in microseconds per event;
* ``chunks``: building an OpenAI chunk (`CompletionStream`) and reading
  ``chunk.choices[0].delta.content`` as `benchmarks/runners/run_agentrun.py` does, in
  microseconds per chunk.

Compare two trees by running it with each on ``PYTHONPATH`` (alternate them; the machine is
shared). Used for the before/after figures in benchmarks/analysis.md.
"""

from __future__ import annotations

import collections
import json
import time
import types
from typing import Any

from agentrun._classic.protocol import ClassicProtocol
from agentrun._openai import CompletionStream
from agentrun._reply import Reply
from agentrun._results import TextDelta
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


FRAMES = [("thread.run.created", RUN)] + [("thread.message.delta", _delta(i)) for i in range(49)]
CHUNKS = [f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in FRAMES]


def parse_once(protocol: ClassicProtocol) -> int:
    decoder, reply, n = SSEDecoder(), Reply(), 0
    for chunk in CHUNKS:
        for sse in decoder.feed(chunk):
            for ev in protocol.stream_events(sse):
                n += reply.public_delta(ev) is not None
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


def main() -> None:
    protocol = ClassicProtocol()
    deltas = [TextDelta(f"word{i} ", "msg_1", 0) for i in range(49)]
    for name, fn, reps, per in (
        ("parse", lambda: parse_once(protocol), 2000, len(CHUNKS)),
        ("chunks", lambda: chunks_once(deltas), 3000, len(deltas)),
    ):
        fn()
        t = time.process_time()
        for _ in range(reps):
            fn()
        print(f"{name}: {(time.process_time() - t) / reps / per * 1e6:.2f} us per event")


if __name__ == "__main__":
    main()
