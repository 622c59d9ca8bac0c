"""`agentrun run` at its edges, as a real subprocess: a closed pipe, certificate and token
endpoint failures, plain-http endpoints, `--emulator` with `--thread`, the waiting note."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agentrun.emulator import Emulator, EmulatorSettings, Timing

SLOW = Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.05)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(timing=SLOW)).in_thread() as e:
        yield e


@pytest.fixture(scope="module")
def tls_emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(timing=SLOW), tls=True).in_thread() as e:
        yield e


def _env(emu: Emulator | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "AGENTRUN_")) and k != "PYTHONWARNINGS"
    }
    env.update(PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", PYTHONWARNINGS="error")
    if emu is not None:
        env.update(AZURE_AI_API_BASE=emu.endpoint, AZURE_AD_TOKEN=emu.api_key)
    env.update(extra)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentrun.cli", "run", *args]


def _run(emu: Emulator | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(*args), capture_output=True, text=True, env=_env(emu, **env), timeout=90
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_closed_pipe_exits_quietly_and_cancels_the_run(emu: Emulator) -> None:
    """`agentrun run ... | head -c 10`: once the reader is gone, the command exits 141 (as
    `yes | head` does) with no traceback and no error line, and the run is cancelled on the
    service instead of running on."""
    emu.reset()
    proc = subprocess.Popen(
        _cmd("asst_abc123", "Write a long essay about rivers"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(emu),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away mid-reply
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=60)
    assert len(first) == 10
    assert code == 141, err
    assert "Traceback" not in err
    assert "BrokenPipe" not in err and "error" not in err.lower()
    deadline = time.monotonic() + 10
    while emu.runs()[-1]["status"] not in ("cancelled", "cancelling"):
        assert time.monotonic() < deadline, emu.runs()[-1]
        time.sleep(0.05)


def test_untrusted_service_certificate_exits_3(tls_emu: Emulator) -> None:
    """An endpoint whose TLS certificate is not trusted is a configuration problem: exit 3
    with one line naming the certificate failure (not exit 1 'cannot reach')."""
    proc = _run(tls_emu, "asst_abc123", "hi")
    assert proc.returncode == 3, proc.stderr
    assert "TLS certificate verification failed for the service" in proc.stderr
    assert "Traceback" not in proc.stderr
    trusted = _run(tls_emu, "asst_abc123", "hi", "--no-stream", SSL_CERT_FILE=str(tls_emu.ca_path))
    assert trusted.returncode == 0, trusted.stderr


def test_untrusted_token_endpoint_certificate_exits_3(tls_emu: Emulator) -> None:
    """A service principal whose token endpoint has an untrusted certificate: exit 3, and the
    message names the token endpoint."""
    env = {
        "AZURE_AD_TOKEN": "",
        "AZURE_TENANT_ID": tls_emu.tenant_id,
        "AZURE_CLIENT_ID": tls_emu.client_id,
        "AZURE_CLIENT_SECRET": tls_emu.client_secret,
        "AZURE_AUTHORITY_HOST": tls_emu.authority,
    }
    proc = _run(tls_emu, "asst_abc123", "hi", **env)
    assert proc.returncode == 3, proc.stderr
    assert "for the token endpoint" in proc.stderr
    assert "authentication failed" not in proc.stderr


def test_unreachable_token_endpoint_is_a_connection_failure(emu: Emulator) -> None:
    """A token endpoint nobody listens on is 'cannot reach the token endpoint', exit 1 (try
    again later), not an authentication failure (exit 3)."""
    env = {
        "AZURE_AD_TOKEN": "",
        "AZURE_TENANT_ID": "t",
        "AZURE_CLIENT_ID": "c",
        "AZURE_CLIENT_SECRET": "s",
        "AZURE_AUTHORITY_HOST": f"https://127.0.0.1:{_free_port()}",
    }
    proc = _run(emu, "asst_abc123", "hi", **env)
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the token endpoint" in proc.stderr
    assert "authentication failed" not in proc.stderr
    assert "s3cret" not in proc.stderr


def test_plain_http_endpoint_off_loopback_refused_unless_allowed(emu: Emulator) -> None:
    """--api-base http://<not loopback> is refused with exit 3 (the token would travel in
    clear text); --allow-insecure-http lets the command try it (it then fails to connect)."""
    remote = "http://agents.example.invalid/api/projects/p"
    proc = _run(emu, "asst_abc123", "hi", "--api-base", remote)
    assert proc.returncode == 3, proc.stderr
    assert "clear text" in proc.stderr
    allowed = _run(emu, "asst_abc123", "hi", "--api-base", remote, "--allow-insecure-http")
    assert allowed.returncode == 1, allowed.stderr
    assert "cannot reach the service" in allowed.stderr


def test_emulator_with_thread_is_explained() -> None:
    """--emulator with --thread: exit 2 with a line explaining that each --emulator command
    starts a fresh emulator, and how to keep one running; a plain --emulator run says the
    same instead of suggesting --thread."""
    proc = _run(None, "asst_abc123", "hi", "--emulator", "--thread", "thread_abc")
    assert proc.returncode == 2, proc.stderr
    assert "fresh emulator" in proc.stderr
    assert "agentrun emulator" in proc.stderr
    plain = _run(None, "asst_abc123", "Hello", "--emulator", "--no-stream")
    assert plain.returncode == 0, plain.stderr
    assert "--thread" not in plain.stderr
    assert "agentrun emulator" in plain.stderr


def test_waiting_note_on_a_terminal_only(emu: Emulator) -> None:
    """Before the first token, stderr on a terminal shows 'waiting for the reply', erased
    once text arrives; stdout never carries it, nor does a non-terminal stderr."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        _cmd("asst_abc123", "[emulator:sleep=1.5] Hello"),
        stdout=subprocess.PIPE,
        stderr=slave,
        env=_env(emu),
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert b"waiting for the reply" in seen
    assert b"\r\x1b[K" in seen  # erased before the reply
    assert "waiting" not in out
    assert "Hello! How can I help you today?" in out
    piped = _run(emu, "asst_abc123", "[emulator:sleep=1.5] Hello")
    assert piped.returncode == 0
    assert "waiting" not in piped.stderr + piped.stdout
