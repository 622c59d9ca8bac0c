"""LiteLLM helpers that code written against `litellm` calls on streamed responses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentrun._errors import ConfigurationError
from agentrun._openai import ChatCompletion, OpenAIObject

__all__ = ["stream_chunk_builder"]


def _as_dict(chunk: Any) -> dict[str, Any]:
    if isinstance(chunk, OpenAIObject):
        return chunk.to_dict()
    if isinstance(chunk, Mapping):
        return dict(chunk)
    raise ConfigurationError(
        f"stream_chunk_builder takes chat.completion.chunk objects, got {type(chunk).__name__}"
    )


def stream_chunk_builder(chunks: Iterable[Any], messages: Any = None) -> ChatCompletion | None:
    """The `chat.completion` that a list of streamed `chat.completion.chunk`s adds up to, as
    LiteLLM's `litellm.stream_chunk_builder(chunks, messages=None)` builds it.

    Per choice index: the content deltas joined, tool-call deltas merged by their `index`
    (id, type and name from the first delta that has them, arguments joined), annotations
    collected, the last `finish_reason`. `id`, `created`, `model`, `thread_id` come from the
    first chunk, `run_id` and `usage` from the chunks that carry them (usage is None unless
    the stream was asked for it with `stream_options={"include_usage": True}`). `messages` is
    accepted for LiteLLM's signature and not used. Returns None for an empty list; raises
    `ConfigurationError` for something that is not a chunk.
    """
    del messages
    data = [_as_dict(c) for c in chunks]
    if not data:
        return None
    first = data[0]
    choices: dict[int, dict[str, Any]] = {}
    usage: Any = None
    run_id: Any = first.get("run_id")
    for chunk in data:
        if chunk.get("usage"):
            usage = chunk["usage"]
        run_id = chunk.get("run_id") or run_id
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            acc = choices.setdefault(
                index,
                {"content": [], "tool_calls": {}, "annotations": [], "finish_reason": None},
            )
            delta = choice.get("delta") or {}
            if delta.get("content"):
                acc["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = acc["tool_calls"].setdefault(
                    int(call.get("index", 0)),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name") and not slot["function"]["name"]:
                    slot["function"]["name"] = function["name"]
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
            acc["annotations"].extend(delta.get("annotations") or ())
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]
    built: list[dict[str, Any]] = []
    for index in sorted(choices):
        acc = choices[index]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(acc["content"]) or None,
            "refusal": None,
        }
        if acc["tool_calls"]:
            message["tool_calls"] = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
        if acc["annotations"]:
            message["annotations"] = acc["annotations"]
        built.append(
            {
                "index": index,
                "message": message,
                "finish_reason": acc["finish_reason"],
                "logprobs": None,
            }
        )
    result: dict[str, Any] = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": built,
        "usage": usage,
        "system_fingerprint": first.get("system_fingerprint"),
        "thread_id": first.get("thread_id"),
        "run_id": run_id,
    }
    return ChatCompletion(result)
