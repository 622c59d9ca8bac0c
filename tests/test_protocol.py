"""The protocol seam: the classic API behind `RunProtocol`, the machine's outcomes, the layering
of the protocol packages, and the structured fan-out. Pure tests (no service, no emulator)."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentrun import _protocol as p
from agentrun._classic.protocol import ClassicProtocol
from agentrun._errors import ConfigurationError
from agentrun._fanout import fan_out
from agentrun._inputs import InputMessage, RunOptions, ToolOutput
from agentrun._machine import Finish, Op, Outcome, RunMachine, State
from agentrun._sse import SSEEvent

ROOT = Path(__file__).resolve().parent.parent / "agentrun"
HELLO = InputMessage(role="user", content="Hello")


def _inv(**overrides: Any) -> p.Invocation:
    values: dict[str, Any] = dict(
        agent="asst_abc123",
        messages=(HELLO,),
        options=RunOptions(),
        thread_id=None,
        run_id=None,
        tool_outputs=(),
        timeout=None,
        mode="auto",
    )
    values.update(overrides)
    return p.Invocation(**values)


def _run(status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "id": "run_1",
        "object": "thread.run",
        "thread_id": "thread_1",
        "assistant_id": "asst_abc123",
        "status": status,
        "created_at": 1700000000,
        **extra,
    }


def test_classic_requests_for_each_op() -> None:
    """Each op becomes the classic route: new thread and run in one POST, a run on the
    caller's thread with the input as additional_messages, tool outputs, poll and cancel."""
    proto = ClassicProtocol()
    req = proto.request(Op.CREATE_THREAD_AND_RUN, _inv(), None, None, stream=True)
    assert (req.method, req.path) == ("POST", "/threads/runs")
    assert req.json is not None and req.json["stream"] is True
    req = proto.request(Op.CREATE_THREAD, _inv(), None, None, stream=False)
    assert (req.method, req.path) == ("POST", "/threads")
    req = proto.request(Op.CREATE_RUN, _inv(thread_id="thread_1"), "thread_1", None, stream=False)
    assert (req.method, req.path) == ("POST", "/threads/thread_1/runs")
    assert req.json is not None and req.json["additional_messages"][0]["content"] == "Hello"
    # On a thread this invocation created, the input was posted with the thread.
    req = proto.request(Op.CREATE_RUN, _inv(), "thread_1", None, stream=False)
    assert req.json is not None and "additional_messages" not in req.json
    outputs = (ToolOutput("call_1", "42"),)
    req = proto.request(
        Op.SUBMIT_TOOL_OUTPUTS, _inv(tool_outputs=outputs), "thread_1", "run_1", stream=False
    )
    assert req.path == "/threads/thread_1/runs/run_1/submit_tool_outputs"
    req = proto.request(Op.GET_RUN, _inv(), "thread_1", "run_1", stream=False)
    assert (req.method, req.path) == ("GET", "/threads/thread_1/runs/run_1")
    req = proto.request(Op.CANCEL_RUN, _inv(), "thread_1", "run_1", stream=False)
    assert (req.method, req.path) == ("POST", "/threads/thread_1/runs/run_1/cancel")
    with pytest.raises(ConfigurationError, match="run_id"):
        proto.request(Op.SUBMIT_TOOL_OUTPUTS, _inv(), "thread_1", None, stream=False)


def test_classic_stream_events_become_neutral_events() -> None:
    """Classic SSE events convert into the seam's events the driver understands."""
    proto = ClassicProtocol()

    def one(event: str, data: Any) -> list[p.Event]:
        return proto.stream_events(SSEEvent(event, json.dumps(data)))

    (ev,) = one("thread.run.completed", _run())
    assert isinstance(ev, p.RunUpdated) and ev.run.status == "completed"
    thread = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
    assert one("thread.created", thread) == [p.ThreadStarted("thread_1")]
    step = {"id": "step_1", "object": "thread.run.step", "run_id": "run_1", "type": "x"}
    (ev,) = one("thread.run.step.completed", step)
    assert isinstance(ev, p.StepSeen) and (ev.step.id, ev.run_id) == ("step_1", "run_1")
    delta = {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "Hi"}}]},
    }
    assert one("thread.message.delta", delta) == [p.TextDelta("msg_1", 0, "Hi")]
    assert proto.stream_events(SSEEvent("done", "[DONE]")) == [p.StreamEnded()]
    (ev,) = one("error", {"error": {"code": "server_error", "message": "boom"}})
    assert isinstance(ev, p.StreamFailed) and ev.code == "server_error"
    assert "thread.message.delta" in proto.quiet_events
    assert "thread.run.completed" not in proto.quiet_events


def test_classic_builtin_tools_from_the_run_echo() -> None:
    """A run whose tools echo names a non-function tool may have built-in tool steps."""
    proto = ClassicProtocol()
    plain = proto.parse_run(_run(tools=[{"type": "function", "function": {"name": "f"}}]))
    builtin = proto.parse_run(_run(tools=[{"type": "code_interpreter"}]))
    assert not proto.uses_builtin_tools(plain)
    assert proto.uses_builtin_tools(builtin)


@pytest.mark.anyio
async def test_classic_listing_pages_through_call() -> None:
    """Messages are read page by page with `after`, through the driver's `call`."""
    proto = ClassicProtocol()
    sent: list[tuple[tuple[str, str], ...]] = []

    def message(mid: str) -> dict[str, Any]:
        return {"id": mid, "thread_id": "thread_1", "role": "assistant", "content": []}

    async def call(req: p.ApiRequest) -> Any:
        sent.append(req.params)
        if ("after", "msg_2") in req.params:
            return {"data": [message("msg_3")], "has_more": False, "last_id": "msg_3"}
        return {"data": [message("msg_1"), message("msg_2")], "has_more": True, "last_id": "msg_2"}

    ids = [m.id async for m in proto.messages(call, "thread_1", "run_1")]
    assert ids == ["msg_1", "msg_2", "msg_3"]
    assert len(sent) == 2 and ("run_id", "run_1") in sent[0]


def test_finish_outcome_is_decided_by_the_machine() -> None:
    """`Finish.outcome` maps where the invocation ended to reply, run error or no run."""
    assert Finish(State.COMPLETED).outcome is Outcome.REPLY
    assert Finish(State.REQUIRES_ACTION).outcome is Outcome.REPLY
    for state in (State.FAILED, State.CANCELLED, State.EXPIRED, State.INCOMPLETE):
        assert Finish(state).outcome is Outcome.RUN_ERROR
    assert Finish(State.PENDING).outcome is Outcome.NO_RUN
    assert Finish(State.INCOMPLETE).has_reply and not Finish(State.FAILED).has_reply
    assert not Finish(State.REQUIRES_ACTION).run_ended


def test_finish_says_when_events_went_unseen() -> None:
    """A streamed run whose stream broke finishes with `unseen`; an intact stream without."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    m.run_update("in_progress", run_id="r", thread_id="t", now=0.1, via="stream")
    m.stream_lost(0.2)
    fin = m.run_update("requires_action", run_id="r", thread_id="t", now=0.3, via="poll")
    assert isinstance(fin, Finish) and fin.unseen
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    m.run_update("requires_action", run_id="r", thread_id="t", now=0.1, via="stream")
    fin = m.stream_done(0.2)
    assert isinstance(fin, Finish) and not fin.unseen


def _imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def test_protocol_implementations_import_nothing_of_each_other() -> None:
    """`agentrun._classic` and `agentrun._responses` never import each other, and the seam
    and the neutral values import neither."""
    classic, responses = _imports(ROOT / "_classic"), _imports(ROOT / "_responses")
    assert not any(m.startswith("agentrun._responses") for m in classic)
    assert not any(m.startswith("agentrun._classic") for m in responses)
    for neutral in ("_protocol.py", "_model.py", "_inputs.py", "_driver.py", "_reply.py"):
        tree = ast.parse((ROOT / neutral).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.startswith(("agentrun._classic", "agentrun._responses")) for m in mods)


@pytest.mark.anyio
async def test_fan_out_bounds_concurrency_and_reads_lazily() -> None:
    """At most `concurrency` work items run at once, the input is read only as slots free
    up, and every outcome arrives."""
    running = peak = read = 0

    async def items() -> AsyncIterator[int]:
        nonlocal read
        for i in range(20):
            read += 1
            yield i

    async def work(index: int, item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01)
        running -= 1
        return item * 2

    async with fan_out(items(), work, 3) as results:
        first = await results.__anext__()
        assert read <= 3 + 1  # three running, at most one more read and waiting for a slot
        rest = [x async for x in results]
    assert sorted([first, *rest]) == [2 * i for i in range(20)]
    assert peak <= 3


@pytest.mark.anyio
async def test_leaving_fan_out_early_cancels_the_work() -> None:
    """Leaving the block before the results are exhausted cancels the work still running
    and waits for it: nothing outlives the block."""
    cancelled = 0

    async def work(index: int, item: int) -> int:
        nonlocal cancelled
        if item == 0:
            return 0
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise
        return item  # pragma: no cover

    with anyio.fail_after(5):
        async with fan_out(range(4), work, 4) as results:
            async for _ in results:
                break
    assert cancelled == 3
