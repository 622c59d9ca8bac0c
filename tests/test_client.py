"""AsyncClient against the real emulator over real sockets: modes, outcomes, faults, scale."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import agentrun
from agentrun import AsyncClient
from agentrun._machine import State
from agentrun._results import RunFinished, StateChanged, TextDelta, ToolCallDelta
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001)
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


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as c:
        yield c


def _runs(emu: Emulator) -> list[dict[str, Any]]:
    return list(emu.runs())


@pytest.mark.parametrize("mode", ["stream", "poll", "auto"])
async def test_new_thread_completes_in_every_mode(client: AsyncClient, mode: str) -> None:
    """Each mode runs a new thread to completion with the right answer, usage and history."""
    result = await client.run("asst_def456", "What is 25 * 4?", mode=mode)  # type: ignore[arg-type]
    assert result.state is State.COMPLETED
    assert "100" in result.text
    assert result.thread_id.startswith("thread_")
    assert result.run_id.startswith("run_")
    assert result.usage is not None
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.usage.completion_tokens > 0
    states = [t.state for t in result.history]
    assert states[0] is State.PENDING
    assert states[-1] is State.COMPLETED
    assert State.RUN_QUEUED in states
    assert sum(result.durations.values()) == pytest.approx(result.elapsed)
    assert result.messages
    assert all(m.role == "assistant" and m.run_id == result.run_id for m in result.messages)


async def test_stream_mode_costs_one_request_new_and_continued(
    client: AsyncClient, emu: Emulator
) -> None:
    """Streaming: one HTTP request for a new thread, and one to continue it."""
    before = emu.stats()["requests_total"]
    first = await client.run("asst_abc123", "My name is Alice", mode="stream")
    assert first.requests == 1
    second = await client.run(
        "asst_abc123", "What's my name?", thread_id=first.thread_id, mode="stream"
    )
    assert second.requests == 1
    assert "Alice" in second.text
    assert second.thread_id == first.thread_id
    assert emu.stats()["requests_total"] - before == 2
    reqs = emu.stats()["requests"]
    assert reqs["POST /threads/runs"]["200"] >= 1
    assert reqs["POST /threads/{thread_id}/runs"]["200"] >= 1


async def test_poll_mode_continues_thread(client: AsyncClient) -> None:
    """Polling keeps thread context too: the name given earlier is remembered."""
    first = await client.run("asst_abc123", "My name is Bob", mode="poll")
    second = await client.run(
        "asst_abc123", "What's my name?", thread_id=first.thread_id, mode="poll"
    )
    assert "Bob" in second.text
    assert second.run_id != first.run_id


async def test_message_list_input_and_instructions(client: AsyncClient) -> None:
    """A list of user/assistant messages seeds the thread; instructions shape the reply."""
    long = await client.run(
        "asst_abc123",
        [
            {"role": "user", "content": "My name is Carol"},
            {"role": "assistant", "content": "Hello Carol"},
            {"role": "user", "content": "Tell me about the history of the river Thames"},
        ],
    )
    short = await client.run(
        "asst_abc123",
        "Tell me about the history of the river Thames",
        instructions="Be concise.",
    )
    assert len(short.text) < len(long.text)


@pytest.mark.parametrize("mode", ["stream", "poll"])
@pytest.mark.parametrize(
    ("directive", "error", "code"),
    [
        ("[emulator:fail=server_error]", agentrun.RunFailedError, "server_error"),
        ("[emulator:fail=rate_limit_exceeded]", agentrun.RunFailedError, "rate_limit_exceeded"),
        ("[emulator:expire]", agentrun.RunExpiredError, None),
        ("[emulator:incomplete]", agentrun.RunIncompleteError, "max_completion_tokens"),
    ],
)
async def test_run_outcome_errors_carry_code_and_history(
    client: AsyncClient, mode: str, directive: str, error: type[agentrun.RunError], code: str | None
) -> None:
    """Failed, expired and incomplete runs raise their typed error with code and history."""
    with pytest.raises(error) as info:
        await client.run("asst_abc123", f"Hello {directive}", mode=mode)  # type: ignore[arg-type]
    exc = info.value
    if code is not None:
        assert exc.code == code
    assert exc.run_id is not None
    assert exc.run_id.startswith("run_")
    assert exc.history[0].state is State.PENDING
    assert exc.history[-1].state.value == exc.status
    assert isinstance(exc, agentrun.RunError)
    assert exc.result is not None


async def test_tool_call_reaches_requires_action_then_outputs_complete_it(
    client: AsyncClient, emu: Emulator
) -> None:
    """A named function tool stops the run in requires_action; submitting outputs finishes it."""
    first = await client.run(
        "asst_abc123", "Use get_weather for the weather in Paris", tools=[WEATHER_TOOL]
    )
    assert first.state is State.REQUIRES_ACTION
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    second = await client.run(
        "asst_abc123",
        thread_id=first.thread_id,
        tool_outputs={call.id: "22 degrees and sunny"},
    )
    assert second.state is State.COMPLETED
    assert second.run_id == first.run_id
    assert "22 degrees and sunny" in second.text
    assert len([r for r in _runs(emu) if r["thread_id"] == first.thread_id]) == 1


async def test_tool_outputs_without_waiting_run_is_a_clear_error(client: AsyncClient) -> None:
    """Submitting outputs to a thread with no waiting run is a BadRequestError, not a hang."""
    done = await client.run("asst_abc123", "Hello")
    with pytest.raises(agentrun.BadRequestError, match="no run waiting"):
        await client.run("asst_abc123", thread_id=done.thread_id, tool_outputs={"call_x": "1"})


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_429_on_create_is_retried_without_duplicate_run(
    client: AsyncClient, emu: Emulator, mode: str
) -> None:
    """A 429 with Retry-After on create is retried; the emulator holds exactly one run."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="status", status=429, retry_after=0.05))
    result = await client.run("asst_abc123", "Hello there", mode=mode)  # type: ignore[arg-type]
    assert result.state is State.COMPLETED
    assert emu.stats()["requests"]["POST /threads/runs"]["429"] == 1
    assert len(_runs(emu)) == 1
    assert client.statistics().retries >= 1


async def test_stream_cut_mid_run_is_finished_by_polling_one_run(
    client: AsyncClient, emu: Emulator
) -> None:
    """A stream cut after the run started is finished by polling it; no second run."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="stream_cut", after_events=6))
    result = await client.run(
        "asst_abc123", "Tell me a story about a lighthouse keeper", mode="stream"
    )
    assert result.state is State.COMPLETED
    assert result.text
    assert len(_runs(emu)) == 1
    assert result.requests >= 3  # the cut stream, at least one poll, the message list
    assert emu.stats()["requests"].get("GET /threads/{thread_id}/runs/{run_id}")


async def test_timeout_cancels_remote_run(client: AsyncClient, emu: Emulator) -> None:
    """The deadline covers the whole invocation; the remote run is cancelled before raising."""
    with pytest.raises(agentrun.APITimeoutError) as info:
        await client.run("asst_abc123", "Wait [emulator:sleep=5]", timeout=0.3, mode="poll")
    assert info.value.run_id is not None
    with anyio.fail_after(5):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    [run] = _runs(emu)
    assert run["status"] in ("cancelling", "cancelled")


async def test_cancelling_100_in_flight_runs_leaves_none_active(
    client: AsyncClient, emu: Emulator
) -> None:
    """Cancelling the caller's scope cancels every in-flight run on the service."""
    started = 0

    async def one(i: int) -> None:
        nonlocal started
        started += 1
        await client.run(
            "asst_abc123", f"Job {i} [emulator:sleep=30]", mode="stream" if i % 2 else "poll"
        )

    with anyio.move_on_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
            with anyio.fail_after(20):
                while emu.stats()["runs_created"] < 100:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert emu.stats()["runs_created"] == 100
    with anyio.fail_after(10):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    statuses = {r["status"] for r in _runs(emu)}
    assert statuses == {"cancelled"}


async def test_stream_yields_states_deltas_and_result(client: AsyncClient) -> None:
    """`stream()` yields state changes and text deltas that add up to the final text."""
    seen: list[Any] = []
    async with client.stream("asst_abc123", "Describe the sea in a few words") as events:
        async for ev in events:
            seen.append(ev)
    assert isinstance(seen[-1], RunFinished)
    result = seen[-1].result
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text == result.text
    states = [e.state for e in seen if isinstance(e, StateChanged)]
    assert states[0] is State.THREAD_CREATED
    assert State.IN_PROGRESS in states
    assert states[-1] is State.COMPLETED
    first_delta = next(i for i, e in enumerate(seen) if isinstance(e, TextDelta))
    assert (
        seen.index(
            next(e for e in seen if isinstance(e, StateChanged) and e.state is State.IN_PROGRESS)
        )
        < first_delta
    )


async def test_stream_tool_call_deltas(client: AsyncClient) -> None:
    """Tool-call deltas stream with id and name first, then argument fragments of valid JSON."""
    import json

    deltas: list[ToolCallDelta] = []
    async with client.stream(
        "asst_abc123", "Call get_weather for Oslo", tools=[WEATHER_TOOL]
    ) as events:
        async for ev in events:
            if isinstance(ev, ToolCallDelta):
                deltas.append(ev)
            if isinstance(ev, RunFinished):
                assert ev.result.state is State.REQUIRES_ACTION
    assert deltas[0].id is not None
    assert deltas[0].name == "get_weather"
    args = json.loads("".join(d.arguments for d in deltas))
    assert "city" in args


async def test_stream_run_error_is_raised_from_iterator(client: AsyncClient) -> None:
    """A run that fails mid-stream raises its typed error from the event iterator."""
    seen: list[Any] = []

    async def consume() -> None:
        async with client.stream("asst_abc123", "Hi [emulator:fail=server_error]") as events:
            async for ev in events:
                seen.append(ev)

    with pytest.raises(agentrun.RunFailedError):
        await consume()
    got_text = any(isinstance(ev, TextDelta) for ev in seen)
    assert not got_text


async def test_leaving_stream_early_cancels_remote_run(client: AsyncClient, emu: Emulator) -> None:
    """Breaking out of a stream cancels its run on the service."""
    async with client.stream("asst_abc123", "Long job [emulator:sleep=30]") as events:
        async for ev in events:
            if isinstance(ev, StateChanged) and ev.state is State.IN_PROGRESS:
                break
    with anyio.fail_after(5):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    assert _runs(emu)[0]["status"] in ("cancelled", "cancelling")


async def test_map_bounds_concurrency_and_isolates_failures(
    client: AsyncClient, emu: Emulator
) -> None:
    """map() yields every item as it finishes, at most `concurrency` in flight, failures apart."""
    requests: list[dict[str, Any]] = [
        {"agent": "asst_def456", "input": f"What is {i} + {i}?", "key": i} for i in range(40)
    ]
    requests[7]["input"] = "Boom [emulator:fail=server_error]"
    async with client.map(requests, concurrency=8) as items:
        results = [r async for r in items]
    assert sorted(r.index for r in results) == list(range(40))
    failed = [r for r in results if not r.ok]
    assert [r.index for r in failed] == [7]
    assert isinstance(failed[0].error, agentrun.RunFailedError)
    for r in results:
        if r.ok:
            assert r.result is not None
            i = r.request.key
            assert str(2 * i) in r.result.text
    assert emu.stats()["peak_active_runs"] <= 8


async def test_map_reports_bad_items_without_stopping(client: AsyncClient) -> None:
    """A malformed request becomes an error item; the rest still run."""
    requests = [{"input": "no agent"}, {"agent": "asst_abc123", "input": "Hi"}]
    async with client.map(requests) as items:
        results = [r async for r in items]
    by_index = {r.index: r for r in results}
    assert isinstance(by_index[0].error, agentrun.ConfigurationError)
    assert by_index[1].ok


async def test_unknown_agent_and_thread_are_not_found(client: AsyncClient) -> None:
    """404s from the service surface as NotFoundError with the service's code."""
    with pytest.raises(agentrun.NotFoundError):
        await client.run("asst_nope", "Hi")
    with pytest.raises(agentrun.NotFoundError):
        await client.run("asst_abc123", "Hi", thread_id="thread_nope")


async def test_bad_token_is_authentication_error(emu: Emulator) -> None:
    """A wrong static token gets 401 -> AuthenticationError, and the message hides the token."""
    async with AsyncClient(emu.endpoint, api_key="wrong-secret-token") as c:
        with pytest.raises(agentrun.AuthenticationError) as info:
            await c.run("asst_abc123", "Hi")
    assert "wrong-secret-token" not in str(info.value)
    assert "wrong-secret-token" not in repr(c)


async def test_bad_arguments_fail_before_any_request(client: AsyncClient, emu: Emulator) -> None:
    """Invalid input is a ConfigurationError raised before anything is sent."""
    before = emu.stats()["requests_total"]
    for kwargs in (
        {"agent": "", "input": "x"},
        {"agent": "asst_abc123", "input": ""},
        {"agent": "asst_abc123", "input": [{"role": "system", "content": "x"}]},
        {"agent": "asst_abc123", "input": "x", "temperature": 5},
        {"agent": "asst_abc123", "input": "x", "timeout": -1},
        {"agent": "asst_abc123", "input": "x", "mode": "fast"},
    ):
        with pytest.raises(agentrun.ConfigurationError):
            await client.run(**kwargs)
    assert emu.stats()["requests_total"] == before


async def test_statistics_and_debug_logging(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """statistics() counts requests and runs by state; transitions are logged at debug."""
    with caplog.at_level(logging.DEBUG, logger="agentrun"):
        result = await client.run("asst_abc123", "Hello", mode="poll")
    stats = client.statistics()
    assert stats.runs_by_state == {"completed": 1}
    assert stats.requests_sent >= 3
    assert stats.token_requests == 1
    assert 0 < stats.state_time["run_queued"]["p50"] <= result.elapsed
    lines = [r.getMessage() for r in caplog.records if r.name == "agentrun"]
    assert any(result.run_id in line and "-> completed" in line for line in lines)


async def test_client_refuses_use_after_close(emu: Emulator) -> None:
    """A closed client raises ClientStateError instead of reopening silently."""
    c = AsyncClient(emu.endpoint, api_key=emu.api_key)
    await c.run("asst_abc123", "Hi")
    await c.aclose()
    with pytest.raises(agentrun.ClientStateError, match="closed"):
        await c.run("asst_abc123", "Hi")


async def test_additional_instructions_on_new_thread(client: AsyncClient, emu: Emulator) -> None:
    """`/threads/runs` takes no additional_instructions, so the thread is created first."""
    result = await client.run(
        "asst_abc123",
        "Tell me about the history of the river Thames",
        additional_instructions="Be brief.",
        mode="stream",
    )
    assert result.requests == 2
    assert [t.state for t in result.history][:3] == [
        State.PENDING,
        State.THREAD_CREATED,
        State.MESSAGE_POSTED,
    ]
    plain = await client.run("asst_abc123", "Tell me about the history of the river Thames")
    assert len(result.text) < len(plain.text)
    assert emu.stats()["requests"]["POST /threads"]["200"] == 1


async def test_auto_streams_while_everything_in_flight_fits_the_pool(emu: Emulator) -> None:
    """`auto` streams while every invocation in flight, a whole burst counted, fits the pool
    (one connection each), and polls beyond that: a burst of 4 on a pool of 4 streams, a burst
    of 6 polls every run, and runs already streaming when a burst arrives go on streaming
    while the burst polls."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key, pool_limit=4) as client:
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await client.run("asst_abc123", f"Job {i} [emulator:sleep=0.5]")

        async def burst(n: int) -> list[str]:
            results.clear()
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            assert all(r.state is State.COMPLETED for r in results.values())
            return sorted(r.mode for r in results.values())

        assert await burst(4) == ["stream"] * 4
        assert all(r.requests == 1 for r in results.values())
        assert await burst(6) == ["poll"] * 6

        # Two streams running, then a burst of four more: 6 in flight > 4.
        results.clear()
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(one, i)
            with anyio.fail_after(10):
                while client.statistics().runs_in_flight < 2:
                    await anyio.sleep(0.01)
            for i in range(2, 6):
                tg.start_soon(one, i)
        assert [results[i].mode for i in range(6)] == ["stream"] * 2 + ["poll"] * 4
    assert all(r.state is State.COMPLETED for r in results.values())


async def test_breaking_out_of_map_cancels_the_rest(client: AsyncClient, emu: Emulator) -> None:
    """Breaking out of the results of `client.map()` (and so out of its block) is safe: the
    runs still going are cancelled on the service, and nothing more is started."""
    requests = [{"agent": "asst_abc123", "input": "Quick one"}] + [
        {"agent": "asst_abc123", "input": f"Job {i} [emulator:sleep=30]"} for i in range(10)
    ]
    async with client.map(requests, concurrency=4) as results:
        async for item in results:
            assert item.ok
            break
    with anyio.fail_after(10):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    runs = _runs(emu)
    assert len(runs) <= 5  # the quick one, the three beside it, at most one refill
    assert sorted(r["status"] for r in runs).count("cancelled") == len(runs) - 1


async def test_map_as_context_manager_closes_on_exit(client: AsyncClient, emu: Emulator) -> None:
    """`async with client.map(...) as results` cancels unfinished runs when the block ends."""
    requests = [{"agent": "asst_abc123", "input": f"Job {i} [emulator:sleep=30]"} for i in range(3)]
    got = []
    async with client.map(requests, concurrency=3) as results:
        with anyio.move_on_after(1.0):
            async for item in results:  # waits: nothing finishes within the second
                got.append(item)
        assert emu.stats()["runs_created"] == 3
    with anyio.fail_after(10):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    assert {r["status"] for r in _runs(emu)} == {"cancelled"}
    assert got == []


async def test_map_without_async_with_is_refused(client: AsyncClient, emu: Emulator) -> None:
    """`async for item in client.map(...)` (the old form) raises a TypeError that shows the
    `async with` form, and starts no run: the work needs a block that owns it."""
    with pytest.raises(TypeError, match=r"async with client\.map\(requests"):
        async for _ in client.map([{"agent": "asst_abc123", "input": "Hi"}]):
            pass  # pragma: no cover
    assert emu.stats()["runs_created"] == 0


async def test_map_reraises_what_stopped_reading_the_requests(client: AsyncClient) -> None:
    """An error raised by the requests' own iterator comes out of the results after the items
    already started, with its own type."""

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"agent": "asst_abc123", "input": "Hi"}
        raise LookupError("the source broke")

    got: list[Any] = []

    async def consume() -> None:
        async with client.map(requests(), concurrency=2) as results:
            async for item in results:
                got.append(item)

    with pytest.raises(LookupError, match="the source broke"):
        await consume()
    assert [item.ok for item in got] == [True]


async def test_a_closed_client_refuses_reuse(emu: Emulator) -> None:
    """After `aclose()`, `run`, `open_stream` and `map` raise `ClientStateError` saying the
    client is closed, before anything is sent."""
    client = AsyncClient(emu.endpoint, api_key=emu.api_key)
    await client.aclose()
    with pytest.raises(agentrun.ClientStateError, match="closed"):
        await client.run("asst_abc123", "Hi")
    with pytest.raises(agentrun.ClientStateError, match="closed"):
        client.open_stream("asst_abc123", "Hi")
    with pytest.raises(agentrun.ClientStateError, match="closed"):
        async with client.map([{"agent": "asst_abc123", "input": "Hi"}]):
            pass  # pragma: no cover
    assert emu.stats()["runs_created"] == 0


async def test_closing_the_client_stops_a_map(emu: Emulator) -> None:
    """`aclose()` during a `map()` block cancels the runs under way (their items carry
    `ClientStateError`), creates no more runs, and the results then raise `ClientStateError`."""
    client = AsyncClient(emu.endpoint, api_key=emu.api_key)
    requests = [{"agent": "asst_abc123", "input": f"Job {i} [emulator:sleep=30]"} for i in range(9)]
    got: list[Any] = []
    raised: list[Exception] = []

    async def consume() -> None:
        try:
            async with client.map(requests, concurrency=3) as results:
                async for item in results:
                    got.append(item)
        except agentrun.ClientStateError as exc:
            raised.append(exc)

    async def close_soon() -> None:
        with anyio.fail_after(10):
            while emu.stats()["runs_created"] < 3:
                await anyio.sleep(0.02)
        await client.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(close_soon)
        tg.start_soon(consume)
    assert len(raised) == 1 and "closed" in str(raised[0])
    # The three under way, and at most the one request already read and waiting for a slot.
    assert 3 <= len(got) <= 4
    assert all(isinstance(item.error, agentrun.ClientStateError) for item in got)
    assert emu.stats()["runs_created"] == 3
    with anyio.fail_after(10):
        while emu.stats()["active_runs"]:
            await anyio.sleep(0.02)
    assert {r["status"] for r in _runs(emu)} == {"cancelled"}


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_result_carries_the_services_request_id(client: AsyncClient, mode: str) -> None:
    """The id the service gave the request that started the run is kept on the result."""
    result = await client.run("asst_abc123", "Hello", mode=mode)  # type: ignore[arg-type]
    assert result.request_id
    assert len(result.request_id) >= 16


async def test_emulator_answers_carry_request_ids(emu: Emulator) -> None:
    """Every emulator answer has `apim-request-id` (a UUID) and a different `x-request-id`
    (32 hex), as the service's do; agentrun records the `apim-request-id`."""
    import aiohttp

    from agentrun._retry import request_id_of

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{emu.endpoint}/threads/nope?api-version=v1") as resp,
    ):
        assert resp.status == 401
        assert resp.headers["x-request-id"] != resp.headers["apim-request-id"]
        assert len(resp.headers["x-request-id"]) == 32
        assert request_id_of(resp.headers) == resp.headers["apim-request-id"]


async def test_following_an_existing_run_by_id(client: AsyncClient, emu: Emulator) -> None:
    """`run(agent, thread_id=..., run_id=...)` without input follows that run to its end and
    returns its result, creating nothing; input together with a run_id is refused."""
    first = await client.run("asst_abc123", "What is 7 * 6?", mode="stream")
    again = await client.run("asst_abc123", thread_id=first.thread_id, run_id=first.run_id)
    assert (again.state, again.run_id, again.text) == (State.COMPLETED, first.run_id, first.text)
    assert again.mode == "poll"
    assert len(_runs(emu)) == 1
    with pytest.raises(agentrun.ConfigurationError, match="run_id"):
        await client.run("asst_abc123", "more", thread_id=first.thread_id, run_id=first.run_id)
    with pytest.raises(agentrun.ConfigurationError, match="thread_id"):
        await client.run("asst_abc123", run_id=first.run_id)


def test_async_client_refuses_http_off_loopback() -> None:
    """AsyncClient refuses an http:// api_base on a non-loopback host (the token would travel
    in clear text) unless explicitly allowed; loopback http:// is fine (the emulator)."""
    with pytest.raises(agentrun.ConfigurationError, match="http"):
        AsyncClient("http://agents.example.com/api/projects/p", api_key="k", env={})
    AsyncClient("http://127.0.0.1:9/api/projects/p", api_key="k", env={})
    AsyncClient(
        "http://agents.example.com/api/projects/p",
        api_key="k",
        env={},
        allow_insecure_http=True,
    )


@pytest.mark.parametrize("bad", ["30", True, float("nan"), -1, 0])
async def test_timeout_of_the_wrong_type_or_value_is_a_configuration_error(
    client: AsyncClient, bad: object
) -> None:
    """`timeout="30"` (a string), a bool, NaN or a non-positive number: ConfigurationError
    before anything is sent, never a bare TypeError."""
    with pytest.raises(agentrun.ConfigurationError, match="timeout"):
        await client.run("asst_abc123", "hi", timeout=bad)  # type: ignore[arg-type]


async def test_api_base_without_the_project_path_hints_at_it(emu: Emulator) -> None:
    """An api_base that is the resource URL without /api/projects/<project> (a common
    copy-paste mistake) gets a 404 whose message says what to check, with the status once."""
    base = emu.endpoint.split("/api/projects/")[0]
    async with AsyncClient(base, api_key=emu.api_key) as c:
        with pytest.raises(agentrun.NotFoundError) as info:
            await c.run("asst_abc123", "hi", mode="poll")
    text = str(info.value)
    assert "/api/projects/<project>" in text
    assert "404 404" not in text
