"""Run lifecycle: one asyncio task per run drives it in real time and produces its SSE events.

A run progresses whether or not a client listens. Streaming handlers subscribe a queue to the
run before it emits anything they must see; each event is serialised once, at emit time, and
pushed to every subscribed queue. A `None` in a queue ends that stream (after `done`). Nothing
is buffered for runs without listeners, so finished runs hold no event data.

Why one module of ~800 lines: it is the classic run engine (the life of a run, its scripted
behaviours and every event it emits), whose parts share one run record and emit function.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from typing import Any

from . import _model
from ._settings import Timing
from ._store import TERMINAL, MessageRec, RunRec, StepRec, Store, ThreadRec, new_id
from ._util import Stats, sse_frame
from ._util import dumps as _util_dumps

__all__ = ["RunEngine"]

JSON = dict[str, Any]
DONE_FRAME = sse_frame("done", "[DONE]")
RUN_LIFETIME = 600

#: Our own fixed texts and names for the scripted agents (see docs/emulator.md).
_SOURCES = (
    ("https://example.org/rivers", "Rivers and the sea (emulated source)"),
    ("https://example.org/mountains", "Mountain weather (emulated source)"),
)
_CODE = 'import math\nvalues = [3, 4, 5]\nprint("sum:", sum(values))\nprint(math.sqrt(16))\n'
_CODE_LOGS = "sum: 12\n4.0\n"


#: A run nobody streams adds this many text deltas per wake (`Runs._stream_text`).
_QUIET_BATCH = 10


def _ms() -> float:
    return time.time() * 1000.0


def _usage(prompt: int, completion: int) -> JSON:
    """A run's or step's `usage`, with the `prompt_token_details` the service adds (L4)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_token_details": {"cached_tokens": 0},
    }


def _step_delta(step_id: str, call: JSON) -> JSON:
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
    }


def _marked(parts: list[tuple[str, JSON | None]]) -> tuple[str, list[JSON]]:
    """Join text parts; a part with an annotation is its marker text, indexed into the whole."""
    text = ""
    annotations: list[JSON] = []
    for part, annotation in parts:
        if annotation is not None:
            annotations.append(
                {
                    "type": annotation["type"],
                    "text": part,
                    "start_index": len(text),
                    "end_index": len(text) + len(part),
                    annotation["type"]: annotation["body"],
                }
            )
        text += part
    return text, annotations


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
            step.usage = _usage(run.prompt_tokens, completion)
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
        # The side events OpenAI's service sends on cancel (real-service.md L13).
        thread = self.store.threads.get(run.thread_id)
        if thread is not None:
            for msg in thread.messages:
                if msg.run_id == run.id and msg.status == "in_progress":
                    msg.status = "incomplete"
                    msg.incomplete_at = now
                    msg.incomplete_details = {"reason": "run_cancelled"}
                    self.emit(run, "thread.message.incomplete", msg.to_event_json())
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "cancelled"
                step.cancelled_at = now
                step.expires_at = None
                self.emit(run, "thread.run.step.cancelled", step.to_json())
        run.cancelled_at = now
        run.required_action = None
        run.expires_at = None
        run.usage = self._usage(run)
        self.set_status(run, "cancelled")
        self.emit(run, "thread.run.cancelled", run.to_json())
        self.end_streams(run)

    def _usage(self, run: RunRec) -> JSON:
        return _usage(run.prompt_tokens, run.completion_tokens)

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
        fault = run.forced_fault or ""
        script = directives.script or run.script
        midway_code = directives.fail_midway or "server_error"
        if fault.startswith("fail_after_text"):
            script = "fail_midway"
            midway_code = _model.failure_code(fault.partition(":")[2])
        await asyncio.sleep(timing.queue_delay)
        while True:
            self.set_status(run, "in_progress")
            # started_at is stamped again at each in_progress, after tool outputs too (L5)
            run.started_at = self.store.now()
            if run.started_at_ms is None:
                run.started_at_ms = _ms()
            self.emit(run, "thread.run.in_progress", run.to_json())
            duration = directives.sleep if directives.sleep is not None else timing.run_duration
            await asyncio.sleep(duration)
            inp = self._model_input(run, thread, agent_name)
            run.prompt_tokens += _model.prompt_tokens(inp)
            if directives.fail or fault.startswith("run_failed"):
                code = directives.fail or _model.failure_code(fault.partition(":")[2])
                self._fail(run, code)
                return
            if directives.expire or fault == "run_expired":
                self._expire(run)
                return
            if run.max_prompt_tokens is not None and run.prompt_tokens > run.max_prompt_tokens:
                self._incomplete(run, "max_prompt_tokens")
                return
            if script is not None:
                again = await self._scripted(run, thread, script, inp, midway_code, timing)
                if not again:
                    return
                await asyncio.sleep(timing.queue_delay)
                continue
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
        run.last_error = {"code": code, "message": _model.failure_message(code, run.model)}
        run.failed_at = now
        run.expires_at = None
        run.required_action = None
        run.usage = self._usage(run)
        thread = self.store.threads.get(run.thread_id)
        if thread is not None:
            for msg in thread.messages:
                if msg.run_id == run.id and msg.status == "in_progress":
                    msg.status = "incomplete"
                    msg.incomplete_at = now
                    msg.incomplete_details = {"reason": "run_failed"}
                    self.emit(run, "thread.message.incomplete", msg.to_event_json())
        for step in run.steps:
            if step.status == "in_progress":
                step.status = "failed"
                step.failed_at = now
                step.expires_at = None
                step.last_error = run.last_error
                self.emit(run, "thread.run.step.failed", step.to_json())
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

    def _complete(self, run: RunRec) -> None:
        run.completed_at = self.store.now()
        run.expires_at = None
        run.usage = self._usage(run)
        self.set_status(run, "completed")
        self.emit(run, "thread.run.completed", run.to_json())
        self.end_streams(run)

    # -- tool steps, streamed the service's way (real-service.md H4) ----------------------

    def _new_tool_step(self, run: RunRec) -> StepRec:
        """A tool_calls step announced by `created` and `in_progress` with no calls yet."""
        step = StepRec(
            id=new_id("step"),
            type="tool_calls",
            assistant_id=run.assistant_id,
            thread_id=run.thread_id,
            run_id=run.id,
            created_at=self.store.now(),
            expires_at=run.expires_at,
            step_details={"type": "tool_calls", "tool_calls": []},
        )
        run.steps.append(step)
        self.emit(run, "thread.run.step.created", step.to_json())
        self.emit(run, "thread.run.step.in_progress", step.to_json())
        return step

    async def _tool_turn(self, run: RunRec, reply: _model.Reply) -> bool:
        """Stream the function-call step and wait in requires_action; False when the run ended.

        `step.created` and `step.in_progress` carry `tool_calls: []`; each call arrives through
        `thread.run.step.delta`: a first delta with index, id, type and
        ``function{name, arguments: "", output: null}``, then the arguments in fragments of a
        few characters (cut inside escape sequences too).
        """
        calls: list[JSON] = [
            {
                "id": new_id("call"),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in reply.tool_calls
        ]
        step = self._new_tool_step(run)
        for index, call in enumerate(calls):
            fn = call["function"]
            first = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": "", "output": None},
            }
            self.emit(run, "thread.run.step.delta", _step_delta(step.id, first))
            for fragment in _model.split_fragments(fn["arguments"]):
                chunk = {"index": index, "type": "function", "function": {"arguments": fragment}}
                self.emit(run, "thread.run.step.delta", _step_delta(step.id, chunk))
        step.step_details = {"type": "tool_calls", "tool_calls": calls}
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

    async def _builtin_step(
        self, run: RunRec, call: JSON, deltas: list[JSON], timing: Timing
    ) -> None:
        """A tool step the service runs itself (code_interpreter, bing_grounding, ...).

        `deltas` are the per-call delta payloads (without `index`); the step then completes
        with the full `call` and its own usage.
        """
        step = self._new_tool_step(run)
        for i, delta in enumerate(deltas):
            if i and timing.delta_interval:
                await asyncio.sleep(timing.delta_interval)
            self.emit(run, "thread.run.step.delta", _step_delta(step.id, {"index": 0, **delta}))
        completion = _model.count_tokens(_util_dumps(call))
        run.completion_tokens += completion
        step.step_details = {"type": "tool_calls", "tool_calls": [call]}
        step.status = "completed"
        step.completed_at = self.store.now()
        step.expires_at = None
        step.usage = _usage(run.prompt_tokens, completion)
        self.emit(run, "thread.run.step.completed", step.to_json())

    # -- messages --------------------------------------------------------------------------

    def _open_message(
        self,
        run: RunRec,
        thread: ThreadRec,
        *,
        msg_id: str | None = None,
        created_at: int | None = None,
    ) -> tuple[MessageRec, StepRec]:
        """A message_creation step and its message; `created`/`in_progress` have `content: []`."""
        msg = self.store.add_message(
            thread,
            "assistant",
            [],
            status="in_progress",
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        if msg_id is not None:
            del thread.message_index[msg.id]
            msg.id = msg_id
            thread.message_index[msg.id] = msg
        if created_at is not None:
            msg.created_at = created_at
        step = StepRec(
            id=new_id("step"),
            type="message_creation",
            assistant_id=run.assistant_id,
            thread_id=run.thread_id,
            run_id=run.id,
            created_at=self.store.now(),
            expires_at=run.expires_at,
            step_details={"type": "message_creation", "message_creation": {"message_id": msg.id}},
        )
        run.steps.append(step)
        self.emit(run, "thread.run.step.created", step.to_json())
        self.emit(run, "thread.run.step.in_progress", step.to_json())
        self.emit(run, "thread.message.created", msg.to_event_json(content=[]))
        self.emit(run, "thread.message.in_progress", msg.to_event_json(content=[]))
        return msg, step

    def _close_message(
        self, run: RunRec, msg: MessageRec, step: StepRec, reason: str | None = None
    ) -> None:
        completion = _model.count_tokens(msg.text())
        run.completion_tokens += completion
        now = self.store.now()
        if reason is None:
            msg.status = "completed"
            msg.completed_at = now
            self.emit(run, "thread.message.completed", msg.to_event_json())
        else:
            msg.status = "incomplete"
            msg.incomplete_at = now
            msg.incomplete_details = {"reason": reason}
            self.emit(run, "thread.message.incomplete", msg.to_event_json())
        step.status = "completed"
        step.completed_at = now
        step.expires_at = None
        step.usage = _usage(run.prompt_tokens, completion)
        self.emit(run, "thread.run.step.completed", step.to_json())

    async def _text_message(
        self,
        run: RunRec,
        thread: ThreadRec,
        text: str,
        timing: Timing,
        annotations: tuple[JSON, ...] = (),
        *,
        msg_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        msg, step = self._open_message(run, thread, msg_id=msg_id, created_at=created_at)
        await self._stream_text(run, msg, text, timing, annotations)
        self._close_message(run, msg, step)

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
            words = _model.split_words(text)
            text = "".join(words[: max(1, len(words) // 3)])
            incomplete_reason = message_reason = "content_filter"
        elif directives.incomplete:
            words = _model.split_words(text)
            text = "".join(words[: max(1, len(words) // 2)])
            incomplete_reason, message_reason = "max_completion_tokens", "max_tokens"
        elif run.max_completion_tokens is not None:
            limit = run.max_completion_tokens
            if run.completion_tokens + _model.count_tokens(text) > limit:
                kept = ""
                for word in _model.split_words(text):
                    if run.completion_tokens + _model.count_tokens(kept + word) > limit:
                        break
                    kept += word
                text = kept
                incomplete_reason, message_reason = "max_completion_tokens", "max_tokens"
        msg, step = self._open_message(run, thread)
        await self._stream_text(run, msg, text, timing)
        self._close_message(run, msg, step, message_reason)
        if incomplete_reason is not None:
            self._incomplete(run, incomplete_reason)
            return
        self._complete(run)

    async def _stream_text(
        self,
        run: RunRec,
        msg: MessageRec,
        text: str,
        timing: Timing,
        annotations: tuple[JSON, ...] = (),
    ) -> None:
        """Stream a new text block of `msg` in sub-word deltas (real-service.md L3).

        The first delta opens the block (its `index`) and is the only one with
        `"annotations": []`; each annotation follows, as its own delta carrying the
        annotation's `index`, once the text it marks has been sent.
        """
        index = len(msg.content)
        block: JSON = {"value": "", "annotations": []}
        msg.content.append({"type": "text", "text": block})
        pending = list(annotations)
        deltas = _model.split_deltas(text) or [""]
        free = 0
        for i, delta in enumerate(deltas):
            if i and timing.delta_interval:
                if free:
                    free -= 1
                elif run.listeners:
                    await asyncio.sleep(timing.delta_interval)
                else:
                    # Nobody streams this run (it is polled): wake once per batch of deltas
                    # instead of once per delta. A poll sees the text at most a batch late,
                    # never early, and the run ends when it would have.
                    k = min(_QUIET_BATCH, len(deltas) - i)
                    await asyncio.sleep(k * timing.delta_interval)
                    free = k - 1
            if run.first_delta_at_ms is None:
                run.first_delta_at_ms = _ms()
            block["value"] += delta
            part: JSON = {"value": delta}
            if i == 0:
                part["annotations"] = []
            self._message_delta(run, msg, {"index": index, "type": "text", "text": part})
            while pending and pending[0]["end_index"] <= len(block["value"]):
                annotation = pending.pop(0)
                k = len(block["annotations"])
                block["annotations"].append(annotation)
                self._message_delta(
                    run,
                    msg,
                    {
                        "index": index,
                        "type": "text",
                        "text": {"annotations": [{"index": k, **annotation}]},
                    },
                )

    def _message_delta(self, run: RunRec, msg: MessageRec, part: JSON) -> None:
        self.emit(
            run,
            "thread.message.delta",
            {"id": msg.id, "object": "thread.message.delta", "delta": {"content": [part]}},
        )

    def _image_block(self, run: RunRec, msg: MessageRec, file_id: str) -> None:
        index = len(msg.content)
        msg.content.append({"type": "image_file", "image_file": {"file_id": file_id}})
        self._message_delta(
            run, msg, {"index": index, "type": "image_file", "image_file": {"file_id": file_id}}
        )

    # -- scripted agents (docs/emulator.md "Scripted agents") ---------------------------

    async def _scripted(
        self,
        run: RunRec,
        thread: ThreadRec,
        script: str,
        inp: _model.ModelInput,
        midway_code: str,
        timing: Timing,
    ) -> bool:
        """Play one turn of a script; True when the run waits for tool outputs and goes on."""
        prompt = _model.strip_directives(
            next((t for r, t in reversed(inp.messages) if r == "user"), "")
        )
        topic = " ".join(prompt.split()[:8]).rstrip("?.!,;:") or "the question"
        if script == "web_search":
            await self._script_web_search(run, thread, topic, timing)
        elif script == "code_then_text":
            await self._script_code(run, thread, timing)
        elif script == "connected_agent":
            await self._script_connected(run, thread, topic, timing)
        elif script == "file_search":
            await self._script_file_search(run, thread, timing)
        elif script == "two_messages":
            await self._script_two_messages(run, thread, timing)
        elif script == "text_then_function":
            if run.script_phase == 0:
                run.script_phase = 1
                await self._text_message(run, thread, "Let me look that up first.", timing)
                return await self._tool_turn(run, _script_call(inp, prompt))
            text = _model.respond(inp).text
            await self._text_message(run, thread, text, timing)
        else:  # fail_midway
            msg, _step = self._open_message(run, thread)
            text = "I started to answer, but the model stopped half-way through this sentence"
            await self._stream_text(run, msg, text, timing)
            self._fail(run, midway_code)
            return False
        self._complete(run)
        return False

    async def _script_web_search(
        self, run: RunRec, thread: ThreadRec, topic: str, timing: Timing
    ) -> None:
        query = urllib.parse.quote_plus(topic)
        call = {
            "id": new_id("call"),
            "type": "bing_grounding",
            "bing_grounding": {
                "requesturl": f"https://api.bing.microsoft.com/v7.0/search?q={query}",
                "response_metadata": "{'market': 'en-US', 'num_docs_retrieved': 5, "
                "'num_docs_actually_used': 2}",
            },
        }
        first = {
            "id": call["id"],
            "type": "bing_grounding",
            "bing_grounding": call["bing_grounding"],
        }
        await self._builtin_step(run, call, [first], timing)
        (url0, title0), (url1, title1) = _SOURCES
        text, annotations = _marked(
            [
                (f"Here is what the web says about {topic}. Rivers carry water to the sea", None),
                (
                    "【3:0†source】",
                    {"type": "url_citation", "body": {"url": url0, "title": title0}},
                ),
                (", and mountains shape the weather around them", None),
                (
                    "【3:1†source】",
                    {"type": "url_citation", "body": {"url": url1, "title": title1}},
                ),
                (".", None),
            ]
        )
        await self._text_message(run, thread, text, timing, tuple(annotations))

    async def _script_code(self, run: RunRec, thread: ThreadRec, timing: Timing) -> None:
        await self._text_message(run, thread, "Let me run some code to work that out.", timing)
        image_id = new_id("assistant")
        call_id = new_id("call")
        outputs: list[JSON] = [
            {"type": "logs", "logs": _CODE_LOGS},
            {"type": "image", "image": {"file_id": image_id}},
        ]
        deltas: list[JSON] = [
            {
                "id": call_id,
                "type": "code_interpreter",
                "code_interpreter": {"input": "", "outputs": []},
            }
        ]
        deltas += [
            {"type": "code_interpreter", "code_interpreter": {"input": fragment}}
            for fragment in _model.split_fragments(_CODE)
        ]
        deltas.append(
            {
                "type": "code_interpreter",
                "code_interpreter": {
                    "outputs": [{"index": i, **out} for i, out in enumerate(outputs)]
                },
            }
        )
        call = {
            "id": call_id,
            "type": "code_interpreter",
            "code_interpreter": {"input": _CODE, "outputs": outputs},
        }
        await self._builtin_step(run, call, deltas, timing)
        link = "sandbox:/mnt/data/chart.png"
        text, annotations = _marked(
            [
                (
                    "The sum is 12 and the square root of 16 is 4.0. "
                    "The chart is saved as [chart.png](",
                    None,
                ),
                (link, {"type": "file_path", "body": {"file_id": new_id("assistant")}}),
                (").", None),
            ]
        )
        msg, step = self._open_message(run, thread)
        self._image_block(run, msg, image_id)
        await self._stream_text(run, msg, text, timing, tuple(annotations))
        self._close_message(run, msg, step)

    async def _script_connected(
        self, run: RunRec, thread: ThreadRec, topic: str, timing: Timing
    ) -> None:
        arguments = _util_dumps({"input": topic})
        output = f"The helper agent looked into {topic} and found nothing unusual."
        call_id = new_id("call")
        body = {
            "name": "helper_agent",
            "arguments": arguments,
            "output": output,
            "run_id": new_id("run"),
            "thread_id": new_id("thread"),
            "assistant_id": "asst_helper01",
        }
        deltas: list[JSON] = [
            {
                "id": call_id,
                "type": "connected_agent",
                "connected_agent": {"name": "helper_agent", "arguments": "", "output": None},
            }
        ]
        deltas += [
            {"type": "connected_agent", "connected_agent": {"arguments": fragment}}
            for fragment in _model.split_fragments(arguments)
        ]
        call = {"id": call_id, "type": "connected_agent", "connected_agent": body}
        await self._builtin_step(run, call, deltas, timing)
        await self._text_message(run, thread, f"The connected agent answered: {output}", timing)

    async def _script_file_search(self, run: RunRec, thread: ThreadRec, timing: Timing) -> None:
        file_id = "assistant-handbook01"
        call_id = new_id("call")
        body = {
            "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0},
            "results": [
                {"file_id": file_id, "file_name": "handbook.md", "score": 0.82},
                {"file_id": "assistant-faq01", "file_name": "faq.md", "score": 0.61},
            ],
        }
        first = {"id": call_id, "type": "file_search", "file_search": body}
        call = {"id": call_id, "type": "file_search", "file_search": body}
        await self._builtin_step(run, call, [first], timing)
        text, annotations = _marked(
            [
                ("The handbook says that leave requests need two weeks' notice", None),
                (
                    "【4:0†handbook.md】",
                    {"type": "file_citation", "body": {"file_id": file_id}},
                ),
                (".", None),
            ]
        )
        await self._text_message(run, thread, text, timing, tuple(annotations))

    async def _script_two_messages(self, run: RunRec, thread: ThreadRec, timing: Timing) -> None:
        # Two messages in the same second whose ids sort the other way round from their
        # creation order, so only the service's own list order (or the stream) is right.
        low, high = sorted((new_id("msg"), new_id("msg")))
        await self._text_message(run, thread, "Part one.", timing, msg_id=high)
        first = thread.messages[-1]
        await self._text_message(
            run, thread, "Part two.", timing, msg_id=low, created_at=first.created_at
        )


def _script_call(inp: _model.ModelInput, prompt: str) -> _model.Reply:
    """The function call of the text_then_function script: the run's first function tool."""
    for tool in inp.tools:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            args = _model.tool_arguments_for(fn.get("parameters"), prompt)
            return _model.Reply(tool_calls=(_model.ToolCallPlan(fn["name"], _util_dumps(args)),))
    return _model.Reply(tool_calls=(_model.ToolCallPlan("lookup", _util_dumps({"query": prompt})),))
