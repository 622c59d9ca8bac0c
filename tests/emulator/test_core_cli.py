"""`agentrun emulator` as a subprocess: banner, ready line, serving, clean exit on signals."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.request

import pytest


def _start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "agentrun.cli", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until_ready(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"emulator exited early: {proc.wait(5)} {proc.stderr and proc.stderr.read()}"
        lines.append(line.rstrip("\n"))
        if line.startswith("ready: "):
            return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_ready_serves_and_stops_on_signal(sig: signal.Signals) -> None:
    """The CLI prints endpoint and credentials, then `ready: <endpoint>`, serves the API with
    the --api-key it was given, and exits 0 on SIGTERM or SIGINT."""
    proc = _start("--api-key", "k-123", "--seed", "5", "--run-duration", "0.01")
    try:
        lines = _read_until_ready(proc)
        endpoint = lines[-1].removeprefix("ready: ")
        assert endpoint.startswith("http://127.0.0.1:")
        assert endpoint.endswith("/api/projects/emulator")
        banner = "\n".join(lines)
        for needle in ("k-123", "agentrun-emulator", "emulator-secret", "oauth2/v2.0/token"):
            assert needle in banner
        request = urllib.request.Request(
            endpoint + "/threads?api-version=v1",
            method="POST",
            data=b"",
            headers={"Authorization": "Bearer k-123"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp)["object"] == "thread"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_bad_config_is_a_usage_error(tmp_path: pathlib.Path) -> None:
    """A bad --config file exits 2 with the file, line and key in the message."""
    config = tmp_path / "bad.yaml"
    config.write_text("seed: 1\ntiming:\n  queue_delay: -1\n")
    proc = _start("--config", str(config))
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "bad.yaml:3: timing.queue_delay" in err
