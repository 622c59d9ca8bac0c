"""Foundry Agents v2 emulation, state and engine: agents by name and version, conversations,
responses, their counters, and the asyncio task that runs each response.

A response runs as one task: ``queued`` (background only, for ``queue_delay``),
``in_progress`` (``run_duration``, or ``[emulator:sleep=S]``), then the scripted model's reply
(`_model.respond`, reused read-only) streams in sub-word deltas every ``delta_interval``, and
the response ends ``completed``, ``failed``, ``incomplete`` or ``cancelled``. Every stream
event is kept on the response (`ResponseRec.events`) for live and resumed streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from typing import Any

from . import _model
from ._settings import EmulatorSettings, Timing
from ._util import Stats
from ._v2_http import FaultSource, item_text, json_copy
from ._v2_store import AgentVersionRec, ConversationRec, ResponseRec, new_v2_id, now

__all__ = ["V2State"]

JSON = dict[str, Any]

_CITE_RE = re.compile(r"\[emulator:cite=([^\]]+)\]")
_STREAM_ERROR_RE = re.compile(r"\[emulator:stream_error\]")


def _sub_word_deltas(text: str) -> list[str]:
    """Deltas smaller than words, as a tokenizer's are: words of more than 6 characters are
    split in two, so a client that assumed word boundaries would be caught."""
    out: list[str] = []
    for word in _model.split_deltas(text):
        if len(word.strip()) > 6:
            cut = len(word) - len(word.strip()) + (len(word.strip()) + 1) // 2
            out.extend((word[:cut], word[cut:]))
        else:
            out.append(word)
    return out


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class V2State:
    """Everything the v2 emulation knows, and the response engine. `V2Service` adds routes."""

    def __init__(self, settings: EmulatorSettings, stats: Stats, faults: FaultSource) -> None:
        self.settings = settings
        self.stats = stats
        self.faults = faults
        self.agents: dict[str, dict[str, AgentVersionRec]] = {}
        self.agent_created: dict[str, int] = {}
        self.conversations: dict[str, ConversationRec] = {}
        self.responses: dict[str, ResponseRec] = {}
        self.responses_created = 0
        self.responses_by_status: Counter[str] = Counter()
        self.peak_active_responses = 0
        self._load_agents()

    # -- lifecycle ------------------------------------------------------------------------

    def _load_agents(self) -> None:
        created = now()
        for spec in self.settings.all_v2_agents():
            rec = AgentVersionRec.from_spec(spec, created)
            self.agents.setdefault(spec.name, {})[spec.version] = rec
            self.agent_created.setdefault(spec.name, created)

    def cancel_task(self, rec: ResponseRec) -> None:
        """Stop the task running `rec`, recording the cancel here: a task cancelled before its
        first step never runs its own handler (asyncio throws into a coroutine that has not
        started), so without this the response would stay ``in_progress`` for ever."""
        task = rec.task
        if task is None or task.done():
            return
        if rec.active:
            self._set_status(rec, "cancelled")
            rec.completed_at = None
        task.cancel()
        task.add_done_callback(lambda _task: rec.finish())

    def _abandon_all(self) -> list[asyncio.Task[None]]:
        tasks = []
        for rec in self.responses.values():
            if rec.task is not None and not rec.task.done():
                rec.task.cancel()
                tasks.append(rec.task)
        return tasks

    def reset(self) -> None:
        self._abandon_all()
        self.agents.clear()
        self.agent_created.clear()
        self.conversations.clear()
        self.responses.clear()
        self.responses_created = 0
        self.responses_by_status.clear()
        self.peak_active_responses = 0
        self._load_agents()

    async def shutdown(self) -> None:
        tasks = self._abandon_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats_json(self) -> JSON:
        active = sum(
            n for s, n in self.responses_by_status.items() if s in ("queued", "in_progress")
        )
        return {
            "responses_created": self.responses_created,
            "responses_by_status": dict(sorted(self.responses_by_status.items())),
            "active_responses": active,
            "peak_active_responses": self.peak_active_responses,
        }

    def responses_json(self) -> list[JSON]:
        """A summary of every stored response, oldest first: id, status, agent (name and
        version), conversation, background, metadata (for tests: which items ran)."""
        return [
            {
                "id": rec.id,
                "status": rec.status,
                "agent": {"name": rec.agent.name, "version": rec.agent.version},
                "conversation_id": rec.conversation_id,
                "previous_response_id": rec.previous_response_id,
                "background": rec.background,
                "stream": rec.stream,
                "metadata": dict(rec.metadata),
            }
            for rec in self.responses.values()
        ]

    def _set_status(self, rec: ResponseRec, status: str) -> None:
        old = rec.status
        if old == status:
            return
        if self.responses.get(rec.id) is not rec:  # deleted or reset: no longer counted
            rec.status = status
            return
        self.responses_by_status[old] -= 1
        if self.responses_by_status[old] <= 0:
            del self.responses_by_status[old]
        self.responses_by_status[status] += 1
        rec.status = status

    # -- the engine -----------------------------------------------------------------------

    def _timing(self, rec: ResponseRec) -> Timing:
        return rec.agent.timing or self.settings.timing

    async def _run(
        self, rec: ResponseRec, history: list[JSON], outputs: list[tuple[str, str, str]]
    ) -> None:
        try:
            await self._work(rec, history, outputs)
        except asyncio.CancelledError:
            if rec.active:
                self._set_status(rec, "cancelled")
                rec.completed_at = None
        finally:
            rec.finish()
            if not rec.store and self.responses.get(rec.id) is rec:
                del self.responses[rec.id]  # store: false keeps nothing once it is done

    async def _work(
        self, rec: ResponseRec, history: list[JSON], outputs: list[tuple[str, str, str]]
    ) -> None:
        timing = self._timing(rec)
        agent = rec.agent
        messages: list[tuple[str, str]] = []
        for item in [*history, *rec.input_items]:
            if item.get("type") == "message":
                role = "user" if item.get("role") == "user" else str(item.get("role"))
                messages.append((role, item_text(item)))
        last_user = next((t for r, t in reversed(messages) if r == "user"), "")
        directives = _model.parse_directives(last_user)
        if rec.background:
            await asyncio.sleep(timing.queue_delay)
            self._set_status(rec, "in_progress")
            rec.emit("response.in_progress", response=rec.to_json())
        await asyncio.sleep(
            directives.sleep if directives.sleep is not None else timing.run_duration
        )
        model_tools = tuple(
            {"type": "function", "function": t} for t in agent.tools if t.get("type") == "function"
        )
        inp = _model.ModelInput(
            instructions=agent.instructions,
            messages=tuple(messages),
            tools=model_tools,
            tool_outputs=tuple(outputs),
            agent_name=agent.name,
        )
        fault = rec.forced_fault or ""
        fail_after_text = None
        if fault.startswith("fail_after_text"):
            fail_after_text = fault.partition(":")[2] or "server_error"
        if directives.fail or fault.startswith("run_failed"):
            code = directives.fail or fault.partition(":")[2] or "server_error"
            self._fail(rec, code)
            return
        if _STREAM_ERROR_RE.search(last_user):
            rec.emit(
                "error",
                code="server_error",
                message="The server had an error while processing your request.",
                param=None,
            )
            self._set_status(rec, "failed")
            rec.error = {
                "code": "server_error",
                "message": "The server had an error while processing your request.",
            }
            return
        reply = _model.respond(inp)
        input_tokens = _model.prompt_tokens(inp)
        if fail_after_text is not None:
            # Part of a text reply, then the response fails (the "fail_after_text" fault).
            await self._message(
                rec,
                reply.text or "Working on it.",
                directives,
                None,
                timing,
                fail_code=fail_after_text,
            )
            return
        if reply.tool_calls:
            await self._function_calls(rec, reply, timing)
        else:
            cite = _CITE_RE.search(last_user)
            await self._message(
                rec, reply.text, directives, cite.group(1) if cite else None, timing
            )
        output_tokens = reply.completion_tokens
        if rec.status == "incomplete":
            output_tokens = sum(_model.count_tokens(item_text(i)) for i in rec.output)
        rec.usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if rec.status != "incomplete":
            self._set_status(rec, "completed")
            rec.completed_at = now()
        if rec.conversation_id is not None and rec.store:
            conv = self.conversations.get(rec.conversation_id)
            if conv is not None:
                conv.items.extend(rec.input_items)
                conv.items.extend(rec.output)
        terminal = "response.completed" if rec.status == "completed" else "response.incomplete"
        rec.emit(terminal, response=rec.to_json())

    def _fail(self, rec: ResponseRec, code: str) -> None:
        message = (
            "Rate limit is exceeded. Try again later."
            if code == "rate_limit_exceeded"
            else "The server had an error while processing your request."
        )
        rec.error = {"code": code, "message": message}
        self._set_status(rec, "failed")
        rec.emit("response.failed", response=rec.to_json())

    async def _function_calls(self, rec: ResponseRec, reply: _model.Reply, timing: Timing) -> None:
        for call in reply.tool_calls:
            index = len(rec.output)
            item: JSON = {
                "type": "function_call",
                "id": new_v2_id("fc"),
                "status": "in_progress",
                "arguments": "",
                "call_id": new_v2_id("call")[:29],
                "name": call.name,
            }
            rec.output.append(item)
            rec.emit("response.output_item.added", output_index=index, item=dict(item))
            for piece in _chunks(call.arguments, 8):
                await asyncio.sleep(timing.delta_interval)
                rec.emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            item["arguments"] = call.arguments
            item["status"] = "completed"
            rec.emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=call.arguments,
            )
            rec.emit("response.output_item.done", output_index=index, item=dict(item))

    async def _message(
        self,
        rec: ResponseRec,
        text: str,
        directives: _model.Directives,
        cite: str | None,
        timing: Timing,
        fail_code: str | None = None,
    ) -> None:
        index = len(rec.output)
        item: JSON = {
            "type": "message",
            "id": new_v2_id("msg"),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        rec.output.append(item)
        rec.emit("response.output_item.added", output_index=index, item=json_copy(item))
        part: JSON = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        item["content"].append(part)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        rec.emit("response.content_part.added", **where, part=json_copy(part))
        deltas = _sub_word_deltas(text)
        reason = None
        if directives.content_filter:
            reason = "content_filter"
            deltas = deltas[: len(deltas) // 2]
        elif fail_code is not None:
            deltas = deltas[: max(1, len(deltas) // 2)]
        elif directives.incomplete or (
            rec.max_output_tokens is not None and _model.count_tokens(text) > rec.max_output_tokens
        ):
            reason = "max_output_tokens"
            deltas = deltas[: len(deltas) // 2]
        for delta in deltas:
            await asyncio.sleep(timing.delta_interval)
            part["text"] += delta
            rec.emit("response.output_text.delta", **where, delta=delta, logprobs=[])
        if fail_code is not None:
            item["status"] = "incomplete"
            self._fail(rec, fail_code)
            return
        if cite is not None and reason is None:
            annotation = {
                "type": "url_citation",
                "url": cite.strip(),
                "title": "Source",
                "start_index": 0,
                "end_index": len(part["text"]),
            }
            part["annotations"].append(annotation)
            rec.emit(
                "response.output_text.annotation.added",
                **where,
                annotation_index=0,
                annotation=dict(annotation),
            )
        rec.emit("response.output_text.done", **where, text=part["text"], logprobs=[])
        rec.emit("response.content_part.done", **where, part=json_copy(part))
        item["status"] = "incomplete" if reason else "completed"
        rec.emit("response.output_item.done", output_index=index, item=json_copy(item))
        if reason is not None:
            rec.incomplete_details = {"reason": reason}
            self._set_status(rec, "incomplete")
