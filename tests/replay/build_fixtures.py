# ruff: noqa: E501  (scenario data: long literal texts read better unwrapped)
"""Writes the replay fixtures in `fixtures/` (run it after changing a scenario here).

The shapes follow the real service's recorded traffic (Azure/azure-sdk-assets,
python/sdk/ai/azure-ai-agents/tests/recordings/test_agents_client.pyTestAgentClienttest_
{create_stream,bing_grounding_tool,code_interpreter_tool_streaming,connected_agent_tool,
list_messages}.json, api-version 2025-05-15-preview), with our own ids and texts:

* run objects carry every key the service sends (`tool_resources`, `truncation_strategy`,
  `usage` with `prompt_token_details`, `expires_at` = created + 1800, ...);
* stream message objects carry `status`, `completed_at`, `incomplete_at`,
  `incomplete_details`; `thread.message.created`/`in_progress` have `content: []`;
* message objects outside a stream (lists) have none of those four keys;
* text arrives in sub-word deltas; only the first delta of a part has `annotations: []`; a
  later delta carries the annotation with its own `index`;
* tool steps: `created` and `in_progress` with `tool_calls: []`, then deltas (the first with
  `id`/`type`, function ones with `arguments: ""` and `output: null`, arguments in fragments),
  then `completed` with the whole calls; run steps have no `metadata` key;
* a stream ends with `event: done` / `data: [DONE]`, also after `requires_action`.

Each fixture is a scenario: `phases[0]` answers the create (streamed: `events`; polled: the
`run` then `messages`), `phases[1]` (if any) answers `submit_tool_outputs`. `messages` is the
run's message list in the service's own order (`order=asc`), as listed after that phase.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent / "fixtures"
AGENT = "asst_rp0Qm3nVx8LcT2aHkW5yJd1E"
T0 = 1764400000


def run_obj(run_id: str, thread_id: str, status: str, **over: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": run_id,
        "object": "thread.run",
        "created_at": T0,
        "assistant_id": AGENT,
        "thread_id": thread_id,
        "status": status,
        "started_at": None if status == "queued" else T0 + 1,
        "expires_at": None if status in ("completed", "failed") else T0 + 1800,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "required_action": None,
        "last_error": None,
        "model": "gpt-4o",
        "instructions": "You are a helpful agent.",
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "max_completion_tokens": None,
        "max_prompt_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "incomplete_details": None,
        "usage": None,
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    if status == "completed":
        run["completed_at"] = T0 + 9
        run["usage"] = usage(812, 64)
    run.update(over)
    return run


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_token_details": {"cached_tokens": 0},
    }


def step_obj(step_id: str, run: dict[str, Any], kind: str, status: str, details: Any) -> Any:
    # No `metadata` key: the service's run steps have none.
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": T0 + 2,
        "run_id": run["id"],
        "assistant_id": AGENT,
        "thread_id": run["thread_id"],
        "type": kind,
        "status": status,
        "cancelled_at": None,
        "completed_at": T0 + 3 if status == "completed" else None,
        "expires_at": T0 + 1800 if status != "completed" else None,
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "usage": usage(400, 20) if status == "completed" else None,
    }


def stream_msg(msg_id: str, run: dict[str, Any], status: str, content: list[Any]) -> Any:
    return {
        "id": msg_id,
        "object": "thread.message",
        "created_at": T0 + 2,
        "assistant_id": AGENT,
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "status": status,
        "incomplete_details": None,
        "incomplete_at": None,
        "completed_at": T0 + 3 if status == "completed" else None,
        "role": "assistant",
        "content": content,
        "attachments": [],
        "metadata": {},
    }


def listed_msg(msg_id: str, run: dict[str, Any], content: list[Any], created: int) -> Any:
    # Outside a stream: no status, completed_at, incomplete_at, incomplete_details.
    return {
        "id": msg_id,
        "object": "thread.message",
        "created_at": created,
        "assistant_id": AGENT,
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "role": "assistant",
        "content": content,
        "attachments": [],
        "metadata": {},
    }


def text_block(value: str, annotations: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": annotations or []}}


def fragments(text: str, size: int = 4) -> list[str]:
    """Sub-word pieces, like the service's tokens."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class Builder:
    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        self.events: list[list[Any]] = []
        self.messages: list[Any] = []
        self.steps = 0

    def ev(self, name: str, data: Any) -> None:
        self.events.append([name, data])

    def run_events(self, *statuses: str, **over: Any) -> None:
        for status in statuses:
            name = "thread.run.created" if status == "created" else f"thread.run.{status}"
            st = "queued" if status == "created" else status
            self.ev(name, run_obj(self.run["id"], self.run["thread_id"], st, **over))

    def message(
        self,
        msg_id: str,
        text: str,
        annotations: list[tuple[int, Any]] | None = None,
        image_file: str | None = None,
        created: int = T0 + 2,
    ) -> None:
        """A message_creation step with its message, streamed in sub-word deltas."""
        self.steps += 1
        step_id = f"step_{msg_id[4:]}"
        details = {"type": "message_creation", "message_creation": {"message_id": msg_id}}
        self.ev(
            "thread.run.step.created",
            step_obj(step_id, self.run, "message_creation", "in_progress", details),
        )
        self.ev(
            "thread.run.step.in_progress",
            step_obj(step_id, self.run, "message_creation", "in_progress", details),
        )
        self.ev("thread.message.created", stream_msg(msg_id, self.run, "in_progress", []))
        self.ev("thread.message.in_progress", stream_msg(msg_id, self.run, "in_progress", []))
        pending = dict(annotations or [])
        sent = 0
        for i, piece in enumerate(fragments(text)):
            value: dict[str, Any] = {"value": piece}
            if i == 0:
                value["annotations"] = []
            item = {"index": 0, "type": "text", "text": value}
            self.ev(
                "thread.message.delta",
                {"id": msg_id, "object": "thread.message.delta", "delta": {"content": [item]}},
            )
            sent += len(piece)
            for at in [a for a in pending if a <= sent]:
                ann = dict(pending.pop(at))
                self.ev(
                    "thread.message.delta",
                    {
                        "id": msg_id,
                        "object": "thread.message.delta",
                        "delta": {
                            "content": [
                                {"index": 0, "type": "text", "text": {"annotations": [ann]}}
                            ]
                        },
                    },
                )
        final_anns = [dict(a) for _, a in (annotations or [])]
        for a in final_anns:
            a.pop("index", None)
        content = [text_block(text, final_anns)]
        if image_file:
            image = {"type": "image_file", "image_file": {"file_id": image_file}}
            self.ev(
                "thread.message.delta",
                {
                    "id": msg_id,
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 1, **image}]},
                },
            )
            content.append(image)
        self.ev(
            "thread.message.completed",
            stream_msg(msg_id, self.run, "completed", copy.deepcopy(content)),
        )
        done = step_obj(step_id, self.run, "message_creation", "completed", details)
        self.ev("thread.run.step.completed", done)
        self.messages.append(listed_msg(msg_id, self.run, copy.deepcopy(content), created))

    def tool_step(
        self,
        step_id: str,
        first: dict[str, Any],
        pieces: list[dict[str, Any]],
        final: dict[str, Any],
    ) -> None:
        """A tool_calls step the Azure way: empty tool_calls until the deltas."""
        empty = {"type": "tool_calls", "tool_calls": []}
        self.ev(
            "thread.run.step.created",
            step_obj(step_id, self.run, "tool_calls", "in_progress", empty),
        )
        self.ev(
            "thread.run.step.in_progress",
            step_obj(step_id, self.run, "tool_calls", "in_progress", empty),
        )
        for item in [first, *pieces]:
            self.ev(
                "thread.run.step.delta",
                {
                    "id": step_id,
                    "object": "thread.run.step.delta",
                    "delta": {"step_details": {"type": "tool_calls", "tool_calls": [item]}},
                },
            )
        self.ev(
            "thread.run.step.completed",
            step_obj(
                step_id,
                self.run,
                "tool_calls",
                "completed",
                {"type": "tool_calls", "tool_calls": [final]},
            ),
        )

    def done(self) -> None:
        self.ev("done", "[DONE]")


def thread_created(thread_id: str) -> list[Any]:
    return [
        "thread.created",
        {
            "id": thread_id,
            "object": "thread",
            "created_at": T0,
            "metadata": {},
            "tool_resources": {},
        },
    ]


def write(name: str, phases: list[dict[str, Any]], doc: str) -> None:
    HERE.mkdir(exist_ok=True)
    data = {"description": doc, "agent_id": AGENT, "phases": phases}
    (HERE / f"{name}.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def phase(b: Builder, final: dict[str, Any]) -> dict[str, Any]:
    return {"run": final, "events": b.events, "messages": b.messages}


def bing() -> None:
    run = run_obj("run_rpBing0000000000000000001", "thread_rpBing000000000000000001", "in_progress")
    run["tools"] = [
        {
            "type": "bing_grounding",
            "bing_grounding": {"search_configurations": [{"connection_id": "conn-1"}]},
        }
    ]
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    call = "call_rpBing000000000000000001"
    url = "https://api.bing.microsoft.com/v7.0/search?q=tallest+tower+in+Lisbon"
    b.tool_step(
        "step_rpBingTool00000000000001",
        {"index": 0, "id": call, "type": "bing_grounding", "bing_grounding": {}},
        [
            {
                "index": 0,
                "type": "bing_grounding",
                "bing_grounding": {
                    "requesturl": url,
                    "response_metadata": "{'market': 'en-US', 'num_docs_retrieved': 5}",
                },
            }
        ],
        {
            "id": call,
            "type": "bing_grounding",
            "bing_grounding": {
                "requesturl": url,
                "response_metadata": "{'market': 'en-US', 'num_docs_retrieved': 5}",
            },
        },
    )
    text = "The tallest tower in Lisbon is the Vasco da Gama Tower【3:0†source】, at 145 metres【3:1†source】."
    m1 = text.index("【3:0†source】")
    m2 = text.index("【3:1†source】")
    L = len("【3:0†source】")
    anns = [
        (
            m1 + L,
            {
                "index": 0,
                "type": "url_citation",
                "text": "【3:0†source】",
                "start_index": m1,
                "end_index": m1 + L,
                "url_citation": {
                    "url": "https://example.org/lisbon/towers",
                    "title": "Towers of Lisbon",
                },
            },
        ),
        (
            m2 + L,
            {
                "index": 1,
                "type": "url_citation",
                "text": "【3:1†source】",
                "start_index": m2,
                "end_index": m2 + L,
                "url_citation": {
                    "url": "https://example.org/vasco-da-gama",
                    "title": "Vasco da Gama Tower",
                },
            },
        ),
    ]
    b.message("msg_rpBing0000000000000000001", text, anns)
    b.run_events("completed")
    b.done()
    write(
        "bing_citations",
        [phase(b, run_obj(run["id"], run["thread_id"], "completed", tools=run["tools"]))],
        "Bing grounding: a bing_grounding tool step, then a message citing two urls with 【n:m†source】 markers left in the text.",
    )


def code_interpreter() -> None:
    run = run_obj("run_rpCode0000000000000000001", "thread_rpCode000000000000000001", "in_progress")
    run["tools"] = [{"type": "code_interpreter"}]
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    b.message("msg_rpCodeA000000000000000001", "I will compute that with Python first.")
    call = "call_rpCode000000000000000001"
    code = "import math\nprint(math.factorial(5))"
    b.tool_step(
        "step_rpCodeTool00000000000001",
        {
            "index": 0,
            "id": call,
            "type": "code_interpreter",
            "code_interpreter": {"input": "", "outputs": []},
        },
        [
            {"index": 0, "type": "code_interpreter", "code_interpreter": {"input": p}}
            for p in fragments(code, 6)
        ]
        + [
            {
                "index": 0,
                "type": "code_interpreter",
                "code_interpreter": {"outputs": [{"index": 0, "type": "logs", "logs": "120\n"}]},
            }
        ],
        {
            "id": call,
            "type": "code_interpreter",
            "code_interpreter": {"input": code, "outputs": [{"type": "logs", "logs": "120\n"}]},
        },
    )
    b.message(
        "msg_rpCodeB000000000000000001",
        "5! is 120. Here is a chart.",
        image_file="assistant-rpChart00000000001",
    )
    b.run_events("completed")
    b.done()
    write(
        "code_interpreter",
        [phase(b, run_obj(run["id"], run["thread_id"], "completed", tools=run["tools"]))],
        "Code interpreter: text, a code_interpreter step (input in fragments, logs output), more text with an image_file.",
    )


def connected_agent() -> None:
    run = run_obj("run_rpConn0000000000000000001", "thread_rpConn000000000000000001", "in_progress")
    run["tools"] = [
        {
            "type": "connected_agent",
            "connected_agent": {
                "id": "asst_rpStock000000000000001",
                "name": "stock_price_bot",
                "description": "Gets stock prices.",
            },
        }
    ]
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    call = "call_rpConn000000000000000001"
    final = {
        "id": call,
        "type": "connected_agent",
        "connected_agent": {
            "name": "stock_price_bot",
            "arguments": '{"ticker":"MSFT"}',
            "output": "MSFT closed at 512.10 USD.",
            "run_id": "run_rpConnSub00000000000000001",
            "thread_id": "thread_rpConnSub0000000000001",
            "assistant_id": "asst_rpStock000000000000001",
        },
    }
    b.tool_step(
        "step_rpConnTool00000000000001",
        {
            "index": 0,
            "id": call,
            "type": "connected_agent",
            "connected_agent": {"name": "stock_price_bot", "arguments": ""},
        },
        [
            {"index": 0, "type": "connected_agent", "connected_agent": {"arguments": '{"ticker":'}},
            {"index": 0, "type": "connected_agent", "connected_agent": {"arguments": '"MSFT"}'}},
            {
                "index": 0,
                "type": "connected_agent",
                "connected_agent": {"output": "MSFT closed at 512.10 USD."},
            },
        ],
        final,
    )
    b.message("msg_rpConn0000000000000000001", "Microsoft's stock closed at 512.10 USD.")
    b.run_events("completed")
    b.done()
    write(
        "connected_agent",
        [phase(b, run_obj(run["id"], run["thread_id"], "completed", tools=run["tools"]))],
        "Connected agent: a connected_agent tool step (name, arguments, output, sub-run ids), then the answer.",
    )


def function_call() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": False,
            },
        }
    ]
    run = run_obj(
        "run_rpFunc0000000000000000001",
        "thread_rpFunc000000000000000001",
        "in_progress",
        tools=tools,
    )
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress", tools=tools)
    b.message("msg_rpFuncA000000000000000001", "Let me look up the weather in Paris.")
    call = "call_rpFunc000000000000000001"
    step_id = "step_rpFuncTool00000000000001"
    args = '{"city":"Paris"}'
    empty = {"type": "tool_calls", "tool_calls": []}
    b.ev("thread.run.step.created", step_obj(step_id, run, "tool_calls", "in_progress", empty))
    b.ev("thread.run.step.in_progress", step_obj(step_id, run, "tool_calls", "in_progress", empty))
    first = {
        "index": 0,
        "id": call,
        "type": "function",
        "function": {"name": "get_weather", "arguments": "", "output": None},
    }
    for item in [first] + [
        {"index": 0, "type": "function", "function": {"arguments": p}} for p in fragments(args, 3)
    ]:
        b.ev(
            "thread.run.step.delta",
            {
                "id": step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [item]}},
            },
        )
    action = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": call,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": args},
                }
            ]
        },
    }
    waiting = run_obj(
        run["id"], run["thread_id"], "requires_action", tools=tools, required_action=action
    )
    b.ev("thread.run.requires_action", waiting)
    b.done()
    p0 = phase(b, waiting)

    b2 = Builder(run)
    b2.messages = list(b.messages)  # the list after phase 2 holds both messages, in order
    done_call = {
        "id": call,
        "type": "function",
        "function": {"name": "get_weather", "arguments": args, "output": "sunny, 21 C"},
    }
    b2.ev(
        "thread.run.step.completed",
        step_obj(
            step_id,
            run,
            "tool_calls",
            "completed",
            {"type": "tool_calls", "tool_calls": [done_call]},
        ),
    )
    b2.run_events("queued", "in_progress", tools=tools)
    b2.message("msg_rpFuncB000000000000000001", "It is sunny in Paris, 21 C.", created=T0 + 2)
    b2.run_events("completed", tools=tools)
    b2.done()
    write(
        "function_call",
        [p0, phase(b2, run_obj(run["id"], run["thread_id"], "completed", tools=tools))],
        "Text before a function call, requires_action; after the tool output the same run writes the answer.",
    )


def two_messages() -> None:
    run = run_obj("run_rpTwo00000000000000000001", "thread_rpTwo0000000000000000001", "in_progress")
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    # Same second, and ids in decreasing lexical order: sorting would reverse the reply.
    b.message("msg_rpTwoZ00000000000000000001", "Part one.", created=T0 + 2)
    b.message("msg_rpTwoA00000000000000000001", "Part two.", created=T0 + 2)
    b.run_events("completed")
    b.done()
    write(
        "two_messages",
        [phase(b, run_obj(run["id"], run["thread_id"], "completed"))],
        "Two messages written in the same second; the second one's id sorts first.",
    )


def midstream_error() -> None:
    run = run_obj("run_rpErr00000000000000000001", "thread_rpErr0000000000000000001", "in_progress")
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    b.message("msg_rpErr00000000000000000001", "The answer to the question is forty-two.")
    full = b.events
    cut = next(i for i, e in enumerate(full) if e[0] == "thread.message.delta") + 3
    b.events = [
        *full[:cut],
        ["error", {"error": {"code": "server_error", "message": "The stream was interrupted."}}],
    ]
    write(
        "midstream_error",
        [phase(b, run_obj(run["id"], run["thread_id"], "completed"))],
        "An `event: error` after three text deltas ends the stream; the run completes on the service.",
    )


def failed_after_text() -> None:
    run = run_obj("run_rpFail0000000000000000001", "thread_rpFail000000000000000001", "in_progress")
    b = Builder(run)
    b.events.append(thread_created(run["thread_id"]))
    b.run_events("created", "queued", "in_progress")
    b.message("msg_rpFail0000000000000000001", "Working on it")
    err = {
        "code": "rate_limit_exceeded",
        "message": "Rate limit is exceeded. Try again in 60 seconds.",
    }
    failed = run_obj(
        run["id"], run["thread_id"], "failed", failed_at=T0 + 5, last_error=err, usage=usage(300, 4)
    )
    b.ev("thread.run.failed", failed)
    b.done()
    write(
        "failed_after_text",
        [phase(b, failed)],
        "The run writes some text, then fails with rate_limit_exceeded (Try again in 60 seconds).",
    )


if __name__ == "__main__":
    bing()
    code_interpreter()
    connected_agent()
    function_call()
    two_messages()
    midstream_error()
    failed_after_text()
