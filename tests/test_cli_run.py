"""`agentrun run` as a real subprocess against an emulator: streaming, --json, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from agentrun.emulator import Emulator, EmulatorSettings, Timing


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.08)
    )
    with Emulator(settings).in_thread() as e:
        yield e


def _env(emu: Emulator | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AZURE_") and k not in ("PYTHONWARNINGS",)
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
        _cmd(*args), capture_output=True, text=True, env=_env(emu, **env), timeout=60
    )


def test_streams_reply_incrementally_and_reports_ids(emu: Emulator) -> None:
    """The reply reaches stdout word by word while the run is still going; thread id, run id
    and usage go to stderr only, and the exit code is 0."""
    proc = subprocess.Popen(
        _cmd("asst_abc123", "Explain machine learning in simple terms"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(emu),
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.read1(1024)  # type: ignore[attr-defined]
        assert first, "no output before the process ended"
        assert proc.poll() is None, "the whole reply came only at the end"
        rest = proc.stdout.read()
        err = proc.stderr.read().decode()
        assert proc.wait(30) == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    text = (first + rest).decode()
    assert text.startswith('You asked: "Explain machine learning')
    assert "thread_" not in text
    assert "thread: thread_" in err and "run: run_" in err and "usage: " in err


def test_no_stream_json_and_thread_continuation(emu: Emulator) -> None:
    """--json prints the whole chat completion; --thread continues that thread (the emulator
    remembers the name); --no-stream prints just the content."""
    first = _run(emu, "azure_ai/agents/asst_abc123", "My name is Alice", "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["object"] == "chat.completion"
    assert data["thread_id"].startswith("thread_")
    assert data["usage"]["total_tokens"] > 0
    second = _run(
        emu, "asst_abc123", "What's my name?", "--thread", data["thread_id"], "--no-stream"
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "Your name is Alice."
    concise = _run(
        emu, "asst_abc123", "Analyze this data", "--instructions", "Be concise", "--no-stream"
    )
    assert concise.stdout.strip() == "Noted: Analyze this data."


def test_emulator_flag_runs_without_any_configuration() -> None:
    """--emulator needs no endpoint or credentials in the environment."""
    proc = _run(None, "asst_abc123", "Hello", "--emulator", "--no-stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Hello! How can I help you today?"


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (("asst_abc123", "[emulator:fail=server_error] hi"), {}, 1, "ended failed: server_error"),
        (("azure_ai/other/x", "hi"), {}, 2, "azure_ai/agents/"),
        (("asst_abc123", "   "), {}, 2, "prompt is empty"),
        (("asst_abc123", "hi", "--api-key", "wrong"), {}, 3, "authentication failed"),
        (("asst_abc123", "hi"), {"AZURE_AI_API_BASE": ""}, 3, "--api-base"),
        (("asst_nope", "hi"), {}, 3, "check the agent id"),
        (("asst_abc123", "[emulator:sleep=5] hi", "--timeout", "0.5"), {}, 1, "--timeout"),
    ],
)
def test_exit_codes_and_one_line_messages(
    emu: Emulator, args: tuple[str, ...], env: dict[str, str], code: int, needle: str
) -> None:
    """Failed run -> 1, usage error -> 2, auth/config error -> 3: one line on stderr that says
    what to do, never a traceback."""
    proc = _run(emu, *args, **env)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("agentrun run:")]
    assert len(lines) == 1, proc.stderr


def test_usage_error_from_argparse(emu: Emulator) -> None:
    """A missing PROMPT is a usage error (exit 2)."""
    proc = subprocess.run(
        [sys.executable, "-m", "agentrun.cli", "run", "asst_abc123"],
        capture_output=True,
        text=True,
        env=_env(emu),
        timeout=30,
    )
    assert proc.returncode == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_cancels_the_remote_run_and_exits_130(emu: Emulator, signum: int) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (timeout, systemd, Kubernetes) while the run is going
    cancels it on the service and exits 130."""
    emu.reset()
    proc = subprocess.Popen(
        _cmd("asst_abc123", "[emulator:sleep=30] wait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(emu),
    )
    try:
        deadline = time.monotonic() + 20
        while emu.stats()["active_runs"] < 1:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while emu.stats()["active_runs"]:
        assert time.monotonic() < deadline, emu.stats()
        time.sleep(0.05)
    assert [r["status"] for r in emu.runs()] == ["cancelled"]
