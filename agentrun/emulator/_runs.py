"""Run lifecycle: one asyncio task per run drives it in real time and produces its SSE events.

A run progresses whether or not a client listens. Streaming handlers subscribe a queue to the
run before it emits anything they must see; each event is serialised once, at emit time, and
pushed to every subscribed queue. A `None` in a queue ends that stream (after `done`). Nothing
is buffered for runs without listeners, so finished runs hold no event data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from . import _model
from ._settings import Timing
from ._store import TERMINAL, MessageRec, RunRec, StepRec, Store, ThreadRec, new_id
from ._util import Stats, sse_frame

__all__ = ["RunEngine"]

JSON = dict[str, Any]
DONE_FRAME = sse_frame("done", "[DONE]")
RUN_LIFETIME = 600

_RATE_LIMIT_ERROR = {
    "code": "rate_limit_exceeded",
    "message": "Rate limit is exceeded. Try again in 60 seconds.",
}
_SERVER_ERROR = {"code": "server_error", "message": "Sorry, something went wrong."}


def _ms() -> float:
    return time.time() * 1000.0


class RunEngine:
    """Owns every run task; `shutdown` cancels and awaits them all."""

    def __init__(self, store: Store, stats: Stats, timing: Timing) -> None:
        self.store = store
        self.stats = stats
        self.timing = timing
        self.tasks: set[asyncio.Task[None]] = set()

    # -- plumbing ---------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def subscribe(self, run: RunRec) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        run.listeners.append(queue)
        return queue

    def unsubscribe(self, run: RunRec, queue: asyncio.Queue[bytes | None]) -> None:
        with contextlib.suppress(ValueError):
            run.listeners.remove(queue)

    def emit(self, run: RunRec, event: str, data: JSON) -> None:
        if not run.listeners:
            return
        frame = sse_frame(event, data)
        for queue in run.listeners:
            queue.put_nowait(frame)

    def end_streams(self, run: RunRec) -> None:
        listeners, run.listeners = run.listeners, []
        for queue in listeners:
            queue.put_nowait(DONE_FRAME)
            queue.put_nowait(None)

    def set_status(self, run: RunRec, status: str) -> None:
        old = run.status
        if old == status:
            return
        run.status = status
        self.stats.run_status(
            old, status, old_active=old not in TERMINAL, new_active=status not in TERMINAL
        )
        if status in TERMINAL:
            run.completed_at_ms = _ms()
            thread = self.store.threads.get(run.thread_id)
            if thread is not None and thread.active_run is run:
                thread.active_run = None
                thread.last_activity = self.store.clock()

    # -- public operations -----------------------------------------------------------------

    def start(self, run: RunRec) -> None:
        """Register a freshly created (queued) run and start driving it."""
        self.stats.run_status(None, run.status, old_active=False, new_active=True)
        run.task = self._spawn(self._drive(run))

    def cancel(self, run: RunRec) -> None:
        """Move an active run to `cancelling`; it becomes `cancelled` shortly after."""
        self.set_status(run, "cancelling")
        self.emit(run, "thread.run.cancelling", run.to_json())
        if run.task is not None:
            run.task.cancel()
        run.task = self._spawn(self._finish_cancel(run))

    def submit(self, run: RunRec, outputs: list[JSON]) -> None:
        """Answer a run waiting in `requires_action`: the tool step completes, the run queues."""
        by_id = {str(o["tool_call_id"]): str(o.get("output") or "") for o in outputs}
        calls = run.pending_calls
        for call in calls:
            output = by_id.get(call["id"], "")
            call["function"]["output"] = output
            run.answered_calls.append(
                (call["function"]["name"], call["function"]["arguments"], output)
            )
        step = next((s for s in reversed(run.steps) if s.type == "tool_calls"), None)
        if step is not None:
            step.status = "completed"
            step.completed_at = self.store.now()
            step.expires_at = None
            completion = sum(
                _model.count_tokens(c["function"]["name"] + " " + c["function"]["arguments"])
                for c in calls
            )
            step.usage = {
                "prompt_tokens": run.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": run.prompt_tokens + completion,
            }
            self.emit(run, "thread.run.step.completed", step.to_json())
        run.required_action = None
        run.pending_calls = []
        self.set_status(run, "queued")
        self.emit(run, "thread.run.queued", run.to_json())
        if run.tool_outputs is not None and not run.tool_outputs.done():
            run.tool_outputs.set_result(outputs)

    async def shutdown(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for run in list(self.store.runs.values()):
            self.end_streams(run)

    def abandon_all(self) -> None:
        """Cancel every run task (for reset); streams end at once."""
        for task in list(self.tasks):
            task.cancel()
        for run in list(self.store.runs.values()):
            self.end_streams(run)

    # -- the lifecycle ---------------------------------------------------------------------

    def _timing(self, run: RunRec) -> Timing:
        timing = run.timing if isinstance(run.timing, Timing) else self.timing
        return timing

    async def _finish_cancel(self, run: RunRec) -> None:
        await asyncio.sleep(self._timing(run).cancel_delay)
        now = self.store.now()
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "cancelled"
                step.cancelled_at = now
        thread = self.store.threads.get(run.thread_id)
        if thread is not None:
            for msg in thread.messages:
                if msg.run_id == run.id and msg.status == "in_progress":
                    msg.status = "incomplete"
                    msg.incomplete_at = now
                    msg.incomplete_details = {"reason": "run_cancelled"}
        run.cancelled_at = now
        run.required_action = None
        run.expires_at = None
        run.usage = self._usage(run)
        self.set_status(run, "cancelled")
        self.emit(run, "thread.run.cancelled", run.to_json())
        self.end_streams(run)

    def _usage(self, run: RunRec) -> JSON:
        return {
            "prompt_tokens": run.prompt_tokens,
            "completion_tokens": run.completion_tokens,
            "total_tokens": run.prompt_tokens + run.completion_tokens,
        }

    def _model_input(
        self, run: RunRec, thread: ThreadRec, agent_name: str | None
    ) -> _model.ModelInput:
        messages = tuple(
            (m.role, m.text())
            for m in thread.messages
            if not (m.run_id == run.id and m.role == "assistant")
        )
        return _model.ModelInput(
            instructions=run.instructions,
            messages=messages,
            tools=tuple(run.tools),
            tool_choice=run.tool_choice,
            parallel_tool_calls=run.parallel_tool_calls,
            tool_outputs=tuple(run.answered_calls),
            agent_name=agent_name,
        )

    async def _drive(self, run: RunRec) -> None:
        timing = self._timing(run)
        self.emit(run, "thread.run.created", run.to_json())
        self.emit(run, "thread.run.queued", run.to_json())
        thread = self.store.threads.get(run.thread_id)
        if thread is None:  # pragma: no cover - threads with active runs never expire
            return
        last_user = next((m.text() for m in reversed(thread.messages) if m.role == "user"), "")
        directives = _model.parse_directives(last_user)
        agent = self.store.agents.get(run.assistant_id)
        agent_name = agent.name if agent is not None else None
        await asyncio.sleep(timing.queue_delay)
        while True:
            self.set_status(run, "in_progress")
            if run.started_at is None:
                run.started_at = self.store.now()
                run.started_at_ms = _ms()
            self.emit(run, "thread.run.in_progress", run.to_json())
            duration = directives.sleep if directives.sleep is not None else timing.run_duration
            await asyncio.sleep(duration)
            inp = self._model_input(run, thread, agent_name)
            run.prompt_tokens += _model.prompt_tokens(inp)
            fault = run.forced_fault
            if directives.fail or (fault or "").startswith("run_failed"):
                code = directives.fail or (fault or "").partition(":")[2] or "server_error"
                self._fail(run, code)
                return
            if directives.expire or fault == "run_expired":
                self._expire(run)
                return
            if run.max_prompt_tokens is not None and run.prompt_tokens > run.max_prompt_tokens:
                self._incomplete(run, "max_prompt_tokens")
                return
            reply = _model.respond(inp)
            if reply.tool_calls:
                if not await self._tool_turn(run, reply):
                    return
                await asyncio.sleep(timing.queue_delay)
                continue
            await self._message_turn(run, thread, reply.text, directives, timing)
            return

    def _fail(self, run: RunRec, code: str) -> None:
        now = self.store.now()
        run.last_error = dict(_RATE_LIMIT_ERROR if code == "rate_limit_exceeded" else _SERVER_ERROR)
        run.failed_at = now
        run.expires_at = None
        run.required_action = None
        run.usage = self._usage(run)
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "failed"
                step.failed_at = now
                step.last_error = run.last_error
        self.set_status(run, "failed")
        self.emit(run, "thread.run.failed", run.to_json())
        self.end_streams(run)

    def _expire(self, run: RunRec) -> None:
        now = self.store.now()
        run.required_action = None
        run.usage = self._usage(run)
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "expired"
                step.expires_at = now
                self.emit(run, "thread.run.step.expired", step.to_json())
        self.set_status(run, "expired")
        self.emit(run, "thread.run.expired", run.to_json())
        self.end_streams(run)

    def _incomplete(self, run: RunRec, reason: str) -> None:
        run.incomplete_details = {"reason": reason}
        run.completed_at = self.store.now()
        run.expires_at = None
        run.usage = self._usage(run)
        self.set_status(run, "incomplete")
        self.emit(run, "thread.run.incomplete", run.to_json())
        self.end_streams(run)

    async def _tool_turn(self, run: RunRec, reply: _model.Reply) -> bool:
        """Emit the tool-call step and wait in requires_action; False when the run ended."""
        now = self.store.now()
        calls: list[JSON] = [
            {
                "id": new_id("call"),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in reply.tool_calls
        ]
        step = StepRec(
            id=new_id("step"),
            type="tool_calls",
            assistant_id=run.assistant_id,
            thread_id=run.thread_id,
            run_id=run.id,
            created_at=now,
            expires_at=run.expires_at,
            step_details={"type": "tool_calls", "tool_calls": calls},
        )
        run.steps.append(step)
        self.emit(run, "thread.run.step.created", step.to_json())
        for index, call in enumerate(calls):
            fn = call["function"]
            first = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": "", "output": None},
            }
            rest = {"index": index, "type": "function", "function": {"arguments": fn["arguments"]}}
            for chunk in (first, rest):
                self.emit(
                    run,
                    "thread.run.step.delta",
                    {
                        "id": step.id,
                        "object": "thread.run.step.delta",
                        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [chunk]}},
                    },
                )
        run.completion_tokens += reply.completion_tokens
        run.pending_calls = calls
        run.required_action = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": calls},
        }
        loop = asyncio.get_running_loop()
        run.tool_outputs = loop.create_future()
        self.set_status(run, "requires_action")
        self.emit(run, "thread.run.requires_action", run.to_json())
        self.end_streams(run)
        deadline = (run.expires_at or (self.store.now() + RUN_LIFETIME)) - self.store.clock()
        try:
            await asyncio.wait_for(asyncio.shield(run.tool_outputs), timeout=max(0.0, deadline))
        except asyncio.TimeoutError:
            run.tool_outputs = None
            self._expire(run)
            return False
        run.tool_outputs = None
        return True

    async def _message_turn(
        self,
        run: RunRec,
        thread: ThreadRec,
        text: str,
        directives: _model.Directives,
        timing: Timing,
    ) -> None:
        incomplete_reason: str | None = None
        message_reason: str | None = None
        if directives.content_filter:
            words = _model.split_deltas(text)
            text = "".join(words[: max(1, len(words) // 3)])
            incomplete_reason = message_reason = "content_filter"
        elif directives.incomplete:
            words = _model.split_deltas(text)
            text = "".join(words[: max(1, len(words) // 2)])
            incomplete_reason, message_reason = "max_completion_tokens", "max_tokens"
        elif run.max_completion_tokens is not None:
            limit = run.max_completion_tokens
            if run.completion_tokens + _model.count_tokens(text) > limit:
                kept = ""
                for word in _model.split_deltas(text):
                    if run.completion_tokens + _model.count_tokens(kept + word) > limit:
                        break
                    kept += word
                text = kept
                incomplete_reason, message_reason = "max_completion_tokens", "max_tokens"
        now = self.store.now()
        msg = self.store.add_message(
            thread,
            "assistant",
            [{"type": "text", "text": {"value": "", "annotations": []}}],
            status="in_progress",
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        step = StepRec(
            id=new_id("step"),
            type="message_creation",
            assistant_id=run.assistant_id,
            thread_id=run.thread_id,
            run_id=run.id,
            created_at=now,
            expires_at=run.expires_at,
            step_details={"type": "message_creation", "message_creation": {"message_id": msg.id}},
        )
        run.steps.append(step)
        self.emit(run, "thread.run.step.created", step.to_json())
        self.emit(run, "thread.run.step.in_progress", step.to_json())
        self.emit(run, "thread.message.created", msg.to_json())
        self.emit(run, "thread.message.in_progress", msg.to_json())
        await self._stream_text(run, msg, text, timing)
        completion = _model.count_tokens(text)
        run.completion_tokens += completion
        now = self.store.now()
        if message_reason is None:
            msg.status = "completed"
            msg.completed_at = now
            self.emit(run, "thread.message.completed", msg.to_json())
        else:
            msg.status = "incomplete"
            msg.incomplete_at = now
            msg.incomplete_details = {"reason": message_reason}
            self.emit(run, "thread.message.incomplete", msg.to_json())
        step.status = "completed"
        step.completed_at = now
        step.expires_at = None
        turn_prompt = run.prompt_tokens
        step.usage = {
            "prompt_tokens": turn_prompt,
            "completion_tokens": completion,
            "total_tokens": turn_prompt + completion,
        }
        self.emit(run, "thread.run.step.completed", step.to_json())
        if incomplete_reason is not None:
            self._incomplete(run, incomplete_reason)
            return
        run.completed_at = now
        run.expires_at = None
        run.usage = self._usage(run)
        self.set_status(run, "completed")
        self.emit(run, "thread.run.completed", run.to_json())
        self.end_streams(run)

    async def _stream_text(self, run: RunRec, msg: MessageRec, text: str, timing: Timing) -> None:
        block = msg.content[0]["text"]
        for i, delta in enumerate(_model.split_deltas(text)):
            if i and timing.delta_interval:
                await asyncio.sleep(timing.delta_interval)
            if run.first_delta_at_ms is None:
                run.first_delta_at_ms = _ms()
            block["value"] += delta
            self.emit(
                run,
                "thread.message.delta",
                {
                    "id": msg.id,
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 0, "type": "text", "text": {"value": delta}}]},
                },
            )
