"""The pytest plugin (agentrun.emulator.pytest_plugin), as a user's project sees it.

Most checks run a small throwaway project in a pytest subprocess with the plugin loaded the
way an installed agentrun loads it (the ``pytest11`` entry point ``agentrun``, or ``-p``
before that entry point exists).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import urllib.request
from typing import Any

Emu = Any

USER_CONFTEST = """
import pytest
from agentrun.emulator import AgentSpec, EmulatorSettings


@pytest.fixture(scope="session")
def emulator_settings():
    return EmulatorSettings(agents=(AgentSpec(id="asst_user", name="mine"),))


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""

USER_TESTS = """
import json
import socket
import ssl
import urllib.request

import aiohttp
import pytest

from agentrun.emulator import EmulatorSettings

PORTS = []


def call(emu, method, path, body=None, context=None):
    request = urllib.request.Request(
        f"{emu.endpoint}{path}?api-version=v1",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context) as response:
        return json.load(response)


def test_a_sync_use(emulator):
    assert emulator.url.startswith("http://127.0.0.1:")
    assert call(emulator, "POST", "/threads", {})["object"] == "thread"
    assert emulator.stats()["requests"]["POST /threads"] == {"200": 1}


def test_b_reset_before_each_test(emulator):
    assert emulator.stats()["requests_total"] == 0


def test_c_overridden_settings(emulator):
    assert call(emulator, "GET", "/assistants/asst_user")["name"] == "mine"


@pytest.mark.anyio
async def test_d_async_use(emulator):
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{emulator.endpoint}/threads/runs?api-version=v1",
            json={"assistant_id": "asst_abc123",
                  "thread": {"messages": [{"role": "user", "content": "What is 6 * 7?"}]}},
            headers=headers,
        ) as response:
            assert response.status == 200
    assert emulator.stats()["runs_created"] == 1


def test_e_tls(emulator_tls):
    assert emulator_tls.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(emulator_tls.ca_path))
    assert call(emulator_tls, "POST", "/threads", {}, context)["object"] == "thread"


def test_f_factory(emulator_factory):
    emu = emulator_factory(EmulatorSettings(api_keys=("custom-key",)), tls=True)
    assert emu.api_key == "custom-key"
    assert emu.ca_path.exists()
    context = ssl.create_default_context(cafile=str(emu.ca_path))
    assert call(emu, "POST", "/threads", {}, context)["object"] == "thread"
    PORTS.append(emu.port)


def test_g_factory_emulator_was_closed():
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", PORTS[0]), timeout=2).close()
"""


def _has_entry_point() -> bool:
    return any(ep.name == "agentrun" for ep in importlib.metadata.entry_points(group="pytest11"))


def test_fixtures_in_a_user_project(tmp_path: pathlib.Path) -> None:
    """In a user's project: ``emulator`` works from sync and async tests and is reset before
    each test, ``emulator_settings`` can be overridden, ``emulator_tls`` serves verified
    HTTPS, and ``emulator_factory`` emulators are stopped after their test."""
    (tmp_path / "conftest.py").write_text(USER_CONFTEST)
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    args = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"]
    if not _has_entry_point():
        args += ["-p", "agentrun.emulator.pytest_plugin"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [*args, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_plugin_import_is_cheap() -> None:
    """Importing the plugin (which pytest does in every run of every project with agentrun
    installed) does not import aiohttp, yaml or the emulator's server."""
    code = textwrap.dedent(
        """
        import sys
        import agentrun.emulator.pytest_plugin
        heavy = [m for m in ("aiohttp", "yaml", "agentrun.emulator._server") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_shared_emulator_fixture_here(emulator: Emu) -> None:
    """In this suite too: ``emulator`` is plain HTTP with the default credentials."""
    assert emulator.url.startswith("http://")
    assert emulator.ca_path is None
    assert (emulator.api_key, emulator.client_id, emulator.client_secret) == (
        "emulator-key",
        "agentrun-emulator",
        "emulator-secret",
    )
    request = urllib.request.Request(
        f"{emulator.url}/_emulator/stats", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        assert json.load(response)["requests_total"] == 0


def test_no_proxy_covers_loopback(emulator: Emu) -> None:
    """While an emulator fixture is active, NO_PROXY includes the loopback names."""
    for name in ("NO_PROXY", "no_proxy"):
        hosts = os.environ[name].split(",")
        assert "127.0.0.1" in hosts
        assert "localhost" in hosts
