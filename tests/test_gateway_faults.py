"""The client against the gateway-level faults the real service shows (real-service.md §3.9,
§3.10): HTML error pages, responses and streams that stall without closing, a mid-stream
`event: error`, a run that fails after partial text. All against the emulator on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import agentrun
from agentrun import AsyncClient
from agentrun._machine import State
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001, cancel_delay=0.01)
CREATE = "POST /threads/runs"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST, stall_limit=30)) as e:
        yield e


def _active(emu: Emulator) -> int:
    by = emu.stats()["runs_by_status"]
    return sum(by.get(s, 0) for s in ("queued", "in_progress", "requires_action"))


async def test_html_502_on_a_poll_is_retried(emu: Emulator) -> None:
    """A gateway's HTML 502 page on a status poll (a GET, safe to repeat) is retried and the
    invocation completes, with one run on the service."""
    emu.inject(FaultRule(route="GET /threads/{thread_id}/runs/{run_id}", kind="html", status=502))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        result = await client.run("asst_abc123", "What is 2 + 2?", mode="poll")
    assert result.state is State.COMPLETED
    assert "4" in result.text
    assert len(emu.runs()) == 1


async def test_html_502_on_a_create_is_typed_and_not_repeated(emu: Emulator) -> None:
    """An HTML 502 on a create is not repeated (the gateway may have passed it on: a second
    POST could start a second run) and surfaces as BadGatewayError, its message naming the
    page's title instead of dumping the HTML."""
    emu.inject(FaultRule(route=CREATE, kind="html", status=502))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with pytest.raises(agentrun.BadGatewayError) as info:
            await client.run("asst_abc123", "hi", mode="poll")
    assert info.value.status_code == 502
    assert "<html" not in str(info.value).lower()
    assert "502 Bad Gateway" in str(info.value)
    assert sum(emu.stats()["requests"].get(CREATE, {}).values()) == 1


async def test_html_504_every_time_is_a_typed_error_without_the_page(emu: Emulator) -> None:
    """HTML 504 pages on every attempt end in a typed server error whose message names the
    status and does not dump the HTML page."""
    emu.inject(FaultRule(route=CREATE, kind="html", status=504, times=20))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with pytest.raises(agentrun.InternalServerError) as info:
            await client.run("asst_abc123", "hi", mode="poll", timeout=60)
    assert info.value.status_code == 504
    assert "<html" not in str(info.value).lower()
    assert emu.runs() == []


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_stalled_create_is_a_timeout_at_the_deadline(emu: Emulator, mode: str) -> None:
    """A create the gateway accepts and never answers ends in APITimeoutError at the caller's
    deadline (not a hang, not another error type)."""
    emu.inject(FaultRule(route=CREATE, kind="stall"))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with pytest.raises(agentrun.APITimeoutError):
            await client.run("asst_abc123", "hi", mode=mode, timeout=2)  # type: ignore[arg-type]


async def test_stream_that_stalls_mid_run_times_out_and_cancels_the_run(emu: Emulator) -> None:
    """A stream that stops sending after some events without closing: APITimeoutError at the
    deadline, and the run (whose id the events named) is cancelled on the service."""
    emu.inject(FaultRule(route=CREATE, kind="stall", after_events=4))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with pytest.raises(agentrun.APITimeoutError):
            await client.run("asst_abc123", "[emulator:sleep=20] hi", mode="stream", timeout=2)
    assert _active(emu) == 0
    assert [r["status"] for r in emu.runs()] in (["cancelled"], ["cancelling"])


async def test_mid_stream_error_event_is_finished_by_polling(emu: Emulator) -> None:
    """A mid-stream `event: error` (no `done`): the run, which goes on on the service, is
    followed by polling and its whole reply returned, once."""
    emu.inject(FaultRule(route=CREATE, kind="stream_error", after_events=6))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        result = await client.run("asst_abc123", "What is 7 * 6?", mode="stream")
    assert result.state is State.COMPLETED
    assert "42" in result.text
    assert len(emu.runs()) == 1


@pytest.mark.parametrize("mode", ["stream", "poll"])
async def test_failure_after_partial_text_is_run_failed_with_its_code(
    emu: Emulator, mode: str
) -> None:
    """A run that streams some text and then fails (`fail_midway`, invalid_engine_error)
    raises RunFailedError carrying the service's code and message."""
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        with pytest.raises(agentrun.RunFailedError) as info:
            await client.run(
                "asst_abc123",
                "[emulator:fail_midway=invalid_engine_error] hi",
                mode=mode,  # type: ignore[arg-type]
            )
    assert info.value.code == "invalid_engine_error"
    assert info.value.error_message


async def test_partial_reply_of_a_failed_run_is_the_same_in_every_mode(emu: Emulator) -> None:
    """The text a run wrote before failing is on the error's result in poll mode too, the same
    as in stream mode (the reply never depends on the mode)."""
    texts = {}
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        for mode in ("stream", "poll"):
            with pytest.raises(agentrun.RunFailedError) as info:
                await client.run(
                    "asst_abc123",
                    "[emulator:script=fail_midway] hi",
                    mode=mode,  # type: ignore[arg-type]
                )
            result = info.value.result
            assert result is not None
            texts[mode] = result.text
    assert texts["stream"]
    assert texts["poll"] == texts["stream"]
