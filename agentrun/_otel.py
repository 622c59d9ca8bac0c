"""OpenTelemetry for agentrun: GenAI agent spans, metrics, and the request log.

Everything agentrun publishes about an invocation goes through this module, at a few named
points the driver and the transport call:

- `Telemetry.start` when an invocation starts (agent, mode, thread): it returns an `Observer`,
  or None when neither a tracer provider nor a meter provider is configured; the driver then
  does nothing more than an ``is not None`` check at the other points.
- `Observer.state` for every state transition, `Observer.end` once with the outcome.
- `http_done` after every HTTP attempt, `retry` before every retry wait (module functions,
  called by the transport): they find the invocation's observer in a context variable that the
  driver sets around each of its steps (`Observer.current`), and log at DEBUG / INFO.

Conventions followed: OpenTelemetry GenAI semantic conventions (agent spans, client metrics;
https://opentelemetry.io/docs/specs/semconv/gen-ai/), HTTP client conventions for the request
spans and `http.client.request.duration`, and Azure's ``az.service_request_id`` for the
service's request id. ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` selects the
latest conventions only; without it the attributes the official azure-ai-agents instrumentor
emits (``gen_ai.system = "az.ai.agents"``, ``gen_ai.thread.id``, ``gen_ai.thread.run.id``) are
added for tools built on them. Message content is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is true. docs/observability.md lists
every span, attribute, event and metric.

opentelemetry-api is optional (``pip install agentrun[otel]``): without it every hook is a
no-op.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentrun._credentials import env_flag, env_value
from agentrun._retry import request_id_of

if TYPE_CHECKING:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

# The API is imported on first use, not with agentrun (it costs ~20 ms of import time).
_LOADED: bool | None = None


def available() -> bool:
    """Whether opentelemetry-api is installed (imports it on the first call)."""
    global _LOADED, _context, _metrics, _propagate, _trace
    if _LOADED is None:
        try:
            from opentelemetry import context, metrics, propagate, trace
        except ImportError:  # pragma: no cover - exercised only without the extra installed
            _LOADED = False
        else:
            _context, _metrics, _propagate, _trace = context, metrics, propagate, trace
            _LOADED = True
    return _LOADED


__all__ = [
    "Observer",
    "Telemetry",
    "available",
    "extracted",
    "http_done",
    "inject",
    "job_span",
    "retry",
    "route_template",
]

logger = logging.getLogger("agentrun.transport")

SCOPE = "agentrun"
#: The value of ``gen_ai.provider.name``. The GenAI conventions list ``azure.ai.inference``
#: and ``azure.ai.openai`` for Azure; the Agent Service is neither, so agentrun names it in
#: the same scheme (the official azure-ai-agents instrumentor's ``gen_ai.system`` is
#: ``az.ai.agents``, emitted too unless the latest conventions are opted into).
PROVIDER = "azure.ai.agents"
LEGACY_SYSTEM = "az.ai.agents"
OPERATION = "invoke_agent"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: Bucket advice of the GenAI conventions for the two gen_ai.client.* histograms.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: What `gen_ai.response.finish_reasons` says for each final run state.
FINISH_REASONS = {
    "completed": "stop",
    "requires_action": "tool_calls",
    "incomplete": "length",
    "failed": "error",
    "cancelled": "cancelled",
    "expired": "expired",
}

_ID_AFTER = {
    "threads": "{thread_id}",
    "runs": "{run_id}",
    "messages": "{message_id}",
    "steps": "{step_id}",
    "assistants": "{agent_id}",
    "agents": "{agent_name}",
    "versions": "{agent_version}",
    "conversations": "{conversation_id}",
    "responses": "{response_id}",
    "items": "{item_id}",
    "files": "{file_id}",
    "vector_stores": "{vector_store_id}",
}
_NOT_IDS = frozenset(
    {"runs", "messages", "steps", "cancel", "submit_tool_outputs", "items", "versions", "files"}
)


def route_template(path: str) -> str:
    """The route of a request path, ids replaced: ``threads/{thread_id}/runs/{run_id}``."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        name = _ID_AFTER.get(parts[i - 1])
        if name is not None and parts[i] not in _NOT_IDS and not parts[i - 1].startswith("{"):
            parts[i] = name
    return "/".join(parts)


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    return request_id_of(headers) if headers else None


def _enabled_tracer_provider(given: TracerProvider | None) -> TracerProvider | None:
    provider = given if given is not None else _trace.get_tracer_provider()
    if isinstance(provider, (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)):
        return None
    return provider


def _enabled_meter_provider(given: MeterProvider | None) -> MeterProvider | None:
    provider = given if given is not None else _metrics.get_meter_provider()
    # The API's placeholders until a real provider is set: a proxy and a no-op.
    if type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        return None
    return provider


def _version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("agentrun")
    except Exception:  # pragma: no cover - running from a checkout
        return "0+unknown"


class _Pool(Protocol):
    def connections_in_use(self) -> int: ...


class _Instruments:
    """The instruments of one meter provider, shared by every client using it."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter(SCOPE, _version())
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[float(b) for b in TOKEN_BUCKETS],
        )
        self.in_flight = meter.create_up_down_counter(
            "agentrun.client.runs.in_flight",
            unit="{run}",
            description="Invocations started and not finished.",
        )
        self.state_time = meter.create_histogram(
            "agentrun.client.run.state.duration",
            unit="s",
            description="Time an invocation spent in each run state.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.http = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests (one per attempt).",
        )
        self.retries = meter.create_counter(
            "agentrun.client.retries",
            unit="{retry}",
            description="Requests repeated after a retryable failure.",
        )
        self.throttled = meter.create_counter(
            "agentrun.client.throttled",
            unit="{response}",
            description="HTTP 429 (Too Many Requests) responses.",
        )
        self.pools: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        pools = self.pools

        def connections(options: Any) -> Iterator[Any]:
            for t in list(pools):
                pool = t.pool
                if pool is not None:
                    yield _metrics.Observation(
                        pool.connections_in_use(), {"server.address": t.address}
                    )

        meter.create_observable_up_down_counter(
            "agentrun.client.connections.in_use",
            callbacks=[connections],
            unit="{connection}",
            description="Pooled HTTP connections currently serving a request or a stream.",
        )


_INSTRUMENTS: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
# Providers that cannot be weakly referenced (kept for the process's life; rare).
_INSTRUMENTS_KEPT: dict[int, tuple[Any, _Instruments]] = {}


def _instruments(provider: MeterProvider) -> _Instruments:
    """The instruments of `provider`, made once (an observable's callback registers once)."""
    try:
        inst = _INSTRUMENTS.get(provider)
        if inst is None:
            inst = _INSTRUMENTS[provider] = _Instruments(provider)
    except TypeError:
        kept = _INSTRUMENTS_KEPT.get(id(provider))
        if kept is None:
            kept = _INSTRUMENTS_KEPT[id(provider)] = (provider, _Instruments(provider))
        inst = kept[1]
    return inst


class Telemetry:
    """One client's telemetry settings: its providers (or the global ones) and its server.

    `tracer_provider` / `meter_provider` default to OpenTelemetry's global providers, looked up
    at each invocation start (so a provider set after the client was made is used). With
    neither configured, `start` returns None and nothing else is done.
    """

    def __init__(
        self,
        api_base: str,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        pool: _Pool | None = None,
    ) -> None:
        url = urllib.parse.urlsplit(api_base)
        self.address = url.hostname or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._pool = weakref.ref(pool) if pool is not None else None
        self._tracer: Tracer | None = None
        self._tracer_of: object = None

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The provider given to the client (None: OpenTelemetry's global one)."""
        return self._tracer_provider

    @property
    def pool(self) -> _Pool | None:
        return self._pool() if self._pool is not None else None

    def tracer(self) -> Tracer | None:
        """The tracer to use now, or None when no tracer provider is configured."""
        if not available():
            return None
        provider = _enabled_tracer_provider(self._tracer_provider)
        if provider is None:
            return None
        if provider is not self._tracer_of:
            self._tracer = provider.get_tracer(SCOPE, _version())
            self._tracer_of = provider
        return self._tracer

    def instruments(self) -> _Instruments | None:
        if not available():
            return None
        provider = _enabled_meter_provider(self._meter_provider)
        if provider is None:
            return None
        inst = _instruments(provider)
        if self._pool is not None:
            inst.pools.add(self)
        return inst

    def start(
        self,
        agent: str,
        mode: str,
        thread_id: str | None,
        messages: Sequence[Any] = (),
        model: str | None = None,
    ) -> Observer | None:
        """An invocation starts: its observer, or None when telemetry is off."""
        if not available():
            return None
        tracer = self.tracer()
        inst = self.instruments()
        if tracer is None and inst is None:
            return None
        return Observer(self, tracer, inst, agent, mode, thread_id, messages, model)


class Observer:
    """One invocation's span and measurements. Made by `Telemetry.start`."""

    def __init__(
        self,
        telemetry: Telemetry,
        tracer: Tracer | None,
        inst: _Instruments | None,
        agent: str,
        mode: str,
        thread_id: str | None,
        messages: Sequence[Any],
        model: str | None,
    ) -> None:
        opt_in = {v.strip() for v in (env_value(OPT_IN_ENV) or "").split(",")}
        self.latest = "gen_ai_latest_experimental" in opt_in
        self.capture = env_flag(CAPTURE_ENV)
        self.telemetry = telemetry
        self.tracer = tracer
        self.inst = inst
        self.started = time.perf_counter()
        self.wall_offset = time.time_ns() - int(time.monotonic() * 1e9)
        self._conversation: str | None = None
        self._response: str | None = None
        self.metric_attrs: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
            "server.address": telemetry.address,
            "server.port": telemetry.port,
        }
        if model:
            self.metric_attrs["gen_ai.request.model"] = model
        self.span: Span | None = None
        self.ctx: Any = None
        if tracer is not None:
            attributes: dict[str, Any] = {
                **self.metric_attrs,
                "gen_ai.agent.id": agent,
                "agentrun.mode": mode,
            }
            if not agent.startswith("asst_"):
                attributes["gen_ai.agent.name"] = agent
            if not self.latest:
                attributes["gen_ai.system"] = LEGACY_SYSTEM
            self.span = tracer.start_span(
                f"{OPERATION} {agent}", kind=_trace.SpanKind.CLIENT, attributes=attributes
            )
            self.ctx = _trace.set_span_in_context(self.span)
            self._ids(thread_id, None)
            if self.capture and messages:
                self._input(messages)
        if inst is not None:
            inst.in_flight.add(1, {"server.address": telemetry.address})

    # -- the driver's points ---------------------------------------------------------------

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make this the invocation the transport reports requests to (and the OTel parent)."""
        token = _CURRENT.set(self)
        otel_token = _context.attach(self.ctx) if self.ctx is not None else None
        try:
            yield
        finally:
            if otel_token is not None:
                _context.detach(otel_token)
            _CURRENT.reset(token)

    def state(
        self,
        previous: str,
        state: str,
        at: float,
        cause: str,
        thread_id: str | None,
        run_id: str | None,
    ) -> None:
        """A state transition at `at` (monotonic seconds, the driver's clock)."""
        span = self.span
        if span is None:
            return
        self._ids(thread_id, run_id)
        span.add_event(
            "agentrun.run.state",
            {
                "agentrun.run.state": state,
                "agentrun.run.previous_state": previous,
                "agentrun.run.cause": cause,
            },
            timestamp=self.wall_offset + int(at * 1e9),
        )

    def end(self, machine: Any, result: Any, error: BaseException | str | None) -> None:
        """The invocation is over: `result` (a RunResult) or `error`; record and end."""
        state = getattr(getattr(machine, "state", None), "value", None)
        if result is None and isinstance(error, BaseException):
            result = getattr(error, "result", None)
        usage = getattr(result, "usage", None)
        error_type = _error_type(error) if error is not None else None
        attrs = self.metric_attrs
        if error_type is not None:
            attrs = {**attrs, "error.type": error_type}
        inst = self.inst
        if inst is not None:
            inst.in_flight.add(-1, {"server.address": self.telemetry.address})
            inst.duration.record(time.perf_counter() - self.started, attrs)
            if usage is not None:
                inst.tokens.record(usage.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
                inst.tokens.record(
                    usage.completion_tokens, {**attrs, "gen_ai.token.type": "output"}
                )
            if machine is not None:
                for st, seconds in machine.durations().items():
                    inst.state_time.record(
                        seconds,
                        {"agentrun.run.state": st.value, "server.address": attrs["server.address"]},
                    )
        span = self.span
        if span is None:
            return
        if machine is not None:
            self._ids(machine.thread_id, machine.run_id)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if state is not None:
            span.set_attribute("agentrun.run.state", state)
            if state in FINISH_REASONS and (error is None or result is not None):
                span.set_attribute("gen_ai.response.finish_reasons", [FINISH_REASONS[state]])
        rid = getattr(result, "request_id", None)
        if rid:
            span.set_attribute("az.service_request_id", rid)
        if result is not None and self.capture:
            self._output(result, state)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            description = str(error) if isinstance(error, BaseException) else error_type
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, description))
            if isinstance(error, Exception):
                span.record_exception(error)
        span.end()

    # -- the transport's points ------------------------------------------------------------

    def http(
        self,
        method: str,
        route: str,
        status: int | None,
        attempt: int,
        request_id: str | None,
        started: float,
        elapsed: float,
        error_type: str | None,
    ) -> None:
        t = self.telemetry
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.template": route,
            "server.address": t.address,
            "server.port": t.port,
        }
        if status is not None:
            attrs["http.response.status_code"] = status
        if error_type is None and status is not None and status >= 400:
            error_type = str(status)
        if error_type is not None:
            attrs["error.type"] = error_type
        inst = self.inst
        if inst is not None:
            inst.http.record(elapsed, attrs)
            if status == 429:
                inst.throttled.add(1, {"server.address": t.address})
        if self.tracer is None:
            return
        span_attrs = dict(attrs)
        if attempt > 1:
            span_attrs["http.request.resend_count"] = attempt - 1
        if request_id:
            span_attrs["az.service_request_id"] = request_id
        start_ns = self.wall_offset + int(started * 1e9)
        span = self.tracer.start_span(
            f"{method} {route}",
            context=self.ctx,
            kind=_trace.SpanKind.CLIENT,
            attributes=span_attrs,
            start_time=start_ns,
        )
        if error_type is not None:
            span.set_status(_trace.Status(_trace.StatusCode.ERROR))
        span.end(end_time=start_ns + int(elapsed * 1e9))

    def retry(
        self, method: str, route: str, status: int | None, reason: str, wait: float, attempt: int
    ) -> None:
        what = str(status) if status is not None else "connection"
        if self.inst is not None:
            self.inst.retries.add(
                1,
                {
                    "http.request.method": method,
                    "url.template": route,
                    "error.type": what,
                    "server.address": self.telemetry.address,
                },
            )
        if self.span is not None:
            self.span.add_event(
                "agentrun.retry",
                {
                    "http.request.method": method,
                    "url.template": route,
                    "error.type": what,
                    "agentrun.retry.attempt": attempt,
                    "agentrun.retry.wait": wait,
                    "agentrun.retry.reason": reason,
                },
            )

    # -- helpers -----------------------------------------------------------------------------

    def _ids(self, thread_id: str | None, run_id: str | None) -> None:
        span = self.span
        assert span is not None
        if thread_id and thread_id != self._conversation:
            span.set_attribute("gen_ai.conversation.id", thread_id)
            if not self.latest:
                span.set_attribute("gen_ai.thread.id", thread_id)
            self._conversation = thread_id
        if run_id and run_id != self._response:
            span.set_attribute("gen_ai.response.id", run_id)
            if not self.latest:
                span.set_attribute("gen_ai.thread.run.id", run_id)
            self._response = run_id

    def _input(self, messages: Sequence[Any]) -> None:
        span = self.span
        assert span is not None
        if self.latest:
            body = [{"role": m.role, "parts": _parts(m.content)} for m in messages]
            span.set_attribute("gen_ai.input.messages", json.dumps(body, ensure_ascii=False))
            return
        for m in messages:
            span.add_event(
                f"gen_ai.{m.role}.message",
                {"gen_ai.event.content": json.dumps({"content": m.content}, ensure_ascii=False)},
            )

    def _output(self, result: Any, state: str | None) -> None:
        span = self.span
        assert span is not None
        parts: list[dict[str, Any]] = []
        text = getattr(result, "text", "")
        if text:
            parts.append({"type": "text", "content": text})
        for call in getattr(result, "tool_calls", ()):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        reason = FINISH_REASONS.get(state or "", "stop")
        if self.latest:
            body = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
            span.set_attribute("gen_ai.output.messages", json.dumps(body, ensure_ascii=False))
            return
        span.add_event(
            "gen_ai.choice",
            {
                "gen_ai.event.content": json.dumps(
                    {
                        "finish_reason": reason,
                        "message": {"content": text, "tool_calls": parts[1:] if text else parts},
                    },
                    ensure_ascii=False,
                )
            },
        )


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    out: list[dict[str, Any]] = []
    for part in content if isinstance(content, (list, tuple)) else ():
        if isinstance(part, Mapping) and part.get("type") == "text":
            out.append({"type": "text", "content": part.get("text", "")})
        elif isinstance(part, Mapping):
            out.append({"type": str(part.get("type", "unknown"))})
    return out


def _error_type(error: BaseException | str) -> str:
    """A low-cardinality error identifier: the run's error code, else the exception's class."""
    if isinstance(error, str):
        return error
    code = getattr(error, "code", None)
    if (
        isinstance(code, str)
        and code
        and getattr(error, "run_id", None) is not None
        and (type(error).__name__.startswith("Run"))
    ):
        return code
    name = type(error).__name__
    if name == "CancelledError":
        return "cancelled"
    return name


_CURRENT: contextvars.ContextVar[Observer | None] = contextvars.ContextVar(
    "agentrun_observer", default=None
)
_NULL = contextlib.nullcontext()


def current(obs: Observer | None) -> contextlib.AbstractContextManager[None]:
    """Around a driver step: `obs` receives the transport's reports (no-op for None)."""
    return _NULL if obs is None else obs.current()


def http_done(
    method: str,
    path: str,
    status: int | None,
    attempt: int,
    headers: Mapping[str, str] | None,
    started: float,
    error: BaseException | None = None,
) -> None:
    """The transport finished one HTTP attempt (response headers in, or it failed).

    `started` is the `time.monotonic()` of the attempt's start. Logged at DEBUG on the
    ``agentrun.transport`` logger (method, route template, status, attempt, request id,
    elapsed; never a URL query, header or body), and reported to the current invocation.
    """
    obs = _CURRENT.get()
    debug = logger.isEnabledFor(logging.DEBUG)
    if obs is None and not debug:
        return
    elapsed = time.monotonic() - started
    route = route_template(path)
    rid = _request_id(headers)
    error_type = type(error).__name__ if error is not None else None
    if debug:
        logger.debug(
            "%s %s -> %s attempt=%d request_id=%s elapsed=%.3fs",
            method,
            route,
            status if status is not None else error_type,
            attempt,
            rid or "-",
            elapsed,
        )
    if obs is not None:
        obs.http(method, route, status, attempt, rid, started, elapsed, error_type)


def retry(
    method: str, path: str, status: int | None, reason: str, wait: float, attempt: int
) -> None:
    """The transport will retry after `wait` seconds: one INFO line, and the current span."""
    route = route_template(path)
    logger.info(
        "%s %s: retrying (attempt %d) in %.3fs: %s", method, route, attempt + 1, wait, reason
    )
    obs = _CURRENT.get()
    if obs is not None:
        obs.retry(method, route, status, reason, wait, attempt)


# -- public helpers (agentrun.otel) -------------------------------------------------------------


@contextlib.contextmanager
def job_span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[Span | None]:
    """A span around a job (a batch, a Ray task, ...), current while the block runs.

    Invocations made inside the block are its children, so one job is one trace (or one
    subtree). Yields the span, or None when no tracer provider is configured (or the
    opentelemetry-api is missing): then it costs nothing. An exception leaving the block is
    recorded on the span and re-raised.
    """
    if not available():
        yield None
        return
    provider = _enabled_tracer_provider(tracer_provider)
    if provider is None:
        yield None
        return
    tracer = provider.get_tracer(SCOPE, _version())
    with tracer.start_as_current_span(
        name, kind=_trace.SpanKind.INTERNAL, attributes=dict(attributes or {})
    ) as span:
        yield span


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``).

    Send the dict with work going to another process (a Ray task, a queue message) and open
    `extracted(carrier)` there: the work's spans join this trace. Empty without the API.
    """
    out: dict[str, str] = {} if carrier is None else carrier
    if available():
        _propagate.inject(out)
    return out


@contextlib.contextmanager
def extracted(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context in `carrier` (W3C ``traceparent`` headers) current."""
    if not carrier or not available():
        yield
        return
    ctx = _propagate.extract(carrier)
    token = _context.attach(ctx)
    try:
        yield
    finally:
        _context.detach(token)
