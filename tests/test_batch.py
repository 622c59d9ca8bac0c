"""The batch engine (`agentrun._batch`) in process: parsing, resume state, writing, running."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun._batch import (
    BatchConfig,
    BatchItem,
    BatchRunner,
    DuplicateIdsError,
    InputError,
    OutputWriter,
    parse_line,
    read_output,
)
from agentrun._client import AsyncClient
from agentrun.emulator import Emulator, EmulatorSettings, Timing

MODEL = "azure_ai/agents/asst_abc123"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        timing=Timing(queue_delay=0.005, run_duration=0.02, delta_interval=0.001)
    )
    with Emulator(settings).in_thread() as e:
        yield e


def _write(path: pathlib.Path, lines: list[Any]) -> None:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )


def _read(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_parse_chat_line_and_batch_api_line() -> None:
    """A plain line (prompt, bare agent id) and an OpenAI Batch API line both become items;
    custom_id is merged into the run metadata; a stream flag is dropped."""
    item = parse_line(
        json.dumps({"custom_id": "a", "prompt": "hi", "model": "asst_x", "temperature": 0.2}), 1
    )
    assert isinstance(item, BatchItem)
    assert item.model == "azure_ai/agents/asst_x"
    assert item.messages == [{"role": "user", "content": "hi"}]
    assert item.metadata == {"custom_id": "a"}
    assert item.params == {"temperature": 0.2}
    api = parse_line(
        json.dumps(
            {
                "custom_id": "b",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                    "thread_id": "thread_1",
                    "metadata": {"team": "t"},
                },
            }
        ),
        2,
        MODEL,
    )
    assert isinstance(api, BatchItem)
    assert api.model == MODEL and api.thread_id == "thread_1"
    assert api.metadata == {"team": "t", "custom_id": "b"}
    assert api.params == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{oops", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"prompt": "x"}', "custom_id"),
        ('{"custom_id": "a"}', "messages"),
        ('{"custom_id": "a", "prompt": "x", "messages": []}', "not both"),
        ('{"custom_id": "a", "messages": "x"}', "non-empty list"),
        ('{"custom_id": "a", "prompt": "x", "model": "gpt/4"}', "not an agent"),
        ('{"custom_id": "a", "url": "/v1/embeddings", "body": {}}', "not supported"),
        ('{"custom_id": "' + "x" * 513 + '", "prompt": "x"}', "512"),
    ],
)
def test_malformed_lines_say_why_with_their_line_number(text: str, needle: str) -> None:
    """Each malformed line becomes an InputError naming its line and the problem."""
    err = parse_line(text, 7, MODEL)
    assert isinstance(err, InputError)
    assert err.line == 7
    assert err.message.startswith("line 7: ")
    assert needle in err.message


def test_no_model_anywhere_is_a_line_error() -> None:
    """Without a model on the line or a default, the line is an error that names the flag."""
    err = parse_line('{"custom_id": "a", "prompt": "x"}', 1, None)
    assert isinstance(err, InputError) and "--agent" in err.message


def test_read_output_resume_state_and_torn_tail(tmp_path: pathlib.Path) -> None:
    """Succeeded and failed custom_ids are told apart (a later success wins), malformed lines
    without a custom_id are keyed by line number, and a torn last line is cut off."""
    out = tmp_path / "out.jsonl"
    ok = {"custom_id": "a", "response": {"status_code": 200}, "error": None}
    bad = {"custom_id": "b", "response": None, "error": {"code": "server_error"}}
    retried = {"custom_id": "b", "response": {"status_code": 200}, "error": None}
    failed = {"custom_id": "c", "response": None, "error": {"code": "x"}}
    malformed = {"custom_id": None, "line": 9, "response": None, "error": {"code": "y"}}
    text = "".join(json.dumps(x) + "\n" for x in (ok, bad, retried, failed, malformed))
    out.write_bytes(text.encode() + b'{"custom_id": "d", "resp')
    state = read_output(out)
    assert state.succeeded == {"a", "b"}
    assert state.failed == {"c"}
    assert state.failed_lines == {9}
    assert state.torn_bytes > 0
    assert out.read_bytes() == text.encode()


def test_writer_appends_whole_lines_and_syncs(tmp_path: pathlib.Path) -> None:
    """The writer appends one JSON line per write and leaves nothing unsynced on close."""
    path = tmp_path / "o.jsonl"
    path.write_text('{"x": 0}\n')
    with OutputWriter(path, sync_interval=3600, sync_lines=2) as w:
        w.write({"x": 1})
        w.write({"x": "é"})
        assert w._unsynced == 0  # synced after 2 lines
        w.write({"x": 3})
    assert [json.loads(x)["x"] for x in path.read_text("utf-8").splitlines()] == [0, 1, "é", 3]


def test_duplicates_are_refused_before_anything_runs(tmp_path: pathlib.Path) -> None:
    """prepare() names every duplicated custom_id with its lines and writes nothing."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"custom_id": c, "prompt": "x"} for c in ("a", "b", "a", "c", "b", "a")])
    runner = BatchRunner(BatchConfig(src, dst, MODEL))
    with pytest.raises(DuplicateIdsError) as info:
        runner.prepare()
    assert info.value.duplicates == {"a": [1, 3, 6], "b": [2, 5]}
    assert "'a' (lines 1, 3, 6)" in str(info.value)
    assert not dst.exists()


@pytest.mark.anyio
async def test_run_writes_one_line_per_item_with_metadata_and_timings(
    emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """Every item gets one output line in the Batch output shape with thread/run ids and
    per-state timings; each run carries its custom_id in its metadata; failures are lines
    too, counted by type; a rerun skips everything; --retry-failed reruns only failures."""
    emu.reset()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines: list[Any] = [{"custom_id": f"c{i}", "prompt": f"What is {i} + 1?"} for i in range(40)]
    lines += [{"custom_id": "bad", "prompt": "[emulator:fail=server_error] x"}, "{nope"]
    _write(src, lines)
    config = BatchConfig(src, dst, MODEL, concurrency=8)
    runner = BatchRunner(config)
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        summary = await runner.run(client)
    assert (summary.completed, summary.failed, summary.total) == (40, 2, 42)
    assert summary.failures == {
        "RunFailedError: server_error": 1,
        "InputError: invalid_input_line": 1,
    }
    assert summary.requests_per_run == 1.0 and summary.token_requests == 1
    assert summary.total_tokens > 0
    assert {"run_queued", "in_progress", "total"} <= set(summary.state_times)
    out = _read(dst)
    assert len(out) == 42
    by_id = {o["custom_id"]: o for o in out}
    c3 = by_id["c3"]
    assert c3["response"]["status_code"] == 200 and c3["error"] is None
    assert c3["response"]["request_id"]  # the service's id for the request that ran it
    assert (
        c3["response"]["body"]["choices"][0]["message"]["content"] == "3 + 1 = 4. The answer is 4."
    )
    assert c3["id"].startswith("batch_req_")
    assert c3["thread_id"].startswith("thread_") and c3["run_id"].startswith("run_")
    assert c3["timings"]["total"] >= c3["timings"]["in_progress"] > 0
    assert by_id["bad"]["error"]["code"] == "server_error"
    assert by_id[None]["error"]["message"].startswith("line 42: ")
    runs = emu.runs()
    assert sorted(r["metadata"]["custom_id"] for r in runs) == sorted(
        [f"c{i}" for i in range(40)] + ["bad"]
    )

    again = BatchRunner(config)
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        s2 = await again.run(client)
    assert (s2.ran, s2.skipped_ok, s2.skipped_failed, s2.ok) == (0, 40, 2, False)

    retry = BatchRunner(BatchConfig(src, dst, MODEL, retry_failed=True))
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
        s3 = await retry.run(client)
    assert (s3.ran, s3.skipped_ok) == (2, 40)
    assert len(emu.runs()) == 42  # only "bad" ran again


def test_live_view_puts_bar_and_counts_on_their_own_lines() -> None:
    """The live view renders a header, a bar line, then the counts table (no run-together)."""
    from rich.console import Console

    from agentrun._batch import BatchProgress
    from agentrun._cli_batch import render_progress

    console = Console(width=110, force_terminal=False, color_system=None)
    progress = BatchProgress(total=10, to_run=10, started=6, completed=4, failed=1)
    with console.capture() as capture:
        console.print(render_progress(progress))
    lines = capture.get().splitlines()
    assert lines[0].startswith("agentrun batch 5/10")
    assert set(lines[1].strip()) <= {"━", "╺", "╸"}
    assert lines[2].split() == ["queued", "in", "progress", "completed", "failed", "rate", "ETA"]
    assert lines[3].split()[:4] == ["4", "1", "4", "1"]


@pytest.mark.anyio
async def test_retry_failed_follows_a_run_that_may_still_finish(tmp_path: pathlib.Path) -> None:
    """An item whose failed line names a run that had not ended (a lost connection) is not
    run again by `retry_failed` while that run may finish: its run is followed to its reply
    (same run id, no new run). An item whose recorded run ended without a reply runs again."""
    timing = Timing(queue_delay=0.005, run_duration=1.0, delta_interval=0.001)
    async with Emulator(EmulatorSettings(timing=timing)) as emu:
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            # Runs an earlier attempt started: "a" still running, "b" cancelled since.
            still = await client._transport.request_json(
                "POST", "threads/runs", json=_thread_and_run("What is 7 * 6?")
            )
            gone = await client._transport.request_json(
                "POST", "threads/runs", json=_thread_and_run("What is 1 + 1?")
            )
            await client._transport.request_json(
                "POST", f"threads/{gone['thread_id']}/runs/{gone['id']}/cancel"
            )
            src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
            _write(
                src,
                [
                    {"custom_id": "a", "prompt": "What is 7 * 6?"},
                    {"custom_id": "b", "prompt": "What is 1 + 1?"},
                ],
            )
            _write(
                dst,
                [
                    _lost_line("a", 1, still["thread_id"], still["id"]),
                    _lost_line("b", 2, gone["thread_id"], gone["id"]),
                ],
            )
            runner = BatchRunner(BatchConfig(src, dst, MODEL, retry_failed=True))
            summary = await runner.run(client)
        assert (summary.ran, summary.completed) == (2, 2)
        lines = {x["custom_id"]: x for x in _read(dst)[2:]}
        assert lines["a"]["error"] is None and lines["a"]["run_id"] == still["id"]
        assert "42" in lines["a"]["response"]["body"]["choices"][0]["message"]["content"]
        assert lines["b"]["error"] is None and lines["b"]["run_id"] != gone["id"]
        assert len(emu.runs()) == 3  # the two earlier runs, and one new run for "b"


def _thread_and_run(prompt: str) -> dict[str, Any]:
    return {
        "assistant_id": "asst_abc123",
        "thread": {"messages": [{"role": "user", "content": prompt}]},
    }


def _lost_line(custom_id: str, line: int, thread_id: str, run_id: str) -> dict[str, Any]:
    """An output line as a failed attempt writes it when the connection was lost."""
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "connection_error", "message": "lost", "type": "APIConnectionError"},
        "thread_id": thread_id,
        "run_id": run_id,
        "line": line,
        "timings": {},
        "requests": None,
    }
