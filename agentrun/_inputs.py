"""What a caller gives an invocation, validated before anything is sent.

Pure code (stdlib, attrs and `agentrun._errors`): `InputMessage` (a user or assistant message,
text or OpenAI-style content parts), `RunOptions` (the per-run settings of `run()`), and
`ToolOutput` (the answer to one tool call). Bad input raises `ConfigurationError` naming the
parameter. Each protocol turns these into its own request bodies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from agentrun._errors import ConfigurationError

__all__ = ["InputMessage", "RunOptions", "ToolOutput"]

_ROLES = ("user", "assistant")


_DETAILS = ("auto", "low", "high")


def _check_detail(holder: Mapping[str, Any], where: str) -> None:
    if "detail" in holder and holder["detail"] not in _DETAILS:
        raise ConfigurationError(
            f"{where}.detail must be one of {_DETAILS}, got {holder['detail']!r}"
        )


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        raise ConfigurationError(f"{where} has unsupported keys {extra}; allowed: {list(allowed)}")


def _content_part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise ConfigurationError(f"{where} must be a mapping, got {type(part).__name__}")
    kind = part.get("type")
    if kind == "text":
        _check_keys(part, ("type", "text"), where)
        if type(part.get("text")) is not str:
            raise ConfigurationError(f"{where}.text must be a string")
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        _check_keys(part, ("type", "image_url"), where)
        image = part.get("image_url")
        if type(image) is str:  # OpenAI's shorthand
            image = {"url": image}
        if not isinstance(image, Mapping) or type(image.get("url")) is not str or not image["url"]:
            raise ConfigurationError(f"{where}.image_url must be {{'url': str, 'detail'?: str}}")
        _check_keys(image, ("url", "detail"), f"{where}.image_url")
        _check_detail(image, f"{where}.image_url")
        return {"type": "image_url", "image_url": dict(image)}
    if kind == "image_file":
        _check_keys(part, ("type", "image_file"), where)
        image = part.get("image_file")
        if (
            not isinstance(image, Mapping)
            or type(image.get("file_id")) is not str
            or not image["file_id"]
        ):
            raise ConfigurationError(
                f"{where}.image_file must be {{'file_id': str, 'detail'?: str}}"
            )
        _check_keys(image, ("file_id", "detail"), f"{where}.image_file")
        _check_detail(image, f"{where}.image_file")
        return {"type": "image_file", "image_file": dict(image)}
    raise ConfigurationError(
        f"{where}.type must be 'text', 'image_url' or 'image_file', got {kind!r}"
    )


def _content(value: Any) -> str | tuple[Mapping[str, Any], ...]:
    if type(value) is str:
        return value
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if not value:
            raise ConfigurationError("message content must not be an empty list")
        return tuple(_content_part(p, f"message content[{i}]") for i, p in enumerate(value))
    raise ConfigurationError(
        f"message content must be a string or a list of parts, got {type(value).__name__}"
    )


def _role(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in _ROLES:
        raise ConfigurationError(f"message role must be 'user' or 'assistant', got {value!r}")


@attrs.frozen
class InputMessage:
    """A message to add to a thread. `content` is a string or OpenAI-style parts.

    Parts are ``{"type": "text", "text": str}``, ``{"type": "image_url", "image_url": {"url",
    "detail"?}}`` (or ``"image_url": "<url>"``) and ``{"type": "image_file", "image_file":
    {"file_id", "detail"?}}``; anything else is a `ConfigurationError`. Parts are copied, so
    later changes to the caller's dicts do not leak into the value.
    """

    role: Literal["user", "assistant"] = attrs.field(validator=_role)
    content: str | Sequence[Mapping[str, Any]] = attrs.field(converter=_content)

    def to_json(self) -> dict[str, Any]:
        content = self.content
        return {
            "role": self.role,
            "content": content if isinstance(content, str) else [dict(p) for p in content],
        }


def _check_number(name: str, value: Any, low: float, high: float) -> None:
    if value is None:
        return
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def _check_min_tokens(name: str, value: Any) -> None:
    if value is None:
        return
    if type(value) is not int or value < 256:
        raise ConfigurationError(f"{name} must be an integer >= 256, got {value!r}")


def _check_str(name: str, value: Any) -> None:
    if value is not None and type(value) is not str:
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")


def _check_tools(value: Any) -> tuple[Mapping[str, Any], ...] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ConfigurationError(
            f"tools must be a list of tool definitions, got {type(value).__name__}"
        )
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or type(tool.get("type")) is not str:
            raise ConfigurationError(f"tools[{i}] must be a mapping with a string 'type'")
        if tool["type"] == "function":
            fn = tool.get("function")
            if not isinstance(fn, Mapping) or type(fn.get("name")) is not str or not fn["name"]:
                raise ConfigurationError(f"tools[{i}].function must be a mapping with a 'name'")
    return tuple(value)


def _check_tool_choice(value: Any) -> None:
    if value is None or value in ("none", "auto"):
        return
    if isinstance(value, Mapping) and type(value.get("type")) is str:
        return
    raise ConfigurationError(
        f"tool_choice must be 'none', 'auto' or a mapping with a 'type', got {value!r}"
    )


def _check_response_format(value: Any) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind in ("text", "json_object"):
            return
        if kind == "json_schema":
            schema = value.get("json_schema")
            if (
                isinstance(schema, Mapping)
                and type(schema.get("name")) is str
                and isinstance(schema.get("schema"), Mapping)
            ):
                return
            raise ConfigurationError(
                "response_format json_schema needs {'name': str, 'schema': mapping}"
            )
    raise ConfigurationError(
        "response_format must be 'auto' or {'type': 'text' | 'json_object' | 'json_schema'}, "
        f"got {value!r}"
    )


def _check_truncation(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        kind = value.get("type")
        last = value.get("last_messages")
        if kind == "auto" and last is None:
            return
        if kind == "last_messages" and type(last) is int and last >= 1:
            return
    raise ConfigurationError(
        "truncation_strategy must be {'type': 'auto'} or "
        f"{{'type': 'last_messages', 'last_messages': int >= 1}}, got {value!r}"
    )


def _check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"metadata must be a mapping of str to str, got {type(value).__name__}"
        )
    if len(value) > 16:
        raise ConfigurationError(f"metadata may hold at most 16 pairs, got {len(value)}")
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            raise ConfigurationError(f"metadata must map str to str, got {k!r}: {v!r}")
    return dict(value)


@attrs.frozen
class RunOptions:
    """Per-run settings; None means "not sent" (the agent's own setting applies).

    Validated on construction against the ranges of the API: `temperature` 0–2, `top_p` 0–1,
    `max_prompt_tokens` and `max_completion_tokens` >= 256, `metadata` at most 16 str->str
    pairs. A bad value raises `ConfigurationError` naming the parameter.
    """

    instructions: str | None = None
    additional_instructions: str | None = None
    tools: Sequence[Mapping[str, Any]] | None = attrs.field(default=None, converter=_check_tools)
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: str | Mapping[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] | None = attrs.field(default=None, converter=_check_metadata)
    parallel_tool_calls: bool | None = None
    model: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_str("instructions", self.instructions)
        _check_str("additional_instructions", self.additional_instructions)
        _check_str("model", self.model)
        if self.model == "":
            raise ConfigurationError("model must not be empty")
        _check_tool_choice(self.tool_choice)
        _check_response_format(self.response_format)
        _check_number("temperature", self.temperature, 0.0, 2.0)
        _check_number("top_p", self.top_p, 0.0, 1.0)
        _check_min_tokens("max_prompt_tokens", self.max_prompt_tokens)
        _check_min_tokens("max_completion_tokens", self.max_completion_tokens)
        _check_truncation(self.truncation_strategy)
        if self.parallel_tool_calls is not None and type(self.parallel_tool_calls) is not bool:
            raise ConfigurationError("parallel_tool_calls must be a bool")

    def to_json(self) -> dict[str, Any]:
        """The run keys of a request body, leaving out every option that is None."""
        out: dict[str, Any] = {}
        for field in attrs.fields(RunOptions):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name == "tools":
                value = [dict(t) for t in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            out[field.name] = value
        return out


@attrs.frozen
class ToolOutput:
    """The result of one tool call, sent with `submit_tool_outputs`."""

    tool_call_id: str
    output: str

    def __attrs_post_init__(self) -> None:
        if type(self.tool_call_id) is not str or not self.tool_call_id:
            raise ConfigurationError(
                f"tool_call_id must be a non-empty string, got {self.tool_call_id!r}"
            )
        if type(self.output) is not str:
            raise ConfigurationError(
                f"output of tool call {self.tool_call_id!r} must be a string, "
                f"got {type(self.output).__name__}"
            )

    def to_json(self) -> dict[str, str]:
        return {"tool_call_id": self.tool_call_id, "output": self.output}
