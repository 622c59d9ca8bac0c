"""OpenTelemetry and logging: the spans, events and metrics of real runs against the emulator.

Every test gets its own SDK providers (an in-memory span exporter and an in-memory metric
reader), passed to the client explicitly: OpenTelemetry's global providers are never set here.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agentrun
from agentrun import AsyncClient, _otel
from agentrun._batch import BatchConfig, BatchRunner
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing
from agentrun.proxy import ProxyServer, parse_config

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001, cancel_delay=0.01)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class Otel:
    """One test's SDK providers and what they collected."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def invocations(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith("invoke_agent")]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        pid = parent.context.span_id
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id == pid]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    try:
        yield o
    finally:
        o.close()


@pytest.fixture
def emu(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory(EmulatorSettings(timing=FAST))


@pytest.fixture
def no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_otel.OPT_IN_ENV, raising=False)
    monkeypatch.delenv(_otel.CAPTURE_ENV, raising=False)


@pytest.fixture
async def client(emu: Emulator, otel: Otel, no_opt_in: None) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        emu.endpoint,
        api_key=emu.api_key,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    ) as c:
        yield c


def _state_events(span: ReadableSpan) -> list[str]:
    return [
        str(e.attributes["agentrun.run.state"])
        for e in span.events
        if e.name == "agentrun.run.state" and e.attributes
    ]


def _attrs(point: Any) -> dict[str, Any]:
    return dict(point.attributes)


def _all_strings(spans: Sequence[ReadableSpan]) -> list[str]:
    out: list[str] = []
    for s in spans:
        out.append(s.name)
        out.extend(str(v) for v in (s.attributes or {}).values())
        for e in s.events:
            out.append(e.name)
            out.extend(str(v) for v in (e.attributes or {}).values())
        if s.status.description:
            out.append(s.status.description)
    return out


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_completed_run_span_events_children_and_metrics(
    client: AsyncClient, emu: Emulator, otel: Otel, mode: str
) -> None:
    """A completed run is one `invoke_agent` client span with the GenAI attributes (ids, usage,
    finish reason, server), one event per state transition in order with its time, one child
    span per HTTP request with the service's request id, and the GenAI and agentrun metrics."""
    result = await client.run("asst_abc123", "Hello there", mode=mode)  # type: ignore[arg-type]
    assert result.state is State.COMPLETED and result.usage is not None
    (span,) = otel.invocations()
    assert span.name == "invoke_agent asst_abc123"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    a = dict(span.attributes or {})
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.provider.name"] == "azure.ai.agents"
    assert a["gen_ai.agent.id"] == "asst_abc123"
    assert a["gen_ai.conversation.id"] == result.thread_id
    assert a["gen_ai.response.id"] == result.run_id
    assert a["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == int(emu.url.rsplit(":", 1)[1])
    assert a["agentrun.mode"] == mode
    assert a["agentrun.run.state"] == "completed"
    assert a["az.service_request_id"] == result.request_id
    assert "error.type" not in a
    # Legacy attributes of the official instrumentor (no opt-in to the latest conventions).
    assert a["gen_ai.system"] == "az.ai.agents"
    assert a["gen_ai.thread.id"] == result.thread_id
    # Message content is not recorded unless asked for.
    assert "gen_ai.input.messages" not in a
    assert not [e for e in span.events if e.name.startswith("gen_ai.")]

    assert _state_events(span) == [t.state.value for t in result.history[1:]]
    times = [e.timestamp for e in span.events if e.name == "agentrun.run.state"]
    assert times == sorted(times)
    assert span.start_time is not None and span.end_time is not None
    assert all(span.start_time <= t <= span.end_time for t in times)

    children = otel.children(span)
    assert len(children) == result.requests
    first = min(children, key=lambda s: s.start_time or 0)
    assert first.name == "POST threads/runs"
    assert first.kind is SpanKind.CLIENT
    ca = dict(first.attributes or {})
    assert ca["http.request.method"] == "POST"
    assert ca["url.template"] == "threads/runs"
    assert ca["http.response.status_code"] == 200
    assert ca["az.service_request_id"] == result.request_id
    if mode == "poll":
        names = {c.name for c in children}
        assert "GET threads/{thread_id}/runs/{run_id}" in names
        assert "GET threads/{thread_id}/messages" in names

    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert list(duration.explicit_bounds) == list(_otel.DURATION_BUCKETS)
    assert _attrs(duration) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "azure.ai.agents",
        "server.address": "127.0.0.1",
        "server.port": a["server.port"],
    }
    tokens = {_attrs(p)["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == result.usage.prompt_tokens
    assert tokens["output"].sum == result.usage.completion_tokens
    assert list(tokens["input"].explicit_bounds) == [float(b) for b in _otel.TOKEN_BUCKETS]
    (in_flight,) = otel.points("agentrun.client.runs.in_flight")
    assert in_flight.value == 0
    states = {
        _attrs(p)["agentrun.run.state"] for p in otel.points("agentrun.client.run.state.duration")
    }
    assert states == {s.value for s in result.durations}
    http = otel.points("http.client.request.duration")
    assert sum(p.count for p in http) == result.requests
    assert {_attrs(p)["http.response.status_code"] for p in http} == {200}
    (pool,) = otel.points("agentrun.client.connections.in_use")
    assert pool.value == 0  # nothing in flight once the run returned
    assert not otel.points("agentrun.client.retries")


async def test_runs_in_flight_and_pool_while_a_run_is_going(
    client: AsyncClient, otel: Otel
) -> None:
    """While a streamed run is going, the in-flight gauge says 1 and its stream holds one
    pooled connection; both go back to 0 when it ends."""
    async with client.stream("asst_abc123", "Hi [emulator:sleep=0.5]") as events:
        async for event in events:
            if isinstance(event, agentrun.StateChanged) and event.state is State.IN_PROGRESS:
                (flying,) = otel.points("agentrun.client.runs.in_flight")
                assert flying.value == 1
                (pool,) = otel.points("agentrun.client.connections.in_use")
                assert pool.value == 1
    (flying,) = otel.points("agentrun.client.runs.in_flight")
    assert flying.value == 0


async def test_failed_run_records_the_error(client: AsyncClient, otel: Otel) -> None:
    """A run that ends failed: the span has ERROR status, `error.type` = the run's error code,
    the finish reason "error", the exception event, and the duration metric the error type."""
    with pytest.raises(agentrun.RunFailedError) as info:
        await client.run("asst_abc123", "Hi [emulator:fail=server_error]", mode="poll")
    (span,) = otel.invocations()
    a = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert a["error.type"] == "server_error"
    assert a["gen_ai.response.finish_reasons"] == ("error",)
    assert a["gen_ai.response.id"] == info.value.run_id
    assert a["agentrun.run.state"] == "failed"
    assert _state_events(span)[-1] == "failed"
    (exc_event,) = [e for e in span.events if e.name == "exception"]
    assert (exc_event.attributes or {})["exception.type"].endswith("RunFailedError")
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert _attrs(duration)["error.type"] == "server_error"
    (in_flight,) = otel.points("agentrun.client.runs.in_flight")
    assert in_flight.value == 0


async def test_cancelled_run_by_timeout(client: AsyncClient, emu: Emulator, otel: Otel) -> None:
    """An invocation that times out: error.type "timeout", the run's cancellation is a child
    request of the span and its states are events; the run is cancelled on the service."""
    with pytest.raises(agentrun.APITimeoutError) as info:
        await client.run("asst_abc123", "Hi [emulator:sleep=5]", mode="poll", timeout=0.4)
    (span,) = otel.invocations()
    a = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert a["error.type"] == "timeout"
    assert a["gen_ai.response.id"] == info.value.run_id
    assert "gen_ai.response.finish_reasons" not in a
    assert "cancelling" in _state_events(span) or "cancelled" in _state_events(span)
    names = [c.name for c in otel.children(span)]
    assert "POST threads/{thread_id}/runs/{run_id}/cancel" in names
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert _attrs(duration)["error.type"] == "timeout"
    run = next(r for r in emu.runs() if r["id"] == info.value.run_id)
    assert run["status"] in ("cancelling", "cancelled")


async def test_caller_cancellation_is_recorded(client: AsyncClient, otel: Otel) -> None:
    """A caller's cancel scope ending the invocation: error.type "cancelled", span ended."""
    with anyio.move_on_after(0.3):
        await client.run("asst_abc123", "Hi [emulator:sleep=5]", mode="poll")
    (span,) = otel.invocations()
    assert (span.attributes or {})["error.type"] == "cancelled"
    assert span.status.status_code is StatusCode.ERROR


async def test_tool_calling_run(
    client: AsyncClient, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopping in requires_action has finish reason "tool_calls"; the follow-up with
    tool outputs is a second span on the same conversation and response, with a
    submit_tool_outputs request. With content capture on and the latest conventions, the
    prompt, the tool call and the reply are recorded as gen_ai.input/output.messages."""
    monkeypatch.setenv(_otel.CAPTURE_ENV, "true")
    monkeypatch.setenv(_otel.OPT_IN_ENV, "http,gen_ai_latest_experimental")
    first = await client.run(
        "asst_abc123", "Use get_weather for the weather in Paris", tools=[WEATHER_TOOL]
    )
    assert first.state is State.REQUIRES_ACTION
    call = first.tool_calls[0]
    second = await client.run(
        "asst_abc123", thread_id=first.thread_id, tool_outputs={call.id: "22 degrees"}
    )
    one, two = sorted(otel.invocations(), key=lambda s: s.start_time or 0)
    a1, a2 = dict(one.attributes or {}), dict(two.attributes or {})
    assert a1["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert _state_events(one)[-1] == "requires_action"
    assert a2["gen_ai.response.finish_reasons"] == ("stop",)
    assert a1["gen_ai.conversation.id"] == a2["gen_ai.conversation.id"] == first.thread_id
    assert a1["gen_ai.response.id"] == a2["gen_ai.response.id"] == first.run_id
    assert "POST threads/{thread_id}/runs/{run_id}/submit_tool_outputs" in {
        c.name for c in otel.children(two)
    }
    # Latest conventions only: no legacy attributes.
    assert "gen_ai.system" not in a1 and "gen_ai.thread.id" not in a1
    inp = json.loads(str(a1["gen_ai.input.messages"]))
    assert inp == [
        {
            "role": "user",
            "parts": [{"type": "text", "content": "Use get_weather for the weather in Paris"}],
        }
    ]
    out = json.loads(str(a1["gen_ai.output.messages"]))
    assert out[0]["finish_reason"] == "tool_calls"
    (tool_part,) = [p for p in out[0]["parts"] if p["type"] == "tool_call"]
    assert tool_part["id"] == call.id and tool_part["name"] == "get_weather"
    assert json.loads(tool_part["arguments"]) == json.loads(call.arguments)
    out2 = json.loads(str(a2["gen_ai.output.messages"]))
    assert out2[0]["parts"][0]["content"] == second.text


async def test_legacy_content_events(
    client: AsyncClient, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content capture without the opt-in: the azure-ai-agents style events (a
    gen_ai.user.message per input message and a gen_ai.choice with the reply)."""
    monkeypatch.setenv(_otel.CAPTURE_ENV, "True")
    result = await client.run("asst_abc123", "Hello there")
    (span,) = otel.invocations()
    by_name = {e.name: e for e in span.events}
    user = json.loads(
        str((by_name["gen_ai.user.message"].attributes or {})["gen_ai.event.content"])
    )
    assert user == {"content": "Hello there"}
    choice = json.loads(str((by_name["gen_ai.choice"].attributes or {})["gen_ai.event.content"]))
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == result.text


async def test_retries_and_429s(
    client: AsyncClient, emu: Emulator, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 then success: the 429 attempt is its own child span, the retry a span event and
    one INFO log line with its reason and wait, counted as a retry and a throttled response."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="status", status=429, retry_after=0.05))
    with caplog.at_level(logging.INFO, logger="agentrun"):
        result = await client.run("asst_abc123", "Hi", mode="poll")
    assert result.state is State.COMPLETED
    (span,) = otel.invocations()
    creates = [c for c in otel.children(span) if c.name == "POST threads/runs"]
    assert sorted((c.attributes or {})["http.response.status_code"] for c in creates) == [200, 429]
    retried = next(c for c in creates if (c.attributes or {})["http.response.status_code"] == 200)
    assert (retried.attributes or {})["http.request.resend_count"] == 1
    (event,) = [e for e in span.events if e.name == "agentrun.retry"]
    ea = dict(event.attributes or {})
    assert ea["error.type"] == "429" and ea["url.template"] == "threads/runs"
    assert ea["agentrun.retry.wait"] >= 0.05
    (retry_count,) = otel.points("agentrun.client.retries")
    assert retry_count.value == 1 and _attrs(retry_count)["error.type"] == "429"
    (throttled,) = otel.points("agentrun.client.throttled")
    assert throttled.value == 1
    lines = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert "POST threads/runs" in lines[0].getMessage() and "429" in lines[0].getMessage()


async def test_debug_log_has_one_line_per_request(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, each request is one line with method, route template, status, attempt,
    request id and elapsed time (no tracer needed)."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with caplog.at_level(logging.DEBUG, logger="agentrun"):
            result = await client.run("asst_abc123", "Hi", mode="poll")
    lines = [r.getMessage() for r in caplog.records if r.name == "agentrun.transport"]
    assert len(lines) == result.requests
    assert lines[0].startswith("POST threads/runs -> 200 attempt=1 request_id=")
    assert f"request_id={result.request_id} " in lines[0]
    assert "elapsed=" in lines[0]
    assert any(line.startswith("GET threads/{thread_id}/runs/{run_id} -> 200") for line in lines)


async def _secret_run(client: AsyncClient, otel: Otel, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.DEBUG, logger="agentrun"):
        await client.run("asst_abc123", "Hi", mode="poll")
        await client.run("asst_abc123", "Hi", mode="stream")
        with pytest.raises(agentrun.RunFailedError):
            await client.run("asst_abc123", "Hi [emulator:fail=server_error]")
    return await client._tokens.get_token()


async def test_no_secret_with_an_api_key(
    emulator_factory: Callable[..., Emulator],
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an api key, content capture on and DEBUG logging, the key appears in no log
    record and no span attribute or event."""
    monkeypatch.setenv(_otel.CAPTURE_ENV, "true")
    key = "sk-very-secret-key-4711"
    emu = emulator_factory(EmulatorSettings(timing=FAST, api_keys=(key,)))
    async with AsyncClient(
        emu.endpoint, api_key=key, tracer_provider=otel.tracer_provider
    ) as client:
        token = await _secret_run(client, otel, caplog)
    assert token == key
    texts = _all_strings(otel.spans())
    assert len(otel.invocations()) == 3
    for record in caplog.records:
        texts.append(record.getMessage())
    assert not [t for t in texts if key in t]


async def test_no_secret_with_a_service_principal(
    emulator_factory: Callable[..., Emulator],
    otel: Otel,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a service principal (real azure-identity over TLS), neither the client secret nor
    the access token appears in any log record, span attribute or event."""
    monkeypatch.setenv(_otel.CAPTURE_ENV, "true")
    emu = emulator_factory(EmulatorSettings(timing=FAST), tls=True)
    async with AsyncClient(
        emu.endpoint,
        tenant_id=emu.tenant_id,
        client_id=emu.client_id,
        client_secret=emu.client_secret,
        authority=emu.authority,
        verify=str(emu.ca_path),
        tracer_provider=otel.tracer_provider,
    ) as client:
        token = await _secret_run(client, otel, caplog)
    texts = _all_strings(otel.spans()) + [r.getMessage() for r in caplog.records]
    assert len(otel.invocations()) == 3
    assert len(token) > 8
    for secret in (emu.client_secret, token):
        assert not [t for t in texts if secret in t]


async def test_no_provider_means_no_observer(emu: Emulator) -> None:
    """Without providers (none given, OpenTelemetry's globals unset), an invocation gets no
    observer: the hooks do nothing."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        assert client._telemetry.start("asst_abc123", "poll", None) is None
        result = await client.run("asst_abc123", "Hi")
    assert result.state is State.COMPLETED
    with _otel.job_span("job") as span:
        assert span is None


async def test_proxy_propagates_traceparent(emu: Emulator, otel: Otel, no_opt_in: None) -> None:
    """A request to the proxy with a W3C traceparent: the invoke_agent span joins that trace,
    as a child of the caller's span."""
    text = (
        "model_list:\n"
        "  - model_name: agent\n"
        "    litellm_params:\n"
        "      model: azure_ai/agents/asst_abc123\n"
        f"      api_base: {emu.endpoint}\n"
        "      api_key: os.environ/AZURE_AD_TOKEN\n"
    )
    config = parse_config(text, env={"AZURE_AD_TOKEN": emu.api_key})
    server = ProxyServer(
        config,
        host="127.0.0.1",
        port=0,
        allow_unauthenticated=True,
        tracer_provider=otel.tracer_provider,
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_id = "00f067aa0ba902b7"
    await server.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30
        ) as oa:
            reply = await oa.chat.completions.create(
                model="agent",
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            )
            # Without a traceparent, the span starts a trace of its own.
            await oa.chat.completions.create(
                model="agent", messages=[{"role": "user", "content": "Hi"}]
            )
    finally:
        await server.stop()
    assert reply.choices[0].message.content
    joined, alone = sorted(otel.invocations(), key=lambda s: s.start_time or 0)
    assert format(joined.context.trace_id, "032x") == trace_id
    assert joined.parent is not None and format(joined.parent.span_id, "016x") == parent_id
    assert joined.parent.is_remote
    assert format(alone.context.trace_id, "032x") != trace_id
    assert alone.parent is None


async def test_batch_is_one_trace_with_a_span_per_item(
    emu: Emulator,
    otel: Otel,
    no_opt_in: None,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`agentrun batch`: one agentrun.batch span, an agentrun.batch.item span per line (with
    its custom_id) as its child, and each item's invoke_agent span under its item; the
    `agentrun` logger says at INFO what the batch does (start and end)."""
    inp = tmp_path / "in.jsonl"
    lines = [
        {"custom_id": "a", "model": "asst_abc123", "prompt": "Hi"},
        {"custom_id": "b", "model": "asst_abc123", "prompt": "Hi [emulator:fail=server_error]"},
        {"custom_id": "c", "model": "asst_abc123", "prompt": "Hello"},
    ]
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = BatchConfig(input_path=inp, output_path=tmp_path / "out.jsonl", concurrency=2)
    async with AsyncClient(
        emu.endpoint, api_key=emu.api_key, tracer_provider=otel.tracer_provider
    ) as client:
        with caplog.at_level(logging.INFO, logger="agentrun"):
            summary = await BatchRunner(config).run(client)
    assert summary is not None
    (job,) = [s for s in otel.spans() if s.name == "agentrun.batch"]
    assert job.parent is None
    items = otel.children(job)
    assert sorted((s.attributes or {})["agentrun.batch.custom_id"] for s in items) == [
        "a",
        "b",
        "c",
    ]
    assert all(s.name == "agentrun.batch.item" for s in items)
    for item in items:
        (inv,) = otel.children(item)
        assert inv.name == "invoke_agent asst_abc123"
        assert inv.context.trace_id == job.context.trace_id
    failed = next(s for s in items if (s.attributes or {})["agentrun.batch.custom_id"] == "b")
    assert failed.status.status_code is StatusCode.ERROR
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("3 to run" in m for m in info)
    assert any("2 succeeded, 1 failed, 0 not run" in m for m in info)


async def test_public_helpers_carry_a_trace_across_a_boundary(otel: Otel) -> None:
    """`inject()` inside a job span gives W3C headers; `extracted()` elsewhere makes spans
    started there children of that job (how a Ray task joins its driver's trace)."""
    from agentrun import otel as public

    with public.job_span("driver", tracer_provider=otel.tracer_provider) as span:
        assert span is not None
        carrier = public.inject()
    assert carrier["traceparent"].startswith("00-")
    with (
        public.extracted(carrier),
        public.job_span("worker", tracer_provider=otel.tracer_provider) as worker,
    ):
        assert worker is not None
    driver, work = sorted(otel.spans(), key=lambda s: s.start_time or 0)
    assert work.parent is not None and work.parent.span_id == driver.context.span_id
    assert work.context.trace_id == driver.context.trace_id


def test_route_templates() -> None:
    """Request paths become low-cardinality route templates (ids replaced, actions kept)."""
    t = _otel.route_template
    assert t("threads/runs") == "threads/runs"
    assert t("threads/thread_1/runs/run_2/cancel") == "threads/{thread_id}/runs/{run_id}/cancel"
    assert t("/threads/thread_1/messages") == "threads/{thread_id}/messages"
    assert (
        t("threads/thread_1/runs/run_2/submit_tool_outputs")
        == "threads/{thread_id}/runs/{run_id}/submit_tool_outputs"
    )
    assert t("assistants/asst_1") == "assistants/{agent_id}"
    assert t("openai/conversations/conv_1/items") == "openai/conversations/{conversation_id}/items"


def test_sync_client_span_joins_the_callers_trace(emu: Emulator, otel: Otel) -> None:
    """The sync `Client` (runs on agentrun's portal thread) takes the providers too, and its
    invocation span is a child of the span current in the calling thread."""
    tracer = otel.tracer_provider.get_tracer("test")
    with (
        agentrun.Client(
            emu.endpoint, api_key=emu.api_key, tracer_provider=otel.tracer_provider
        ) as client,
        tracer.start_as_current_span("caller") as caller,
    ):
        result = client.run("asst_abc123", "Hi")
    (span,) = otel.invocations()
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert (span.attributes or {})["gen_ai.response.id"] == result.run_id


async def test_batch_logs_its_progress_at_info(
    emu: Emulator,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a batch runs, the `agentrun.batch` logger reports its progress at INFO every
    LOG_INTERVAL (made short here): done, failed, in progress, rate."""
    from agentrun import _batch

    monkeypatch.setattr(_batch, "LOG_INTERVAL", 0.05)
    inp = tmp_path / "in.jsonl"
    items = [{"custom_id": "slow", "model": "asst_abc123", "prompt": "Hi [emulator:sleep=1.5]"}]
    items.append({"custom_id": "x", "model": "asst_abc123", "prompt": "Hello"})
    inp.write_text("".join(json.dumps(x) + "\n" for x in items))
    config = BatchConfig(input_path=inp, output_path=tmp_path / "out.jsonl", concurrency=2)
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with caplog.at_level(logging.INFO, logger="agentrun"):
            await BatchRunner(config).run(client)
    progress = [
        r.getMessage()
        for r in caplog.records
        if r.name == "agentrun.batch" and "in progress" in r.getMessage()
    ]
    assert progress
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "agentrun.batch")
    assert any("/2 done (0 failed), 1 in progress" in m for m in progress)


async def test_without_the_api_everything_is_a_no_op(
    emu: Emulator, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if opentelemetry-api were not installed: even with providers given, no observer is
    made, runs work, and the public helpers do nothing."""
    monkeypatch.setattr(_otel, "_LOADED", False)
    async with AsyncClient(
        emu.endpoint, api_key=emu.api_key, tracer_provider=otel.tracer_provider
    ) as client:
        assert client._telemetry.start("asst_abc123", "poll", None) is None
        result = await client.run("asst_abc123", "Hi")
    assert result.state is State.COMPLETED
    assert otel.spans() == []
    with _otel.job_span("job", tracer_provider=otel.tracer_provider) as span:
        assert span is None
        assert _otel.inject() == {}
    with _otel.extracted(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    ):
        pass
    assert otel.spans() == []
