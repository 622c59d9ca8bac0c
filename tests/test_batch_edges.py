"""`agentrun batch` under transport faults, as a real subprocess against a TLS emulator: an
untrusted certificate stops the batch at once (exit 3); a token endpoint that cannot be reached
makes items wait and try again instead of failing."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing
from agentrun.emulator._tokens import TOKEN_ROUTE


@pytest.fixture(scope="module")
def tls_emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.002)
    )
    with Emulator(settings, tls=True).in_thread() as e:
        yield e


def _env(emu: Emulator, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "AGENTRUN_")) and k != "PYTHONWARNINGS"
    }
    env.update(
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONWARNINGS="error",
        AZURE_AI_API_BASE=emu.endpoint,
    )
    env.update(extra)
    return env


def _batch(
    emu: Emulator, src: pathlib.Path, dst: pathlib.Path, **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agentrun.cli", "batch", str(src), "-o", str(dst)]
    cmd += ["--agent", "asst_abc123", "--progress", "plain", "--concurrency", "4"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(emu, **env), timeout=120)


def _items(path: pathlib.Path, n: int) -> None:
    lines = [{"custom_id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(n)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def _lines(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln]


def test_untrusted_certificate_stops_the_batch_with_exit_3(
    tls_emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """The service's certificate is not trusted: the batch stops at once with the
    configuration exit code (3) and a line naming the certificate, instead of writing an
    error line for every item; nothing reached the service."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(src, 20)
    tls_emu.reset()
    proc = _batch(tls_emu, src, dst, AZURE_AD_TOKEN=tls_emu.api_key)
    assert proc.returncode == 3, proc.stderr
    assert "TLS certificate verification failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(_lines(dst)) < 20  # stopped: not one error line per item
    assert all(line.get("error") is None for line in _lines(dst))
    assert tls_emu.stats()["runs_created"] == 0


def test_untrusted_token_endpoint_certificate_stops_the_batch(
    tls_emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """A service principal whose token endpoint's certificate is not trusted: exit 3 naming
    the token endpoint, no error lines written."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(src, 10)
    env = {
        "AZURE_TENANT_ID": tls_emu.tenant_id,
        "AZURE_CLIENT_ID": tls_emu.client_id,
        "AZURE_CLIENT_SECRET": tls_emu.client_secret,
        "AZURE_AUTHORITY_HOST": tls_emu.authority,
    }
    proc = _batch(tls_emu, src, dst, **env)
    assert proc.returncode == 3, proc.stderr
    assert "token endpoint" in proc.stderr
    assert _lines(dst) == []


def test_unreachable_token_endpoint_items_wait_and_succeed(
    tls_emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """The token endpoint drops its first connections (more than azure-identity's own retries
    absorb): the items wait and try again, and every item ends with a reply, none failed;
    each item is run once."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _items(src, 6)
    tls_emu.reset()
    tls_emu.inject(FaultRule(route=f"POST {TOKEN_ROUTE}", kind="drop", times=6))
    env = {
        "AZURE_TENANT_ID": tls_emu.tenant_id,
        "AZURE_CLIENT_ID": tls_emu.client_id,
        "AZURE_CLIENT_SECRET": tls_emu.client_secret,
        "AZURE_AUTHORITY_HOST": tls_emu.authority,
        "SSL_CERT_FILE": str(tls_emu.ca_path),
    }
    proc = _batch(tls_emu, src, dst, **env)
    assert proc.returncode == 0, proc.stderr
    out = _lines(dst)
    assert sorted(line["custom_id"] for line in out) == [f"q{i}" for i in range(6)]
    assert all(line.get("error") is None for line in out), out
    assert "could not reach the token endpoint" in proc.stderr  # the one warning
    stats = tls_emu.stats()
    assert stats["runs_created"] == 6
    assert stats["requests"][f"POST {TOKEN_ROUTE}"]["0"] == 6  # the six dropped attempts
