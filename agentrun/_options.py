"""`RunOptions`: the keyword arguments of one invocation, typed once.

`AsyncClient.run` spells them out; `AsyncClient.stream`, `AsyncClient.open_stream`,
`Client.run` and `Client.stream` take `**options: Unpack[RunOptions]`, so a type checker
catches a misspelt or mistyped option in every one of them (tests/typing/ pins that).
Pure typing: no I/O, no import of the rest of agentrun.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

__all__ = ["Mode", "RunOptions"]

#: How an invocation follows its run: the event stream, polling, or a choice per run.
Mode = Literal["auto", "stream", "poll"]


class RunOptions(TypedDict, total=False):
    """The keyword arguments of `AsyncClient.run` after `agent` and `input` (all optional).

    Invocation: `thread_id`, `run_id`, `tool_outputs` (a `{tool_call_id: output}` mapping or
    a list of `{"tool_call_id", "output"}`), `timeout` (seconds, None for no limit), `mode`.
    Run options, sent to the service as the Agents API names them: `instructions`,
    `additional_instructions`, `tools`, `tool_choice`, `response_format`, `temperature`,
    `top_p`, `max_prompt_tokens`, `max_completion_tokens`, `truncation_strategy`, `metadata`,
    `parallel_tool_calls`, `model`.
    """

    thread_id: str | None
    run_id: str | None
    tool_outputs: Mapping[str, str] | Sequence[Mapping[str, str]] | None
    instructions: str | None
    additional_instructions: str | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: Any
    response_format: Any
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: Mapping[str, Any] | None
    metadata: Mapping[str, str] | None
    parallel_tool_calls: bool | None
    model: str | None
    timeout: float | None
    mode: Mode | None
