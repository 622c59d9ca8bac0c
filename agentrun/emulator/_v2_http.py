"""Foundry Agents v2 emulation, HTTP side: the Responses error shape, body and paging
helpers, input-item validation, and the small response hooks the v2 routes need.

Shapes follow ``reference/agents-v2-api.md`` (OpenAI's Responses and Conversations types as
served by Foundry under ``{project}/openai/v1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from ._settings import FaultRule
from ._util import dumps
from ._v2_store import new_v2_id

__all__ = [
    "AGENT_OWNED_PARAMS",
    "MAX_ITEMS_PER_CALL",
    "FaultSource",
    "V2Error",
    "bad",
    "body",
    "item_text",
    "json_copy",
    "normalize_items",
    "not_found",
    "output_text",
    "page",
    "parse_metadata",
    "retry_after_both",
    "vkey",
    "wait_or_disconnect",
]

JSON = dict[str, Any]

#: Request fields the agent version owns; sent with an ``agent_reference`` they are a 400.
AGENT_OWNED_PARAMS = (
    "instructions",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "text",
    "reasoning",
)

_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
MAX_ITEMS_PER_CALL = 20


class FaultSource(Protocol):
    """What the v2 service asks the emulator's fault injection (`EmulatorState`)."""

    def run_fault(self, route: str) -> str | None: ...

    def stream_cut(self, route: str) -> FaultRule | None: ...


class V2Error(Exception):
    """An error answer in the Responses error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        details: list[JSON] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.details = details

    def response(self) -> web.Response:
        error: JSON = {
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "type": self.type,
        }
        if self.details is not None:
            error["details"] = self.details
        return web.Response(
            status=self.status, text=dumps({"error": error}), content_type="application/json"
        )


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> V2Error:
    return V2Error(400, code, message, param=param)


def not_found(kind: str, ident: str, param: str | None = None) -> V2Error:
    return V2Error(404, "not_found", f"{kind} with id '{ident}' not found.", param=param)


async def body(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad("The request body must be a JSON object.", code="invalid_json")
    return data


def parse_metadata(data: Mapping[str, Any]) -> dict[str, str] | None:
    value = data.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise bad("Invalid 'metadata': an object of at most 16 pairs.", "metadata")
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise bad("Invalid 'metadata': string values (keys <= 64, values <= 512).", "metadata")
    return dict(value)


def _paging(request: web.Request) -> tuple[int, str, str | None, str | None]:
    q = request.query
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise bad("Invalid 'limit': expected an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise bad("Invalid 'limit': must be between 1 and 100.", "limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad("Invalid 'order': must be 'asc' or 'desc'.", "order")
    return limit, order, q.get("after") or None, q.get("before") or None


def page(items: list[JSON], request: web.Request, *, key: str = "id") -> JSON:
    """OpenAI/Foundry paging over items in creation order: ``{object, data, first_id,
    last_id, has_more}``."""
    limit, order, after, before = _paging(request)
    seq = list(items) if order == "asc" else list(reversed(items))
    ids = [str(i[key]) for i in seq]
    if after is not None:
        seq = seq[ids.index(after) + 1 :] if after in ids else []
    elif before is not None:
        seq = seq[: ids.index(before)][-limit:] if before in ids else []
    data = seq[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0][key] if data else None,
        "last_id": data[-1][key] if data else None,
        "has_more": len(seq) > limit,
    }


# -- input items ---------------------------------------------------------------------------


def _text_parts(content: Any, where: str, role: str) -> list[JSON]:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        part: JSON = {"type": kind, "text": content}
        if kind == "output_text":
            part["annotations"] = []
        return [part]
    if not isinstance(content, list):
        raise bad(f"Invalid '{where}': expected a string or an array of parts.", where)
    parts = []
    for i, p in enumerate(content):
        w = f"{where}[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("type"), str):
            raise bad(f"Invalid '{w}': expected an object with a 'type'.", w)
        if p["type"] in ("input_text", "output_text"):
            if not isinstance(p.get("text"), str):
                raise bad(f"Invalid '{w}.text': expected a string.", f"{w}.text")
            out = {"type": p["type"], "text": p["text"]}
            if p["type"] == "output_text":
                out["annotations"] = list(p.get("annotations") or [])
            parts.append(out)
        elif p["type"] in ("input_image", "input_file", "refusal"):
            parts.append(dict(p))
        else:
            raise bad(f"Invalid '{w}.type': unknown content type {p['type']!r}.", f"{w}.type")
    return parts


def normalize_items(value: Any, where: str = "input") -> list[JSON]:
    """Input (a string or an array of items) as stored items, each with a fresh id."""
    if isinstance(value, str):
        if not value:
            return []  # "" = the input is already in the conversation (Microsoft's samples)
        return [
            {
                "type": "message",
                "id": new_v2_id("msg"),
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_text", "text": value}],
            }
        ]
    if not isinstance(value, list):
        raise bad(f"Invalid '{where}': expected a string or an array of items.", where)
    items: list[JSON] = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise bad(f"Invalid '{w}': expected an object.", w)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _MESSAGE_ROLES:
                raise bad(f"Invalid '{w}.role': must be one of {_MESSAGE_ROLES}.", f"{w}.role")
            items.append(
                {
                    "type": "message",
                    "id": new_v2_id("msg"),
                    "status": "completed",
                    "role": role,
                    "content": _text_parts(item.get("content"), f"{w}.content", role),
                }
            )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            output = item.get("output")
            if not isinstance(call_id, str) or not call_id:
                raise bad(f"Missing required parameter: '{w}.call_id'.", f"{w}.call_id")
            if not isinstance(output, (str, list)):
                raise bad(f"Invalid '{w}.output': expected a string.", f"{w}.output")
            items.append(
                {
                    "type": "function_call_output",
                    "id": new_v2_id("fco"),
                    "status": "completed",
                    "call_id": call_id,
                    "output": output,
                }
            )
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise bad(f"Missing required parameter: '{w}.{key}'.", f"{w}.{key}")
            items.append(
                {
                    "type": "function_call",
                    "id": new_v2_id("fc"),
                    "status": "completed",
                    "call_id": item["call_id"],
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
        else:
            raise bad(f"Invalid '{w}.type': unsupported item type {kind!r}.", f"{w}.type")
    return items


def item_text(item: Mapping[str, Any]) -> str:
    parts = item.get("content") or []
    return "".join(
        str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p
    ).strip()


def output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))


async def wait_or_disconnect(request: web.Request, event: asyncio.Event) -> None:
    """Wait for `event`; raise ConnectionResetError as soon as the client has gone (checked
    every 0.1 s), so a dropped stream is noticed before the next event is written."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=0.1)
            transport = request.transport
            if not waiter.done() and (transport is None or transport.is_closing()):
                raise ConnectionResetError("the client closed the stream")
    finally:
        waiter.cancel()


def json_copy(value: Any) -> Any:
    result: Any = json.loads(dumps(value))
    return result


def vkey(version: str) -> int:
    return int(version) if version.isdigit() else 0


async def retry_after_both(request: web.Request, response: web.StreamResponse) -> None:
    """On v2 routes a throttling answer carries both ``retry-after-ms`` and ``Retry-After``
    (what openai-python and Azure Core read), whichever one the fault rule set."""
    if response.status not in (429, 503) or "/openai/v1/" not in request.path:
        return
    headers = response.headers
    if "Retry-After" in headers and "retry-after-ms" not in headers:
        with contextlib.suppress(ValueError):
            headers["retry-after-ms"] = str(round(float(headers["Retry-After"]) * 1000))
    elif "retry-after-ms" in headers and "Retry-After" not in headers:
        with contextlib.suppress(ValueError):
            seconds = float(headers["retry-after-ms"]) / 1000
            headers["Retry-After"] = f"{max(1, round(seconds + 0.499))}"
