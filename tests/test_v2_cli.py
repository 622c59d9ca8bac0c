"""`agentrun batch` and `agentrun run` with Foundry Agents v2 agents, as real subprocesses
against an emulator: a batch of 2,000 v2 items resumes after kill -9 like classic (no item lost,
no finished item run again), batch output carries the conversation as thread_id, and the run
command continues a conversation."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.emulator import Emulator, EmulatorSettings, Timing


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.0005)
    )
    with Emulator(settings).in_thread() as e:
        yield e


def _env(emu: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONWARNINGS="error",
        AZURE_AI_API_BASE=emu.endpoint,
        AZURE_AD_TOKEN=emu.api_key,
    )
    return env


def _batch_cmd(src: pathlib.Path, dst: pathlib.Path, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "agentrun.cli", "batch", str(src), "-o", str(dst)]
    return [*cmd, "--agent", "general-assistant", *args]


def _write(path: pathlib.Path, lines: list[Any]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def _lines(path: pathlib.Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "a partial line was written"
    return [json.loads(x) for x in data.splitlines()]


def _complete_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(x) for x in data.split(b"\n")[:-1] if x.strip()]


def test_v2_batch_of_2000_resumes_after_kill_9(emu: Emulator, tmp_path: pathlib.Path) -> None:
    """SIGKILL mid-batch of 2,000 v2 items, rerun: every item ends with exactly one success
    line whose thread_id is a conversation, and no item that had its line at the kill ran
    again (the emulator's responses, by custom_id metadata); the first run, with more in flight
    than its pool holds, ran in background mode, the rerun streamed."""
    emu.reset()
    n = 2000
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"custom_id": f"v{i}", "prompt": f"What is {i} + 1?"} for i in range(n)])
    # More in flight (64) than the pool holds (32): `auto` polls, in background mode; the
    # rerun below (pool of 100) fits and streams.
    proc = subprocess.Popen(
        _batch_cmd(src, dst, "--concurrency", "64", "--connections", "32"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(emu),
    )
    try:
        deadline = time.monotonic() + 120
        while not dst.exists() or len(_complete_lines(dst)) < 200:
            assert proc.poll() is None, "the batch ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done_before = {o["custom_id"] for o in _complete_lines(dst)}
    assert 200 <= len(done_before) < n
    rerun = subprocess.run(
        _batch_cmd(src, dst, "--concurrency", "64"),
        capture_output=True,
        text=True,
        env=_env(emu),
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    out = _lines(dst)
    per_id = collections.Counter(o["custom_id"] for o in out)
    assert set(per_id) == {f"v{i}" for i in range(n)}
    assert set(per_id.values()) == {1}
    assert all(o["error"] is None and o["response"]["status_code"] == 200 for o in out)
    assert all(o["thread_id"].startswith("conv_") for o in out)
    some = next(o for o in out if o["custom_id"] == "v41")
    assert "42" in some["response"]["body"]["choices"][0]["message"]["content"]
    listed = emu.responses()
    # `auto` streams while everything in flight fits the pool, else polls in background mode.
    assert {r["background"] for r in listed} == {True, False}
    assert all(r["stream"] != r["background"] for r in listed)
    responses_per_id = collections.Counter(r["metadata"]["custom_id"] for r in listed)
    assert all(responses_per_id[cid] == 1 for cid in done_before)
    assert set(responses_per_id) == {f"v{i}" for i in range(n)}
    assert emu.stats()["runs_created"] == 0 and emu.stats()["active_responses"] == 0


def test_run_command_continues_a_v2_conversation(emu: Emulator) -> None:
    """`agentrun run NAME PROMPT` talks to a v2 agent and `--thread` continues its
    conversation."""
    emu.reset()
    base = [sys.executable, "-m", "agentrun.cli", "run", "--json"]
    first = subprocess.run(
        [*base, "azure_ai/agents/general-assistant", "My name is Ada."],
        capture_output=True,
        text=True,
        env=_env(emu),
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    thread = json.loads(first.stdout)["thread_id"]
    assert thread.startswith("conv_")
    second = subprocess.run(
        [*base, "general-assistant:1", "What is my name?", "--thread", thread],
        capture_output=True,
        text=True,
        env=_env(emu),
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    assert "Ada" in json.loads(second.stdout)["choices"][0]["message"]["content"]
