"""`agentrun batch` as a real subprocess against an emulator: bad input, resume after kill -9,
Ctrl-C cancelling remote runs, --retry-failed, the summary."""

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

from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.01, run_duration=0.05, delta_interval=0.002)
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


def _cmd(src: pathlib.Path, dst: pathlib.Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentrun.cli",
        "batch",
        str(src),
        "-o",
        str(dst),
        "--agent",
        "asst_abc123",
        *args,
    ]


def _batch(
    emu: Emulator, src: pathlib.Path, dst: pathlib.Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(src, dst, *args), capture_output=True, text=True, env=_env(emu), timeout=90
    )


def _write(path: pathlib.Path, lines: list[Any]) -> None:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )


def _lines(path: pathlib.Path) -> list[dict[str, Any]]:
    """The output's lines; every line must be whole and parse."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "a partial line was written"
    return [json.loads(x) for x in data.splitlines()]


def _complete_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(x) for x in data.split(b"\n")[:-1] if x.strip()]


def test_malformed_lines_become_error_lines_and_the_summary_counts_them(
    emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """Malformed lines get an error line with their line number (no crash), an OpenAI Batch
    API line runs, the exit code is 1 because items failed, and the summary names the
    failure types, p50/p95 per state, requests per run and tokens."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(
        src,
        [
            {"custom_id": "a", "prompt": "Hello"},
            "{broken json",
            {"custom_id": "b"},
            "",
            {
                "custom_id": "c",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "azure_ai/agents/asst_def456",
                    "messages": [{"role": "user", "content": "What is 25 * 4?"}],
                },
            },
        ],
    )
    proc = _batch(emu, src, dst)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    out = _lines(dst)
    assert len(out) == 4
    errors = {o["line"]: o["error"]["message"] for o in out if o["error"]}
    assert set(errors) == {2, 3}
    assert errors[2].startswith("line 2: not valid JSON")
    assert "needs messages" in errors[3]
    c = next(o for o in out if o["custom_id"] == "c")
    assert "100" in c["response"]["body"]["choices"][0]["message"]["content"]
    assert "InputError: invalid_input_line: 2" in proc.stdout
    assert "p50 / p95" in proc.stdout and "in_progress" in proc.stdout
    assert "per run 1.00" in proc.stdout and "tokens used:" in proc.stdout
    assert "--retry-failed" in proc.stderr


def test_duplicate_custom_ids_refused_before_anything_runs(
    emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """Duplicate custom_ids: exit 2, naming them and their lines; no run, no output file."""
    emu.reset()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"custom_id": x, "prompt": "hi"} for x in ("x", "y", "x", "z", "y")])
    proc = _batch(emu, src, dst)
    assert proc.returncode == 2
    assert "'x' (lines 1, 3)" in proc.stderr and "'y' (lines 2, 5)" in proc.stderr
    assert not dst.exists()
    assert emu.stats()["runs_created"] == 0


def test_resume_after_kill_9_loses_nothing_and_repeats_no_finished_item(
    emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """SIGKILL mid-batch, rerun: every item ends with exactly one success line, and no item
    that had its line at the kill ran again (the emulator's run list, by custom_id)."""
    emu.reset()
    n = 80
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"custom_id": f"k{i}", "prompt": f"[emulator:sleep=0.3] {i}"} for i in range(n)])
    proc = subprocess.Popen(
        _cmd(src, dst, "--concurrency", "8"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(emu),
    )
    try:
        deadline = time.monotonic() + 30
        while not dst.exists() or len(_complete_lines(dst)) < 20:
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
    assert 20 <= len(done_before) < n
    # a crash can leave a torn line: simulate the worst case
    with open(dst, "ab") as f:
        f.write(b'{"id":"batch_req_torn","custom_id":"k79","resp')

    rerun = _batch(emu, src, dst, "--concurrency", "8")
    assert rerun.returncode == 0, rerun.stderr
    assert "torn last line" in rerun.stderr
    out = _lines(dst)
    per_id = collections.Counter(o["custom_id"] for o in out)
    assert set(per_id) == {f"k{i}" for i in range(n)}
    assert set(per_id.values()) == {1}
    assert all(o["error"] is None and o["response"]["status_code"] == 200 for o in out)
    runs_per_id = collections.Counter(r["metadata"]["custom_id"] for r in emu.runs())
    assert all(runs_per_id[cid] == 1 for cid in done_before), runs_per_id
    assert set(runs_per_id) == {f"k{i}" for i in range(n)}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_cancels_runs_in_flight_and_exits_130(
    emu: Emulator, tmp_path: pathlib.Path, signum: int
) -> None:
    """SIGINT or SIGTERM: stops launching, cancels every run in flight on the service, leaves
    only whole lines, exits 130; a rerun then finishes the rest."""
    emu.reset()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    items: list[Any] = [{"custom_id": f"q{i}", "prompt": f"quick {i}"} for i in range(3)]
    items += [{"custom_id": f"s{i}", "prompt": f"[emulator:sleep=30] {i}"} for i in range(10)]
    _write(src, items)
    proc = subprocess.Popen(
        _cmd(src, dst, "--concurrency", "5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(emu),
    )
    try:
        deadline = time.monotonic() + 30
        while emu.stats()["active_runs"] < 5 or len(_complete_lines(dst)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, emu.stats()
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    deadline = time.monotonic() + 5  # "cancelling" lasts the emulator's cancel_delay
    while emu.stats()["active_runs"]:
        assert time.monotonic() < deadline, emu.stats()
        time.sleep(0.05)
    statuses = collections.Counter(r["status"] for r in emu.runs())
    assert statuses == {"completed": 3, "cancelled": 5}, statuses
    out = _lines(dst)
    assert sorted(o["custom_id"] for o in out) == ["q0", "q1", "q2"]
    assert "interrupted" in stdout


def test_retry_failed_reruns_only_failed_items(emu: Emulator, tmp_path: pathlib.Path) -> None:
    """A failed item makes the exit code 1; a plain rerun does not run it again (still 1);
    --retry-failed runs just that item, and with it succeeding the exit code is 0."""
    emu.reset()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"custom_id": f"r{i}", "prompt": f"hi {i}"} for i in range(5)])
    emu.inject(FaultRule(route="POST /threads/runs", kind="run_failed", code="server_error"))
    first = _batch(emu, src, dst, "--concurrency", "1")
    assert first.returncode == 1, first.stderr
    assert "RunFailedError: server_error: 1" in first.stdout
    again = _batch(emu, src, dst)
    assert again.returncode == 1
    assert len(emu.runs()) == 5
    retry = _batch(emu, src, dst, "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert len(emu.runs()) == 6
    out = _lines(dst)
    assert len(out) == 6
    assert sum(o["error"] is None for o in out) == 5


def test_usage_errors(emu: Emulator, tmp_path: pathlib.Path) -> None:
    """A missing input file, a bad --concurrency and a bad --agent exit 2 with one line."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    missing = _batch(emu, src, dst)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    _write(src, [{"custom_id": "a", "prompt": "x"}])
    conc = _batch(emu, src, dst, "--concurrency", "0")
    assert conc.returncode == 2 and "--concurrency" in conc.stderr
    same = _batch(emu, src, src)
    assert same.returncode == 2 and "must not be the input" in same.stderr
