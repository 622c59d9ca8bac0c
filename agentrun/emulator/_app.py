"""The emulator's aiohttp application: routes, validation, error bodies, faults and stats.

`EmulatorState` holds everything one emulator instance knows; `build_app` wires it into an
`aiohttp.web.Application`. API routes live under `/api/projects/{project}` and need a
supported `api-version` and a bearer token; `/_emulator/*` routes are for tests and tools.

Why one module of ~1,200 lines: it is the classic Agents API's routes with their validation
and error bodies, written to read like the service's reference; the run engine (`_runs`), the
store (`_store`), the model (`_model`) and the v2 service (`_v2*`) are apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from aiohttp import web

from ._runs import RunEngine
from ._settings import AgentSpec, EmulatorSettings, FaultRule, SettingsError
from ._store import TERMINAL, AgentRec, RunRec, Store, ThreadRec, new_id, page
from ._tokens import TokenIssuer
from ._util import Stats, dumps_bytes, sse_frame
from ._v2 import V2Service

__all__ = ["API_VERSIONS", "ApiError", "EmulatorState", "build_app"]

API_VERSIONS = frozenset({"v1", "2025-05-01", "2025-05-15-preview"})
BASE = "/api/projects/{project}"
JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("agentrun_emulator_state")


class ApiError(Exception):
    """An error response with the service's JSON body.

    The body is always ``{"error": {"code", "message", "param", "type"}}`` with all four keys,
    `null` when unset (spec `AgentV1Error`; OpenAI's shape, real-service.md M4).
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        error: JSON = {
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "type": self.type,
        }
        return web.Response(
            status=self.status,
            body=dumps_bytes({"error": error}),
            content_type="application/json",
            headers=self.headers,
        )


def bad_request(
    message: str, param: str | None = None, code: str | None = "invalid_value"
) -> ApiError:
    """A 400 `invalid_request_error`; `code` is "invalid_value" unless given."""
    return ApiError(400, code, message, type="invalid_request_error", param=param)


def state_error(message: str, param: str | None = None) -> ApiError:
    """A 400 for an object in the wrong state: OpenAI's shape, with `code: null`."""
    return ApiError(400, None, message, type="invalid_request_error", param=param)


#: The id prefix the service expects for each path or body id (real-service.md M2).
ID_PREFIXES = {
    "assistant_id": "asst",
    "thread_id": "thread",
    "run_id": "run",
    "message_id": "msg",
    "step_id": "step",
}


def check_id(param: str, ident: str) -> None:
    """400 `invalid_value` for an id without the service's prefix, as Azure answers."""
    prefix = ID_PREFIXES[param]
    if not ident.startswith(prefix):
        raise bad_request(
            f"Invalid '{param}': '{ident}'. Expected an ID that begins with '{prefix}'.", param
        )


#: The body keys each request accepts; any other key is 400 `unknown_parameter` (M3).
_RUN_KEYS = frozenset(
    {
        "assistant_id",
        "model",
        "instructions",
        "tools",
        "tool_resources",
        "stream",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "response_format",
        "parallel_tool_calls",
        "metadata",
    }
)
BODY_KEYS = {
    "agent": frozenset(
        {
            "model",
            "name",
            "description",
            "instructions",
            "tools",
            "tool_resources",
            "temperature",
            "top_p",
            "response_format",
            "metadata",
        }
    ),
    "thread": frozenset({"messages", "tool_resources", "metadata"}),
    "thread_update": frozenset({"tool_resources", "metadata"}),
    "message": frozenset({"role", "content", "attachments", "metadata"}),
    "metadata": frozenset({"metadata"}),
    "run": _RUN_KEYS | {"additional_instructions", "additional_messages"},
    "thread_and_run": _RUN_KEYS | {"thread"},
    "tool_outputs": frozenset({"tool_outputs", "tool_approvals", "stream"}),
}


def check_keys(data: Mapping[str, Any], kind: str, prefix: str = "") -> None:
    """400 `unknown_parameter` for the first key `kind` does not accept (OpenAI's body)."""
    allowed = BODY_KEYS[kind]
    for key in data:
        if key not in allowed:
            name = f"{prefix}{key}"
            raise bad_request(f"Unknown parameter: '{name}'.", name, code="unknown_parameter")


def not_found(kind: str, ident: str, param: str | None = None) -> ApiError:
    if param is not None:
        check_id(param, ident)
    return ApiError(
        404, "not_found", f"No {kind} found with id '{ident}'.", type="invalid_request_error"
    )


# -- body validation -----------------------------------------------------------------------

_MISSING = object()


def _field(data: Mapping[str, Any], key: str, required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise bad_request(
                f"Missing required parameter: '{key}'.", key, code="missing_required_parameter"
            )
        return _MISSING
    return value


def _str(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = _field(data, key, required)
    if value is _MISSING:
        return None
    if not isinstance(value, str):
        raise bad_request(f"Invalid type for '{key}': expected a string.", key)
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool | None:
    value = _field(data, key)
    if value is _MISSING:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"Invalid type for '{key}': expected a boolean.", key)
    return value


def _number(data: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = _field(data, key)
    if value is _MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"Invalid type for '{key}': expected a number.", key)
    if not lo <= value <= hi:
        raise bad_request(f"Invalid '{key}': must be between {lo} and {hi}, got {value}.", key)
    return float(value)


def _int(data: Mapping[str, Any], key: str, lo: int) -> int | None:
    value = _field(data, key)
    if value is _MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"Invalid type for '{key}': expected an integer.", key)
    if value < lo:
        raise bad_request(f"Invalid '{key}': must be at least {lo}, got {value}.", key)
    return value


def _dict(data: Mapping[str, Any], key: str) -> JSON | None:
    value = _field(data, key)
    if value is _MISSING:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"Invalid type for '{key}': expected an object.", key)
    return value


def _list(data: Mapping[str, Any], key: str, *, required: bool = False) -> list[Any] | None:
    value = _field(data, key, required)
    if value is _MISSING:
        return None
    if not isinstance(value, list):
        raise bad_request(f"Invalid type for '{key}': expected an array.", key)
    return value


def _metadata(data: Mapping[str, Any], key: str = "metadata") -> dict[str, str] | None:
    value = _dict(data, key)
    if value is None:
        return None
    if len(value) > 16:
        raise bad_request(f"Invalid '{key}': at most 16 key-value pairs.", key)
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise bad_request(
                f"Invalid '{key}': values must be strings (keys up to 64 chars, values 512).", key
            )
    return dict(value)


def _content(value: Any, param: str) -> list[JSON]:
    if isinstance(value, str):
        return [{"type": "text", "text": {"value": value, "annotations": []}}]
    if not isinstance(value, list) or not value:
        raise bad_request(f"Invalid '{param}': expected a string or a non-empty array.", param)
    blocks: list[JSON] = []
    for i, block in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad_request(f"Invalid '{where}': expected an object with a 'type'.", where)
        kind = block["type"]
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise bad_request(f"Invalid '{where}.text': expected a string.", f"{where}.text")
            blocks.append({"type": "text", "text": {"value": block["text"], "annotations": []}})
        elif kind == "image_file":
            image = block.get("image_file")
            if not isinstance(image, dict) or not isinstance(image.get("file_id"), str):
                raise bad_request(f"Invalid '{where}.image_file'.", f"{where}.image_file")
            blocks.append({"type": "image_file", "image_file": dict(image)})
        elif kind == "image_url":
            image = block.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise bad_request(f"Invalid '{where}.image_url'.", f"{where}.image_url")
            blocks.append({"type": "image_url", "image_url": dict(image)})
        else:
            raise bad_request(f"Invalid '{where}.type': unknown content type {kind!r}.", where)
    return blocks


@attrs.frozen
class MessageIn:
    role: str
    content: list[JSON]
    attachments: list[JSON] | None
    metadata: dict[str, str] | None


def _message_in(data: Any, param: str = "") -> MessageIn:
    if not isinstance(data, dict):
        raise bad_request(f"Invalid '{param}': expected an object.", param or None)
    prefix = f"{param}." if param else ""
    check_keys(data, "message", prefix)
    try:
        role = _str(data, "role", required=True)
        if role not in ("user", "assistant"):
            raise bad_request("Invalid 'role': must be 'user' or 'assistant'.", "role")
        content = _content(_field(data, "content", required=True), f"{prefix}content")
        attachments = _list(data, "attachments")
        metadata = _metadata(data)
    except ApiError as exc:
        if param and exc.param and not exc.param.startswith(prefix):
            exc.param = prefix + exc.param
        raise
    return MessageIn(role, content, attachments, metadata)


def _messages_in(data: Mapping[str, Any], key: str) -> list[MessageIn]:
    items = _list(data, key) or []
    return [_message_in(item, f"{key}[{i}]") for i, item in enumerate(items)]


def _tools(data: Mapping[str, Any], key: str = "tools") -> list[JSON] | None:
    tools = _list(data, key)
    if tools is None:
        return None
    for i, tool in enumerate(tools):
        where = f"{key}[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise bad_request(f"Invalid '{where}': expected an object with a 'type'.", where)
        if tool["type"] == "function":
            fn = tool.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise bad_request(f"Invalid '{where}.function': needs a 'name'.", where)
    return [dict(t) for t in tools]


def _tool_choice(data: Mapping[str, Any]) -> Any:
    value = _field(data, "tool_choice")
    if value is _MISSING:
        return None
    if isinstance(value, str) and value in ("none", "auto"):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    raise bad_request("Invalid 'tool_choice'.", "tool_choice")


def _response_format(data: Mapping[str, Any]) -> Any:
    value = _field(data, "response_format")
    if value is _MISSING:
        return None
    if value == "auto":
        return value
    if isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema"):
        return value
    raise bad_request("Invalid 'response_format'.", "response_format")


def _truncation(data: Mapping[str, Any]) -> JSON | None:
    value = _dict(data, "truncation_strategy")
    if value is None:
        return None
    if value.get("type") not in ("auto", "last_messages"):
        raise bad_request("Invalid 'truncation_strategy.type'.", "truncation_strategy")
    last = value.get("last_messages")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise bad_request("Invalid 'truncation_strategy.last_messages'.", "truncation_strategy")
    return {"type": value["type"], "last_messages": last}


async def _body(request: web.Request) -> JSON:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return data


def _paging(request: web.Request) -> JSON:
    q = request.query
    raw_limit = q.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise bad_request("Invalid 'limit': expected an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise bad_request("Invalid 'limit': must be between 1 and 100.", "limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid 'order': must be 'asc' or 'desc'.", "order")
    return {
        "limit": limit,
        "order": order,
        "after": q.get("after") or None,
        "before": q.get("before") or None,
    }


# -- state ---------------------------------------------------------------------------------


@attrs.define
class _ArmedRule:
    rule: FaultRule
    remaining: int


class EmulatorState:
    """Everything one running emulator knows."""

    def __init__(self, settings: EmulatorSettings, base_url: Callable[[], str]) -> None:
        self.settings = settings
        self.base_url = base_url
        self.store = Store()
        self.stats = Stats()
        self.engine = RunEngine(self.store, self.stats, settings.timing)
        self.rng = random.Random(settings.seed)
        self.rules: list[_ArmedRule] = []
        self.tokens = TokenIssuer(
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            lifetime=settings.token_lifetime,
            api_keys=settings.api_keys,
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.closing = asyncio.Event()
        self._load_agents()
        self.v2 = V2Service(settings, self.stats, self)  # Foundry Agents v2 (Responses API)
        for rule in settings.fault_rules:
            self.inject(rule)

    def _load_agents(self) -> None:
        now = self.store.now()
        for spec in self.settings.all_agents():
            self.store.agents[spec.id] = _agent_from_spec(spec, now)

    # lifecycle
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        self.closing.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.engine.shutdown()
        await self.v2.shutdown()

    async def _sweep_forever(self) -> None:
        ttl = self.settings.thread_ttl
        interval = min(max(ttl / 4, 0.05), 60.0)
        while True:
            await asyncio.sleep(interval)
            self.store.sweep(ttl)

    # test hooks
    def reset(self) -> None:
        self.engine.abandon_all()
        self.store.clear()
        self._load_agents()
        self.stats.reset()
        self.rules.clear()
        self.rng.seed(self.settings.seed)
        self.tokens.reset()
        self.v2.reset()

    def inject(self, rule: FaultRule) -> None:
        if rule.times > 0:
            self.rules.append(_ArmedRule(rule, rule.times))

    def stats_json(self) -> JSON:
        data = self.stats.to_json(self.tokens.tokens_issued)
        data.update(self.v2.stats_json())
        return data

    def runs_json(self) -> list[JSON]:
        return [run.summary() for run in self.store.runs.values()]

    # faults
    def take_rule(
        self, route: str, kinds: tuple[str, ...], *, stream: bool | None = None
    ) -> FaultRule | None:
        """Take the first armed rule of `kinds` for `route`; `stream` picks "stall" rules by
        where they act (True: on a stream, after_events > 0; False: before any byte)."""
        for armed in self.rules:
            rule = armed.rule
            if rule.kind == "stall" and stream is not None and (rule.after_events > 0) != stream:
                continue
            if rule.kind in kinds and (rule.route == "*" or rule.route == route):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self.rules.remove(armed)
                return rule
        return None

    def request_fault(self, route: str, api: bool) -> FaultRule | None:
        rule = self.take_rule(
            route, ("status", "drop", "stall", "html", "permission_denied"), stream=False
        )
        if rule is not None or not api:
            return rule
        f = self.settings.faults
        total = f.rate_429 + f.rate_500 + f.rate_503 + f.rate_drop
        if total <= 0:
            return None
        r = self.rng.random()
        if r < f.rate_429:
            return FaultRule(route=route, status=429, retry_after=f.retry_after)
        r -= f.rate_429
        if r < f.rate_500:
            return FaultRule(route=route, status=500)
        r -= f.rate_500
        if r < f.rate_503:
            return FaultRule(route=route, status=503, retry_after=f.retry_after)
        r -= f.rate_503
        if r < f.rate_drop:
            return FaultRule(route=route, kind="drop")
        return None

    def stream_cut(self, route: str) -> FaultRule | None:
        """The fault for this stream ("stream_cut", "stream_error" or "stall" after
        `after_events` frames), or None to send every frame."""
        rule = self.take_rule(route, ("stream_cut", "stream_error", "stall"), stream=True)
        if rule is not None:
            return rule
        rate = self.settings.faults.rate_stream_cut
        if rate > 0 and self.rng.random() < rate:
            return FaultRule(kind="stream_cut", after_events=self.rng.randint(1, 8))
        return None

    def run_fault(self, route: str) -> str | None:
        rule = self.take_rule(route, ("run_failed", "run_expired", "fail_after_text"))
        if rule is not None:
            if rule.kind == "run_expired":
                return "run_expired"
            return f"{rule.kind}:{rule.code or 'server_error'}"
        f = self.settings.faults
        if f.rate_run_failed > 0 and self.rng.random() < f.rate_run_failed:
            code = self.rng.choice(("server_error", "rate_limit_exceeded"))
            return f"run_failed:{code}"
        if f.rate_run_expired > 0 and self.rng.random() < f.rate_run_expired:
            return "run_expired"
        return None


def _agent_from_spec(spec: AgentSpec, now: int) -> AgentRec:
    return AgentRec(
        id=spec.id,
        created_at=now,
        model=spec.model,
        name=spec.name,
        description=spec.description,
        instructions=spec.instructions,
        tools=[dict(t) for t in spec.tools],
        metadata=dict(spec.metadata),
        timing=spec.timing,
        script=spec.script,
    )


def _fault_response(rule: FaultRule) -> ApiError:
    status = rule.status
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        value = rule.retry_after
        if rule.retry_after_header.lower() == "retry-after":
            headers[rule.retry_after_header] = f"{value:g}"
        else:
            headers[rule.retry_after_header] = str(round(value * 1000))
    if status == 429:
        code = rule.code or "rate_limit_exceeded"
        wait = rule.retry_after if rule.retry_after is not None else 60
        message = f"Rate limit is exceeded. Try again in {wait:g} seconds."
    elif status == 503:
        code = rule.code or "service_unavailable"
        message = "The service is temporarily unavailable."
    elif status >= 500:
        code, message = rule.code or "server_error", "Sorry, something went wrong."
    else:
        code, message = rule.code or "injected_error", f"Injected HTTP {status} error."
    return ApiError(status, code, message, headers=headers)


def permission_denied(request: web.Request) -> ApiError:
    """HTTP 401 `PermissionDenied` worded like the service's RBAC failure (M1)."""
    template = route_key(request) or f"{request.method} {request.path}"
    method, _, path = template.partition(" ")
    action = "read" if method == "GET" else ("delete" if method == "DELETE" else "write")
    return ApiError(
        401,
        "PermissionDenied",
        "The principal `00000000-0000-0000-0000-000000000000` lacks the required data action "
        f"`Microsoft.CognitiveServices/accounts/AIServices/agents/{action}` to perform "
        f"`{method} /api/projects/{{projectName}}{path}` operation.",
    )


_HTML_TITLES = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable"}


def html_error(status: int) -> web.Response:
    """A gateway's error page: `text/html`, no JSON (real-service.md section 3, item 9)."""
    title = _HTML_TITLES.get(status, "504 Gateway Time-out" if status == 504 else str(status))
    page_text = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=page_text, content_type="text/html")


async def stall(request: web.Request, state: EmulatorState) -> None:
    """Send nothing more until the client leaves, the emulator stops or `stall_limit` passes;
    then abort the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.stall_limit
    while loop.time() < deadline and not state.closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.closing.wait(), timeout=0.05)
    if request.transport is not None:
        request.transport.abort()


def route_key(request: web.Request) -> str | None:
    """'METHOD /template' relative to the project base, or None if no route matched."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    template = resource.canonical
    if template.startswith(BASE):
        template = template[len(BASE) :] or "/"
    return f"{request.method} {template}"


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=599)


# -- the application -----------------------------------------------------------------------


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[_make_middleware(state)], client_max_size=16 * 1024**2)
    app[_STATE_KEY] = state
    app.on_response_prepare.append(_add_request_id)
    state.tokens.add_routes(app, state.base_url)
    _Routes(state).register(app)
    state.v2.register(app)
    return app


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer carries two request ids, as the service's do (real-service.md L1): Azure
    API Management's `apim-request-id` (a UUID) and a different `x-request-id` (32 hex)."""
    response.headers.setdefault("apim-request-id", str(uuid.uuid4()))
    response.headers.setdefault("x-request-id", uuid.uuid4().hex)


def _make_middleware(state: EmulatorState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_key(request)
        internal = request.path.startswith("/_emulator/")
        api = request.path.startswith("/api/projects/")
        resp: web.StreamResponse
        try:
            if route is not None and not internal:
                fault = state.request_fault(route, api)
                if fault is not None:
                    if fault.kind in ("drop", "stall"):
                        if fault.kind == "stall":
                            await request.read()
                            await stall(request, state)
                        state.stats.request(route, 0)  # a dropped connection counts as status "0"
                        return _drop(request)
                    if fault.kind == "html":
                        state.stats.request(route, fault.status)
                        return html_error(fault.status)
                    if fault.kind == "permission_denied":
                        raise permission_denied(request)
                    raise _fault_response(fault)
            if api and route is not None:
                bearer = request.headers.get("Authorization", "").partition(" ")[2].strip()
                if bearer and bearer in state.settings.keys_without_role:
                    raise permission_denied(request)
                if not state.tokens.check_bearer(request.headers.get("Authorization")):
                    raise ApiError(
                        401,
                        "unauthorized",
                        "Access denied due to a missing or invalid bearer token.",
                        headers={"WWW-Authenticate": 'Bearer realm="agentrun-emulator"'},
                    )
                version = request.query.get("api-version")
                # The OpenAI-compatible v2 data plane (/openai/v1/...) takes no api-version.
                if version is None and "/openai/v1/" in request.path:
                    version = "v1"
                if version is None:
                    raise ApiError(
                        400,
                        "MissingApiVersionParameter",
                        "The api-version query parameter (?api-version=) is required for all "
                        "requests.",
                    )
                if version not in API_VERSIONS:
                    # Azure/azure-sdk-for-net#50120 (real-service.md M8)
                    raise ApiError(
                        400,
                        "UnsupportedApiVersionValue",
                        f"Unsupported api version '{version}'. The supported versions are "
                        "'v1', '2025-05-01', '2025-05-15-preview'",
                    )
            resp = await handler(request)
        except ApiError as exc:
            resp = exc.response()
        except web.HTTPException as exc:
            if exc.status == 404:
                # the Azure front door's body for a path it does not know (L14)
                err = ApiError(404, "404", "Resource not found")
            elif exc.status == 405:
                err = ApiError(405, "method_not_allowed", f"Method {request.method} not allowed.")
            elif exc.status == 413:
                err = bad_request("The request body is too large.")
            else:
                err = ApiError(exc.status, "http_error", exc.reason)
            resp = err.response()
        if not internal:
            state.stats.request(route or f"{request.method} <unmatched>", resp.status)
        return resp

    return middleware


class _Routes:
    def __init__(self, state: EmulatorState) -> None:
        self.s = state
        self.store = state.store
        self.engine = state.engine

    def register(self, app: web.Application) -> None:
        r = app.router
        b = BASE
        r.add_post(f"{b}/assistants", self.create_agent)
        r.add_get(f"{b}/assistants", self.list_agents)
        r.add_get(f"{b}/assistants/{{assistant_id}}", self.get_agent)
        r.add_post(f"{b}/assistants/{{assistant_id}}", self.update_agent)
        r.add_delete(f"{b}/assistants/{{assistant_id}}", self.delete_agent)
        r.add_post(f"{b}/threads", self.create_thread)
        r.add_get(f"{b}/threads", self.list_threads)
        r.add_post(f"{b}/threads/runs", self.create_thread_and_run)
        r.add_get(f"{b}/threads/{{thread_id}}", self.get_thread)
        r.add_post(f"{b}/threads/{{thread_id}}", self.update_thread)
        r.add_delete(f"{b}/threads/{{thread_id}}", self.delete_thread)
        r.add_post(f"{b}/threads/{{thread_id}}/messages", self.create_message)
        r.add_get(f"{b}/threads/{{thread_id}}/messages", self.list_messages)
        r.add_get(f"{b}/threads/{{thread_id}}/messages/{{message_id}}", self.get_message)
        r.add_post(f"{b}/threads/{{thread_id}}/messages/{{message_id}}", self.update_message)
        r.add_post(f"{b}/threads/{{thread_id}}/runs", self.create_run)
        r.add_get(f"{b}/threads/{{thread_id}}/runs", self.list_runs)
        r.add_get(f"{b}/threads/{{thread_id}}/runs/{{run_id}}", self.get_run)
        r.add_post(f"{b}/threads/{{thread_id}}/runs/{{run_id}}", self.update_run)
        r.add_post(f"{b}/threads/{{thread_id}}/runs/{{run_id}}/cancel", self.cancel_run)
        r.add_post(
            f"{b}/threads/{{thread_id}}/runs/{{run_id}}/submit_tool_outputs",
            self.submit_tool_outputs,
        )
        r.add_get(f"{b}/threads/{{thread_id}}/runs/{{run_id}}/steps", self.list_steps)
        r.add_get(f"{b}/threads/{{thread_id}}/runs/{{run_id}}/steps/{{step_id}}", self.get_step)
        r.add_get("/_emulator/stats", self.emu_stats)
        r.add_get("/_emulator/runs", self.emu_runs)
        r.add_post("/_emulator/reset", self.emu_reset)
        r.add_post("/_emulator/faults", self.emu_faults)

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def ok(data: Any) -> web.Response:
        """200 with a JSON body, `Content-Type: application/json` (no charset, as Azure)."""
        return web.Response(body=dumps_bytes(data), content_type="application/json")

    def thread(self, request: web.Request) -> ThreadRec:
        ident = request.match_info["thread_id"]
        thread = self.store.threads.get(ident)
        if thread is None:
            raise not_found("thread", ident, "thread_id")
        return thread

    def run(self, request: web.Request, thread: ThreadRec) -> RunRec:
        ident = request.match_info["run_id"]
        run = thread.run_index.get(ident)
        if run is None:
            raise not_found("run", ident, "run_id")
        return run

    def agent(self, ident: str) -> AgentRec:
        agent = self.store.agents.get(ident)
        if agent is None:
            raise not_found("assistant", ident, "assistant_id")
        return agent

    # -- agents ---------------------------------------------------------------------------

    def _agent_fields(self, data: JSON, agent: AgentRec) -> None:
        for key in ("name", "description", "instructions"):
            if key in data:
                setattr(agent, key, _str(data, key))
        model = _str(data, "model")
        if model is not None:
            agent.model = model
        tools = _tools(data)
        if tools is not None:
            agent.tools = tools
        resources = _dict(data, "tool_resources")
        if resources is not None:
            agent.tool_resources = resources
        temperature = _number(data, "temperature", 0, 2)
        if temperature is not None:
            agent.temperature = temperature
        top_p = _number(data, "top_p", 0, 1)
        if top_p is not None:
            agent.top_p = top_p
        fmt = _response_format(data)
        if fmt is not None:
            agent.response_format = fmt
        metadata = _metadata(data)
        if metadata is not None:
            agent.metadata = metadata

    async def create_agent(self, request: web.Request) -> web.Response:
        data = await _body(request)
        check_keys(data, "agent")
        model = _str(data, "model", required=True)
        assert model is not None
        agent = AgentRec(id=new_id("asst"), created_at=self.store.now(), model=model)
        self._agent_fields(data, agent)
        self.store.agents[agent.id] = agent
        return self.ok(agent.to_json())

    async def list_agents(self, request: web.Request) -> web.Response:
        p = _paging(request)
        items = sorted(self.store.agents.values(), key=lambda a: a.created_at)
        return self.ok(page(items, render=AgentRec.to_json, **p))

    async def get_agent(self, request: web.Request) -> web.Response:
        return self.ok(self.agent(request.match_info["assistant_id"]).to_json())

    async def update_agent(self, request: web.Request) -> web.Response:
        agent = self.agent(request.match_info["assistant_id"])
        data = await _body(request)
        check_keys(data, "agent")
        probe = attrs.evolve(agent)
        self._agent_fields(data, probe)  # validate everything before changing anything
        self._agent_fields(data, agent)
        return self.ok(agent.to_json())

    async def delete_agent(self, request: web.Request) -> web.Response:
        agent = self.agent(request.match_info["assistant_id"])
        del self.store.agents[agent.id]
        return self.ok({"id": agent.id, "object": "assistant.deleted", "deleted": True})

    # -- threads --------------------------------------------------------------------------

    def _new_thread(self, data: JSON, prefix: str = "") -> ThreadRec:
        check_keys(data, "thread", prefix)
        messages = _messages_in(data, "messages")
        metadata = _metadata(data)
        resources = _dict(data, "tool_resources")
        thread = self.store.new_thread(metadata or {}, resources)
        for m in messages:
            self.store.add_message(
                thread, m.role, m.content, attachments=m.attachments, metadata=m.metadata
            )
        return thread

    async def create_thread(self, request: web.Request) -> web.Response:
        data = await _body(request)
        return self.ok(self._new_thread(data).to_json())

    async def list_threads(self, request: web.Request) -> web.Response:
        p = _paging(request)
        return self.ok(page(list(self.store.threads.values()), render=ThreadRec.to_json, **p))

    async def get_thread(self, request: web.Request) -> web.Response:
        return self.ok(self.thread(request).to_json())

    async def update_thread(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        data = await _body(request)
        check_keys(data, "thread_update")
        metadata = _metadata(data)
        resources = _dict(data, "tool_resources")
        if metadata is not None:
            thread.metadata = metadata
        if resources is not None:
            thread.tool_resources = resources
        return self.ok(thread.to_json())

    async def delete_thread(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        for run in thread.runs:
            if run.task is not None:
                run.task.cancel()
            self.engine.end_streams(run)
            if run.active:
                self.engine.set_status(run, "cancelled")
        self.store.delete_thread(thread)
        return self.ok({"id": thread.id, "object": "thread.deleted", "deleted": True})

    # -- messages -------------------------------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        data = await _body(request)
        m = _message_in(data)
        active = thread.active_run
        if active is not None and active.active:
            raise state_error(
                f"Can't add messages to {thread.id} while a run {active.id} is active."
            )
        msg = self.store.add_message(
            thread, m.role, m.content, attachments=m.attachments, metadata=m.metadata
        )
        return self.ok(msg.to_json())

    async def list_messages(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        p = _paging(request)
        run_id = request.query.get("run_id")
        items = thread.messages
        if run_id:
            items = [m for m in items if m.run_id == run_id]
        return self.ok(page(items, render=lambda m: m.to_json(), **p))

    async def get_message(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        ident = request.match_info["message_id"]
        msg = thread.message_index.get(ident)
        if msg is None:
            raise not_found("message", ident, "message_id")
        return self.ok(msg.to_json())

    async def update_message(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        ident = request.match_info["message_id"]
        msg = thread.message_index.get(ident)
        if msg is None:
            raise not_found("message", ident, "message_id")
        data = await _body(request)
        check_keys(data, "metadata")
        metadata = _metadata(data)
        if metadata is not None:
            msg.metadata = metadata
        return self.ok(msg.to_json())

    # -- runs -----------------------------------------------------------------------------

    def _run_options(self, data: JSON, *, thread_and_run: bool) -> JSON:
        """Validate the run keys of a create-run body; returns the parsed options."""
        check_keys(data, "thread_and_run" if thread_and_run else "run")
        opts: JSON = {
            "assistant_id": _str(data, "assistant_id", required=True),
            "model": _str(data, "model"),
            "instructions": _str(data, "instructions"),
            "tools": _tools(data),
            "tool_resources": _dict(data, "tool_resources"),
            "stream": _bool(data, "stream") or False,
            "temperature": _number(data, "temperature", 0, 2),
            "top_p": _number(data, "top_p", 0, 1),
            "max_prompt_tokens": _int(data, "max_prompt_tokens", 256),
            "max_completion_tokens": _int(data, "max_completion_tokens", 256),
            "truncation_strategy": _truncation(data),
            "tool_choice": _tool_choice(data),
            "response_format": _response_format(data),
            "parallel_tool_calls": _bool(data, "parallel_tool_calls"),
            "metadata": _metadata(data),
        }
        if not thread_and_run:
            opts["additional_instructions"] = _str(data, "additional_instructions")
            opts["additional_messages"] = _messages_in(data, "additional_messages")
        return opts

    def _new_run(self, thread: ThreadRec, agent: AgentRec, opts: JSON, route: str) -> RunRec:
        instructions = opts["instructions"]
        if instructions is None:
            instructions = agent.instructions or ""
        extra = opts.get("additional_instructions")
        if extra:
            instructions = f"{instructions}\n\n{extra}" if instructions else extra
        now = time.time()
        created = int(now)
        run = RunRec(
            id=new_id("run"),
            thread_id=thread.id,
            assistant_id=agent.id,
            created_at=created,
            model=opts["model"] or agent.model,
            instructions=instructions,
            tools=opts["tools"] if opts["tools"] is not None else [dict(t) for t in agent.tools],
            expires_at=created + self.s.settings.run_lifetime,
            temperature=opts["temperature"] if opts["temperature"] is not None else 1.0,
            top_p=opts["top_p"] if opts["top_p"] is not None else 1.0,
            max_prompt_tokens=opts["max_prompt_tokens"],
            max_completion_tokens=opts["max_completion_tokens"],
            tool_choice=opts["tool_choice"] if opts["tool_choice"] is not None else "auto",
            response_format=opts["response_format"] or "auto",
            metadata=opts["metadata"] or {},
            tool_resources=opts["tool_resources"],
            parallel_tool_calls=opts["parallel_tool_calls"] is not False,
            stream=opts["stream"],
            created_at_ms=now * 1000.0,
            timing=agent.timing,
            script=agent.script,
        )
        if opts["truncation_strategy"] is not None:
            run.truncation_strategy = opts["truncation_strategy"]
        run.forced_fault = self.s.run_fault(route)
        self.store.add_run(thread, run)
        return run

    async def create_run(self, request: web.Request) -> web.StreamResponse:
        thread = self.thread(request)
        data = await _body(request)
        opts = self._run_options(data, thread_and_run=False)
        agent = self.agent(opts["assistant_id"])
        active = thread.active_run
        if active is not None and active.active:
            raise state_error(f"Thread {thread.id} already has an active run {active.id}.")
        for m in opts["additional_messages"]:
            self.store.add_message(
                thread, m.role, m.content, attachments=m.attachments, metadata=m.metadata
            )
        route = route_key(request) or ""
        run = self._new_run(thread, agent, opts, route)
        if not run.stream:
            self.engine.start(run)
            return self.ok(run.to_json())
        queue = self.engine.subscribe(run)
        self.engine.start(run)
        return await self._stream(request, run, queue, route)

    async def create_thread_and_run(self, request: web.Request) -> web.StreamResponse:
        data = await _body(request)
        opts = self._run_options(data, thread_and_run=True)
        thread_data = _dict(data, "thread") or {}
        check_keys(thread_data, "thread", "thread.")
        _messages_in(thread_data, "messages")  # validate before creating anything
        _metadata(thread_data)
        _dict(thread_data, "tool_resources")
        agent = self.agent(opts["assistant_id"])
        thread = self._new_thread(thread_data, "thread.")
        route = route_key(request) or ""
        run = self._new_run(thread, agent, opts, route)
        if not run.stream:
            self.engine.start(run)
            return self.ok(run.to_json())
        queue = self.engine.subscribe(run)
        queue.put_nowait(sse_frame("thread.created", thread.to_json()))
        self.engine.start(run)
        return await self._stream(request, run, queue, route)

    async def _stream(
        self,
        request: web.Request,
        run: RunRec,
        queue: asyncio.Queue[bytes | None],
        route: str,
    ) -> web.StreamResponse:
        fault = self.s.stream_cut(route)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        sent = 0
        try:
            await resp.prepare(request)
            while True:
                if fault is not None and sent >= max(0, fault.after_events):
                    if fault.kind == "stream_error":
                        error = {
                            "code": fault.code or "server_error",
                            "message": "Sorry, something went wrong.",
                            "param": None,
                            "type": "server_error",
                        }
                        await resp.write(sse_frame("error", {"error": error}))
                        await resp.write_eof()
                        return resp
                    if fault.kind == "stall":
                        await stall(request, self.s)
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                frame = await queue.get()
                if frame is None:
                    break
                await resp.write(frame)
                sent += 1
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away; the run goes on without it
        finally:
            self.engine.unsubscribe(run, queue)
        return resp

    async def list_runs(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        p = _paging(request)
        return self.ok(page(thread.runs, render=RunRec.to_json, **p))

    async def get_run(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        return self.ok(self.run(request, thread).to_json())

    async def update_run(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        run = self.run(request, thread)
        data = await _body(request)
        check_keys(data, "metadata")
        metadata = _metadata(data)
        if metadata is not None:
            run.metadata = metadata
        return self.ok(run.to_json())

    async def cancel_run(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        run = self.run(request, thread)
        await request.read()
        if run.status in TERMINAL or run.status == "cancelling":
            raise state_error(f"Cannot cancel run with status '{run.status}'.")
        self.engine.cancel(run)
        return self.ok(run.to_json())

    async def submit_tool_outputs(self, request: web.Request) -> web.StreamResponse:
        thread = self.thread(request)
        run = self.run(request, thread)
        data = await _body(request)
        check_keys(data, "tool_outputs")
        outputs = _list(data, "tool_outputs", required=True) or []
        stream = _bool(data, "stream") or False
        for i, item in enumerate(outputs):
            where = f"tool_outputs[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("tool_call_id"), str):
                raise bad_request(f"Invalid '{where}': needs a 'tool_call_id' string.", where)
            if item.get("output") is not None and not isinstance(item["output"], str):
                raise bad_request(f"Invalid '{where}.output': expected a string.", where)
        if run.status != "requires_action":
            raise state_error(
                f"Runs in status '{run.status}' do not accept tool outputs.", "tool_outputs"
            )
        pending = {c["id"] for c in run.pending_calls}
        given = {o["tool_call_id"] for o in outputs}
        unknown = sorted(given - pending)
        if unknown:
            raise bad_request(f"Unknown tool_call_id: {unknown[0]}.", "tool_outputs")
        missing = sorted(pending - given)
        if missing:
            raise bad_request(
                f"Expected tool outputs for call_ids {sorted(pending)}, got {sorted(given)}.",
                "tool_outputs",
            )
        route = route_key(request) or ""
        if not stream:
            self.engine.submit(run, outputs)
            return self.ok(run.to_json())
        run.stream = True
        queue = self.engine.subscribe(run)
        self.engine.submit(run, outputs)
        return await self._stream(request, run, queue, route)

    async def list_steps(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        run = self.run(request, thread)
        p = _paging(request)
        return self.ok(page(run.steps, render=lambda s: s.to_json(), **p))

    async def get_step(self, request: web.Request) -> web.Response:
        thread = self.thread(request)
        run = self.run(request, thread)
        ident = request.match_info["step_id"]
        step = next((s for s in run.steps if s.id == ident), None)
        if step is None:
            raise not_found("run step", ident, "step_id")
        return self.ok(step.to_json())

    # -- /_emulator -----------------------------------------------------------------------

    async def emu_stats(self, request: web.Request) -> web.Response:
        return self.ok(self.s.stats_json())

    async def emu_runs(self, request: web.Request) -> web.Response:
        return self.ok({"data": self.s.runs_json()})

    async def emu_reset(self, request: web.Request) -> web.Response:
        await request.read()
        self.s.reset()
        return self.ok({"reset": True})

    async def emu_faults(self, request: web.Request) -> web.Response:
        data = await _body(request)
        try:
            rule = FaultRule.from_dict(data)
        except (SettingsError, TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from None
        self.s.inject(rule)
        return self.ok({"injected": attrs.asdict(rule)})
