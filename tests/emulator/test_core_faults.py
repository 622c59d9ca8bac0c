"""Fault injection, statistics, reset, thread expiry, the threaded server and YAML settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agentrun.emulator import (
    AgentSpec,
    Emulator,
    EmulatorSettings,
    FaultRule,
    Faults,
    SettingsError,
    Timing,
)

pytestmark = pytest.mark.anyio

FAST = Timing(queue_delay=0.01, run_duration=0.02, delta_interval=0.001, cancel_delay=0.02)
AUTH = {"Authorization": "Bearer emulator-key"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def run_to_end(session: aiohttp.ClientSession, emu: Emulator, text: str) -> dict[str, Any]:
    body = {
        "assistant_id": "asst_abc123",
        "thread": {"messages": [{"role": "user", "content": text}]},
    }
    async with session.post(emu.endpoint + "/threads/runs?api-version=v1", json=body) as resp:
        assert resp.status == 200
        run = await resp.json()
    url = f"{emu.endpoint}/threads/{run['thread_id']}/runs/{run['id']}?api-version=v1"
    for _ in range(300):
        async with session.get(url) as resp:
            run = await resp.json()
        if run["status"] not in ("queued", "in_progress"):
            return dict(run)
        await asyncio.sleep(0.01)
    raise AssertionError(run)


async def test_status_fault_rule_429_with_retry_after(
    session: aiohttp.ClientSession, emu: Emulator
) -> None:
    """A one-shot 429 rule answers the next matching request with a JSON error and the
    configured retry header, then the route works again."""
    emu.inject(FaultRule(route="POST /threads", status=429, retry_after=0.2))
    async with session.post(emu.endpoint + "/threads?api-version=v1") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "0.2"
        body = await resp.json()
        assert body["error"]["code"] == "rate_limit_exceeded"
    async with session.post(emu.endpoint + "/threads?api-version=v1") as resp:
        assert resp.status == 200
    rule = FaultRule(
        route="*", status=503, retry_after=1.5, retry_after_header="retry-after-ms", times=2
    )
    emu.inject(rule)
    for _ in range(2):
        async with session.get(emu.endpoint + "/assistants?api-version=v1") as resp:
            assert resp.status == 503
            assert resp.headers["retry-after-ms"] == "1500"
            assert (await resp.json())["error"]["code"] == "service_unavailable"
    async with session.get(emu.endpoint + "/assistants?api-version=v1") as resp:
        assert resp.status == 200
    assert emu.stats()["requests"]["POST /threads"] == {"429": 1, "200": 1}


async def test_drop_fault_closes_socket_without_bytes(emu: Emulator) -> None:
    """A drop rule closes the connection before any response byte is written."""
    emu.inject(FaultRule(route="GET /assistants", kind="drop"))
    host, port = emu.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        "GET /api/projects/p/assistants?api-version=v1 HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer emulator-key\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert received == b""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        emu.inject(FaultRule(route="POST /threads", kind="drop"))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(emu.endpoint + "/threads?api-version=v1")
    assert emu.stats()["requests"]["POST /threads"] == {"0": 1}


async def test_run_fault_rules(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """run_failed and run_expired rules end the next matching run failed or expired."""
    emu.inject(FaultRule(route="POST /threads/runs", kind="run_failed", code="rate_limit_exceeded"))
    run = await run_to_end(session, emu, "hello")
    assert run["status"] == "failed"
    assert run["last_error"] == {
        "code": "rate_limit_exceeded",
        "message": "Rate limit is exceeded. Try again in 60 seconds.",
    }
    emu.inject(FaultRule(kind="run_failed"))
    run = await run_to_end(session, emu, "hello")
    assert run["last_error"]["code"] == "server_error"
    emu.inject(FaultRule(kind="run_expired"))
    run = await run_to_end(session, emu, "hello")
    assert run["status"] == "expired"
    assert (await run_to_end(session, emu, "hello"))["status"] == "completed"


async def test_fault_rules_over_http(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """POST /_emulator/faults arms a rule (500 here); a bad rule is a 400."""
    async with session.post(
        emu.url + "/_emulator/faults", json={"route": "GET /threads/{thread_id}", "status": 500}
    ) as resp:
        assert resp.status == 200
    async with session.get(emu.endpoint + "/threads/thread_x?api-version=v1") as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "server_error"
    async with session.post(emu.url + "/_emulator/faults", json={"kind": "explode"}) as resp:
        assert resp.status == 400


async def _statuses(settings: EmulatorSettings, n: int) -> list[int]:
    async with Emulator(settings) as emu, aiohttp.ClientSession(headers=AUTH) as session:
        out = []
        for _ in range(n):
            try:
                async with session.get(emu.endpoint + "/assistants?api-version=v1") as resp:
                    out.append(resp.status)
                    if resp.status == 429:
                        assert resp.headers["Retry-After"] == "0.5"
                    if resp.status != 200:
                        assert "error" in await resp.json()
            except aiohttp.ServerDisconnectedError:
                out.append(0)
        return out


async def test_fault_rates_are_seeded_and_reproducible() -> None:
    """Fault rates draw from random.Random(seed): same seed, same faults; every kind occurs."""
    faults = Faults(rate_429=0.2, rate_500=0.2, rate_503=0.2, rate_drop=0.2, retry_after=0.5)
    a = await _statuses(EmulatorSettings(timing=FAST, faults=faults, seed=7), 40)
    b = await _statuses(EmulatorSettings(timing=FAST, faults=faults, seed=7), 40)
    c = await _statuses(EmulatorSettings(timing=FAST, faults=faults, seed=8), 40)
    assert a == b
    assert a != c
    assert {0, 200, 429, 500, 503} <= set(a)


async def test_run_fault_rates() -> None:
    """rate_run_failed=1 fails every run; rate_run_expired=1 expires every run."""
    cases = ((Faults(rate_run_failed=1.0), "failed"), (Faults(rate_run_expired=1.0), "expired"))
    for faults, status in cases:
        async with (
            Emulator(EmulatorSettings(timing=FAST, faults=faults)) as emu,
            aiohttp.ClientSession(headers=AUTH) as session,
        ):
            run = await run_to_end(session, emu, "hi")
            assert run["status"] == status


async def test_stream_cut_rate() -> None:
    """rate_stream_cut=1 cuts every stream before done; the run still completes."""
    settings = EmulatorSettings(timing=FAST, faults=Faults(rate_stream_cut=1.0))
    async with Emulator(settings) as emu, aiohttp.ClientSession(headers=AUTH) as session:
        body = {"assistant_id": "asst_abc123", "stream": True}
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(emu.endpoint + "/threads/runs?api-version=v1", json=body) as r:
                await r.read()
        await asyncio.sleep(0.3)
        assert emu.runs()[0]["status"] == "completed"


async def test_stats_runs_and_reset(session: aiohttp.ClientSession, emu: Emulator) -> None:
    """Stats count requests by route and status, runs by status, connections and peaks;
    /_emulator/runs lists runs with ms timestamps; reset forgets everything."""
    run = await run_to_end(session, emu, "hi")
    async with session.get(emu.endpoint + "/threads/thread_nope?api-version=v1") as resp:
        assert resp.status == 404
    async with session.get(emu.url + "/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats == emu.stats()
    assert stats["requests"]["POST /threads/runs"] == {"200": 1}
    assert stats["requests"]["GET /threads/{thread_id}"] == {"404": 1}
    assert stats["requests_total"] == sum(sum(c.values()) for c in stats["requests"].values())
    assert stats["runs_created"] == 1
    assert stats["active_runs"] == 0
    assert stats["runs_by_status"] == {"completed": 1}
    assert stats["peak_active_runs"] == 1
    assert stats["connections_opened"] >= 1
    assert stats["peak_connections"] >= 1
    assert stats["tokens_issued"] == 0
    async with session.get(emu.url + "/_emulator/runs") as resp:
        (entry,) = (await resp.json())["data"]
    assert entry["id"] == run["id"]
    assert entry["thread_id"] == run["thread_id"]
    assert entry["assistant_id"] == "asst_abc123"
    assert entry["status"] == "completed"
    assert entry["stream"] is False
    assert entry["metadata"] == {}
    assert (
        entry["created_at_ms"]
        <= entry["started_at_ms"]
        <= entry["first_delta_at_ms"]
        <= entry["completed_at_ms"]
    )
    async with session.post(emu.url + "/_emulator/reset") as resp:
        assert resp.status == 200
    stats = emu.stats()
    assert stats["requests_total"] == 0
    assert stats["runs_created"] == 0
    assert emu.runs() == []
    async with session.get(f"{emu.endpoint}/threads/{run['thread_id']}?api-version=v1") as resp:
        assert resp.status == 404


async def test_peak_connections_and_active_runs(emu: Emulator) -> None:
    """Concurrent clients raise peak_connections; concurrent runs raise peak_active_runs."""
    sessions = [aiohttp.ClientSession(headers=AUTH) for _ in range(5)]
    try:
        await asyncio.gather(*(run_to_end(s, emu, "hi") for s in sessions))
    finally:
        for s in sessions:
            await s.close()
    stats = emu.stats()
    assert stats["connections_opened"] >= 5
    assert stats["peak_connections"] >= 5
    assert stats["peak_active_runs"] == 5


async def test_idle_threads_expire_after_ttl() -> None:
    """Threads idle for longer than thread_ttl are dropped with their runs and messages."""
    settings = EmulatorSettings(timing=FAST, thread_ttl=0.3)
    async with Emulator(settings) as emu, aiohttp.ClientSession(headers=AUTH) as session:
        run = await run_to_end(session, emu, "hi")
        assert len(emu.runs()) == 1
        await asyncio.sleep(0.8)
        assert emu.runs() == []
        url = f"{emu.endpoint}/threads/{run['thread_id']}/messages?api-version=v1"
        async with session.get(url) as resp:
            assert resp.status == 404
        assert emu.stats()["runs_by_status"] == {"completed": 1}


def test_in_thread_server_is_usable_from_sync_code() -> None:
    """Emulator.in_thread() serves from a daemon thread; stats/reset/inject are thread-safe."""
    import urllib.request

    with Emulator(EmulatorSettings(timing=FAST)).in_thread() as emu:
        request = urllib.request.Request(
            emu.endpoint + "/threads?api-version=v1", method="POST", headers=AUTH, data=b""
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
            assert json.load(resp)["object"] == "thread"
        assert emu.stats()["requests"] == {"POST /threads": {"200": 1}}
        emu.inject(FaultRule(route="POST /threads", status=500))
        emu.reset()
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        assert emu.stats()["requests_total"] == 1


async def test_tls_endpoint(tmp_path: pathlib.Path) -> None:
    """With tls=True the API is served over HTTPS and the CA PEM is written to ca_out."""
    import ssl

    ca = tmp_path / "ca.pem"
    async with Emulator(EmulatorSettings(timing=FAST), tls=True, ca_out=ca) as emu:
        assert emu.url.startswith("https://")
        assert emu.ca_path == ca
        context = ssl.create_default_context(cafile=str(ca))
        connector = aiohttp.TCPConnector(ssl=context)
        async with (
            aiohttp.ClientSession(headers=AUTH, connector=connector) as session,
            session.post(emu.endpoint + "/threads?api-version=v1") as resp,
        ):
            assert resp.status == 200


def test_settings_from_yaml(tmp_path: pathlib.Path) -> None:
    """YAML settings load agents, timing and faults; errors name the key and its line."""
    path = tmp_path / "emu.yaml"
    path.write_text(
        "seed: 3\n"
        "timing: {queue_delay: 0.1, run_duration: 0.2, delta_interval: 0.01}\n"
        "faults:\n  rate_429: 0.5\n"
        "agents:\n"
        "  - id: asst_yaml\n    name: yaml agent\n    instructions: Be brief.\n"
        "    timing: {run_duration: 1}\n"
    )
    settings = EmulatorSettings.from_yaml(path)
    assert settings.seed == 3
    assert settings.timing.run_duration == 0.2
    assert settings.faults.rate_429 == 0.5
    assert [a.id for a in settings.all_agents()][-1] == "asst_yaml"
    assert [a.id for a in settings.all_agents()][:2] == ["asst_abc123", "asst_def456"]
    assert settings.agents[0] == AgentSpec(
        id="asst_yaml", name="yaml agent", instructions="Be brief.", timing=Timing(run_duration=1)
    )
    path.write_text("seed: 1\nfaults:\n  rate_429: 5\n")
    with pytest.raises(SettingsError, match=r"emu.yaml:3: faults.rate_429"):
        EmulatorSettings.from_yaml(path)
    path.write_text("seed: 1\ntimming: {}\n")
    with pytest.raises(SettingsError, match=r"emu.yaml:2: timming: unknown key"):
        EmulatorSettings.from_yaml(path)
